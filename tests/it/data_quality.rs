//! `yujing data-quality` over a generated county whose roster was spoiled in a few
//! cheap ways: the command's counts equal the counts computed here, independently,
//! from the CSV files it was imported from.

use std::collections::{BTreeMap, HashMap};

use chrono::{Months, NaiveDate};

use crate::support::{Env, import_county, output};

/// The day judged.
pub const TODAY: &str = "2024-09-01";
/// The 2024 national monitoring line of the defaults (the county has no own line).
const LINE: f64 = 8_300.0;

/// Spoils some rows of households.csv in place; every row still imports.
fn spoil(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // The optional column, marked on every fifth monitored household: kept by the
    // store, it spares them the developmental assistance sweep.
    lines[0].push_str(",developmental_assistance");
    let (mut ordinary, mut monitored) = (0, 0);
    let mut marked = 0;
    for (i, line) in lines.iter_mut().enumerate().skip(1) {
        let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
        let mark = cells[5] == "monitored" && i % 5 == 0;
        marked += u32::from(mark);
        cells.push(mark.to_string());
        if i % 97 == 0 {
            // One member more than the member rows.
            let members: u32 = cells[2].parse().unwrap();
            cells[2] = (members + 1).to_string();
        } else if cells[5] == "ordinary" && ordinary < 3 {
            // A risk-elimination date on a household never monitored.
            cells[8] = "2024-01-01".into();
            ordinary += 1;
        } else if cells[5] == "monitored" && cells[8].is_empty() && monitored < 2 {
            // Identified in the future.
            cells[7] = "2025-01-01".into();
            monitored += 1;
        } else if cells[5] == "monitored" && !cells[8].is_empty() && monitored < 4 {
            // Identified after the elimination.
            let eliminated: NaiveDate = cells[8].parse().unwrap();
            cells[7] = eliminated.succ_opt().unwrap().to_string();
            monitored += 1;
        }
        *line = cells.join(",");
    }
    assert_eq!(
        (ordinary, monitored),
        (3, 4),
        "the county has rows to spoil"
    );
    assert!(marked > 0);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The findings computed from the CSV files alone: rule id -> household ids.
pub fn expected(county: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let today: NaiveDate = TODAY.parse().unwrap();
    let mut rows: HashMap<String, (u32, u32)> = HashMap::new();
    let members = std::fs::read_to_string(county.join("members.csv")).unwrap();
    for line in members.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let entry = rows.entry(cells[1].to_string()).or_default();
        entry.0 += 1;
        entry.1 += u32::from(cells[3] == "true");
    }
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let households = std::fs::read_to_string(county.join("households.csv")).unwrap();
    for line in households.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let id = c[0].to_string();
        let members: u32 = c[2].parse().unwrap();
        let declared_labour: u32 = c[3].parse().unwrap();
        let per_capita_fen = (c[4].parse::<f64>().unwrap() / f64::from(members) * 100.0).round();
        let status = c[5];
        let typed = !c[6].is_empty();
        let date = |s: &str| (!s.is_empty()).then(|| s.parse::<NaiveDate>().unwrap());
        let (identified, eliminated) = (date(c[7]), date(c[8]));
        let (safety_net, dibao, tekun) = (c[9] == "true", c[10] == "true", c[11] == "true");
        let developmental = c.get(12).is_some_and(|v| *v == "true");
        let (member_rows, flagged) = rows.get(&id).copied().unwrap_or((0, 0));
        let labour = if member_rows > 0 {
            flagged
        } else {
            declared_labour
        };
        let mut hit = |rule: &str| found.entry(rule.to_string()).or_default().push(id.clone());
        if status == "monitored" {
            match (eliminated, identified) {
                (Some(_), _) => {
                    if per_capita_fen <= (LINE * 1.1 * 100.0).round() {
                        hit("sweep.recheck");
                    }
                }
                (None, identified) => {
                    if identified.is_some_and(|d| d + Months::new(24) <= today) {
                        hit("sweep.long_monitored");
                    }
                    if labour > 0 && !developmental {
                        hit("sweep.developmental_assistance");
                    }
                    if labour == 0 && (dibao || tekun) && !safety_net {
                        hit("sweep.safety_net_candidate");
                    }
                    if labour > 0
                        && identified.is_some_and(|d| d + Months::new(6) <= today)
                        && per_capita_fen > LINE * 100.0
                    {
                        hit("sweep.elimination_ready");
                    }
                }
            }
        }
        if members != member_rows {
            hit("quality.member_count_mismatch");
        }
        if declared_labour != flagged {
            hit("quality.labour_count_mismatch");
        }
        if let (Some(i), Some(e)) = (identified, eliminated)
            && i > e
        {
            hit("quality.dates_out_of_order");
        }
        if identified.is_none() && eliminated.is_some() {
            hit("quality.eliminated_without_identified");
        }
        if eliminated.is_some() && status != "monitored" {
            hit("quality.eliminated_not_monitored");
        }
        if identified.is_some_and(|d| d > today) || eliminated.is_some_and(|d| d > today) {
            hit("quality.date_in_future");
        }
        if status == "monitored" && !typed {
            hit("quality.monitored_without_type");
        }
    }
    found
}

#[tokio::test]
async fn data_quality_counts_equal_a_count_from_the_csv_files() {
    let env = Env::new();
    let (county, _) = env.county(3000, 10, 11);
    spoil(&county.join("households.csv"));
    let app = env.app("dq.db").await;
    import_county(&app, &county).await;
    app.store.close().await;

    let expected = expected(&county);
    for rule in [
        "sweep.long_monitored",
        "sweep.developmental_assistance",
        "sweep.recheck",
        "sweep.elimination_ready",
        "quality.member_count_mismatch",
        "quality.dates_out_of_order",
        "quality.eliminated_not_monitored",
        "quality.date_in_future",
    ] {
        assert!(expected.contains_key(rule), "the county yields no {rule}");
    }

    // The text report's counts by rule.
    let text = output(env.yujing("dq.db").args(["data-quality", "--today", TODAY]));
    let by_rule: BTreeMap<String, usize> = text
        .split("\nby rule\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let rule = words.next().unwrap().to_string();
            (rule, words.next().unwrap().parse().unwrap())
        })
        .collect();
    for (rule, count) in &by_rule {
        assert_eq!(
            *count,
            expected.get(rule).map_or(0, Vec::len),
            "{rule} in:\n{text}"
        );
    }
    assert_eq!(by_rule.len(), 13, "{text}");

    // The NDJSON findings: the same households, rule by rule.
    let ndjson = output(
        env.yujing("dq.db")
            .args(["data-quality", "--today", TODAY, "--json"]),
    );
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut villages: BTreeMap<String, usize> = BTreeMap::new();
    for line in ndjson.lines() {
        let finding: serde_json::Value = serde_json::from_str(line).unwrap();
        listed
            .entry(finding["rule"].as_str().unwrap().to_string())
            .or_default()
            .push(finding["household_id"].as_str().unwrap().to_string());
        *villages
            .entry(finding["region_code"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert!(!finding["reason"].as_str().unwrap().is_empty());
    }
    for ids in listed.values_mut() {
        ids.sort();
    }
    let mut expected_sorted = expected.clone();
    for ids in expected_sorted.values_mut() {
        ids.sort();
    }
    assert_eq!(listed, expected_sorted);

    // The counts by village add up to the findings of each village.
    let by_village: BTreeMap<String, usize> = text
        .split("\nby village\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .map(|line| {
            let (head, counts) = line.split_once(": ").unwrap();
            let village = head.split_whitespace().next().unwrap().to_string();
            let total = counts
                .split(", ")
                .map(|part| part.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
                .sum();
            (village, total)
        })
        .collect();
    assert_eq!(by_village, villages);

    // Judged on a later day, fewer of the dates lie in the future.
    let later =
        output(
            env.yujing("dq.db")
                .args(["data-quality", "--today", "2025-06-01", "--json"]),
        );
    let future = |text: &str| text.matches("\"quality.date_in_future\"").count();
    assert!(future(&later) < future(&ndjson));
}

/// A department's delays counted from the feed files: (events, p50, p90, max, late)
/// in milliseconds, nearest rank.
pub type Delays = (u64, i64, i64, i64, u64);

/// What the department rules must find, counted from the feed files and the roster
/// CSV alone: accepted lines are the well-formed ones (the generator's broken lines
/// carry `BAD-` ids), once per (source, event_id).
#[derive(Debug, Default)]
pub struct ExpectedDepartments {
    /// Per source: (events, p50, p90, max, late), milliseconds, nearest rank.
    pub delays: BTreeMap<String, Delays>,
    /// Per (source, masked person or household not on the roster): events.
    pub unmatched: BTreeMap<(String, String), u64>,
    /// Per (village, source): late events placed in that village.
    pub late_by_village: BTreeMap<(String, String), u64>,
}

/// [`ExpectedDepartments`] for the events of `scope` (`None`: all): an event lies
/// where its person's or household's village is (from the roster), or in its region;
/// unmatched events count for county scopes and above only.
pub fn expected_departments_in(
    county: &std::path::Path,
    feeds: &[std::path::PathBuf],
    late_ms: i64,
    scope: Option<yujing::domain::ids::RegionCode>,
) -> ExpectedDepartments {
    use yujing::domain::ids::{RegionCode, RegionLevel};
    let read = |name: &str| std::fs::read_to_string(county.join(name)).unwrap();
    let villages: HashMap<String, String> = read("households.csv")
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect();
    let persons: HashMap<String, String> = read("members.csv")
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect();
    let within = |place: Option<&str>| match (scope, place) {
        (None, _) => true,
        (Some(scope), Some(code)) => RegionCode::parse(code).unwrap().is_within(scope),
        (Some(scope), None) => scope.level() <= RegionLevel::County,
    };
    let mut seen = std::collections::HashSet::new();
    let mut delays: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut expected = ExpectedDepartments::default();
    for feed in feeds {
        let bytes = std::fs::read(feed).unwrap();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let id = event["event_id"].as_str().unwrap();
            let source = event["source"].as_str().unwrap().to_string();
            if id.starts_with("BAD-") || !seen.insert((source.clone(), id.to_string())) {
                continue;
            }
            let time = |field: &str| {
                chrono::DateTime::parse_from_rfc3339(event[field].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            };
            let delay = time("reported_at") - time("occurred_at");
            // Where the event lies, and the subject when the roster lacks it.
            let (place, missing) = if let Some(person) = event["person_id"].as_str() {
                match persons.get(person) {
                    Some(household) => (villages.get(household).cloned(), None),
                    None => (
                        None,
                        Some(format!("{}********{}", &person[..6], &person[14..])),
                    ),
                }
            } else if let Some(household) = event["household_id"].as_str() {
                match villages.get(household) {
                    Some(village) => (Some(village.clone()), None),
                    None => (None, Some(household.to_string())),
                }
            } else {
                (event["region_code"].as_str().map(str::to_string), None)
            };
            if !within(place.as_deref()) {
                continue;
            }
            delays.entry(source.clone()).or_default().push(delay);
            if let Some(subject) = missing {
                *expected
                    .unmatched
                    .entry((source.clone(), subject))
                    .or_default() += 1;
            }
            if let Some(place) = place
                && delay > late_ms
                && RegionCode::parse(&place).unwrap().level() == RegionLevel::Village
            {
                *expected.late_by_village.entry((place, source)).or_default() += 1;
            }
        }
    }
    expected.delays = delays
        .into_iter()
        .map(|(source, mut values)| {
            values.sort_unstable();
            let n = values.len();
            // Nearest rank: the ceil(p·n/100)-th value.
            let rank = |p: usize| values[(p * n).div_ceil(100) - 1];
            let late = values.iter().filter(|d| **d > late_ms).count() as u64;
            let figures = (n as u64, rank(50), rank(90), values[n - 1], late);
            (source, figures)
        })
        .collect();
    expected
}

/// A resident ID with its GB 11643 check digit: 17 digits in, 18 characters out.
fn resident_id(digits17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = digits17
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{digits17}{check}")
}

/// Appends events for persons not on the roster: one person with two medical
/// settlements and an unemployment (two departments: two findings), another with one
/// settlement reported ten days late. Copies of each feed's first line, re-addressed.
fn plant_unmatched(county: &std::path::Path) {
    let first = resident_id("11010119800101123");
    let second = resident_id("52242519900202456");
    let plant = |feed: &str, planted: &[(&str, &str, i64)]| {
        let path = county.join("feeds").join(feed);
        let text = std::fs::read_to_string(&path).unwrap();
        let template: serde_json::Value = text
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap();
        let mut lines = text;
        for (event_id, person, late_days) in planted {
            let mut event = template.clone();
            event["event_id"] = (*event_id).into();
            event["person_id"] = (*person).into();
            let occurred =
                chrono::DateTime::parse_from_rfc3339(event["occurred_at"].as_str().unwrap())
                    .unwrap();
            if *late_days > 0 {
                event["reported_at"] = (occurred + chrono::Duration::days(*late_days))
                    .to_rfc3339()
                    .into();
            }
            lines.push_str(&format!("{event}\n"));
        }
        std::fs::write(&path, lines).unwrap();
    };
    plant(
        "medical_insurance.ndjson",
        &[
            ("PLANT-1", &first, 0),
            ("PLANT-2", &first, 0),
            ("PLANT-3", &second, 10),
        ],
    );
    plant("human_resources.ndjson", &[("PLANT-4", &first, 0)]);
}

/// Hours as the report rounds them (two decimals).
pub fn hours(ms: i64) -> f64 {
    ((ms as f64) / 36_000.0).round() / 100.0
}

/// `quality.unmatched_persons` and `quality.late_reporting` over a county's feeds run
/// into the store: the command's findings (NDJSON) and delay table (text) equal the
/// counts made from the feed files and the roster.
async fn department_rules(backend: &str) {
    let env = Env::new();
    let (county, key) = env.county(400, 30, 5);
    plant_unmatched(&county);
    let url = match backend {
        "sqlite" => env.store_url("dq.db"),
        _ => crate::support::fresh_postgres("dq_departments").await,
    };
    let mut settings = env.settings("dq.db");
    settings.store.url = yujing::config::Secret::new(url.clone());
    let app = yujing::app::App::build(settings).await.unwrap();
    import_county(&app, &county).await;
    let feeds = crate::support::feeds(&county, &key);
    let inputs = feeds
        .iter()
        .cloned()
        .map(yujing::pipeline::sources::ndjson::Input::File)
        .collect();
    yujing::commands::run(
        &app,
        inputs,
        tokio_util::sync::CancellationToken::new(),
        false,
    )
    .await
    .unwrap();
    app.store.close().await;

    // The generator reports within three days: a two-day limit makes some late.
    let late_days = 2;
    let ExpectedDepartments {
        delays, unmatched, ..
    } = expected_departments_in(&county, &feeds, late_days * 86_400_000, None);
    assert!(key.unmatched > 0, "the generator plants unmatched events");
    assert!(unmatched.len() >= 4, "{unmatched:?}");
    let planted = |source: &str, masked: &str| unmatched.get(&(source.into(), masked.into()));
    assert_eq!(planted("medical_insurance", "110101********1232"), Some(&2));
    assert_eq!(planted("human_resources", "110101********1232"), Some(&1));
    assert_eq!(planted("medical_insurance", "522425********4561"), Some(&1));
    assert!(delays.values().any(|d| d.4 > 0) && delays.values().any(|d| d.4 < d.0));
    let run = |json: bool| {
        let mut command = env.yujing_at(&url);
        command
            .args(["data-quality", "--today", TODAY])
            .env("YUJING__SWEEPS__LATE_REPORT_DAYS", late_days.to_string());
        if json {
            command.arg("--json");
        }
        output(&mut command)
    };

    let ndjson = run(true);
    let text = run(false);
    for clear in [
        resident_id("11010119800101123"),
        resident_id("52242519900202456"),
    ] {
        assert!(!ndjson.contains(&clear) && !text.contains(&clear));
    }
    let mut found_unmatched = BTreeMap::new();
    let mut found_late = BTreeMap::new();
    for line in ndjson.lines() {
        let finding: serde_json::Value = serde_json::from_str(line).unwrap();
        let source = finding["source"].as_str().map(str::to_string);
        match finding["rule"].as_str().unwrap() {
            "quality.unmatched_persons" => {
                let subject = finding["person_masked"]
                    .as_str()
                    .or(finding["household_id"].as_str())
                    .unwrap()
                    .to_string();
                // Masked only: never the clear ID.
                assert!(
                    subject.len() != 18 || subject.contains("********"),
                    "{line}"
                );
                if let Some(masked) = finding["person_masked"].as_str() {
                    assert_eq!(finding["id_area"].as_str(), Some(&masked[..6]));
                }
                let previous = found_unmatched.insert(
                    (source.unwrap(), subject),
                    finding["events"].as_u64().unwrap(),
                );
                assert!(previous.is_none(), "one finding per department and subject");
            }
            "quality.late_reporting" => {
                found_late.insert(source.unwrap(), finding);
            }
            _ => {}
        }
    }
    assert_eq!(found_unmatched, unmatched);
    let late: BTreeMap<&String, &Delays> = delays.iter().filter(|(_, d)| d.4 > 0).collect();
    assert_eq!(
        found_late.keys().collect::<Vec<_>>(),
        late.keys().copied().collect::<Vec<_>>()
    );
    for (source, (events, p50, p90, max, late)) in &delays {
        let Some(finding) = found_late.get(source) else {
            continue;
        };
        assert_eq!(finding["events"].as_u64(), Some(*events), "{source}");
        assert_eq!(finding["late"].as_u64(), Some(*late), "{source}");
        assert_eq!(finding["limit_days"].as_u64(), Some(late_days as u64));
        assert_eq!(finding["p50_hours"].as_f64(), Some(hours(*p50)), "{source}");
        assert_eq!(finding["p90_hours"].as_f64(), Some(hours(*p90)), "{source}");
        assert_eq!(finding["max_hours"].as_f64(), Some(hours(*max)), "{source}");
        let share = finding["late_share"].as_f64().unwrap();
        assert!((share - *late as f64 / *events as f64).abs() < 1e-12);
    }

    // The text report: every department's delay line, and the unmatched counts.
    let section = text.split("\nby department\n").nth(1).unwrap();
    let section = section.split("\n\n").next().unwrap();
    for (source, (events, p50, p90, max, late)) in &delays {
        let line = section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(source.as_str()))
            .unwrap_or_else(|| panic!("no delay line for {source} in:\n{section}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], events.to_string(), "{line}");
        assert_eq!(words[2], format!("{:.1}", hours(*p50)), "{line}");
        assert_eq!(words[3], format!("{:.1}", hours(*p90)), "{line}");
        assert_eq!(words[4], format!("{:.1}", hours(*max)), "{line}");
        assert_eq!(words[5], late.to_string(), "{line}");
    }
    let subjects = section
        .lines()
        .find(|l| l.trim_start().starts_with("quality.unmatched_persons"))
        .unwrap();
    assert_eq!(
        subjects.split_whitespace().nth(1),
        Some(unmatched.len().to_string().as_str()),
        "{section}"
    );
    let events: u64 = unmatched.values().sum();
    assert!(
        subjects.ends_with(&format!("({events} events)")),
        "{subjects}"
    );
    let late_line = section
        .lines()
        .find(|l| l.trim_start().starts_with("quality.late_reporting"))
        .unwrap();
    assert_eq!(
        late_line.split_whitespace().nth(1),
        Some(late.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_rules_sqlite() {
    department_rules("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_rules_postgres() {
    department_rules("postgres").await;
}

/// The recorded `quality.*` findings by key (rule and subject) from a count of the
/// CSV files: the registry rules' households.
fn quality_keys(county: &std::path::Path) -> std::collections::BTreeSet<String> {
    expected(county)
        .into_iter()
        .filter(|(rule, _)| rule.starts_with("quality."))
        .flat_map(|(rule, ids)| ids.into_iter().map(move |id| format!("{rule}|{id}")))
        .collect()
}

/// `yujing data-quality --record`: a pass opens its consistency findings since the
/// day judged; after the roster is corrected (imported again unspoiled) the next pass
/// resolves exactly the findings the correction removed and keeps the others with
/// their first day; spoiled again, they open anew. The department findings (by
/// department and pseudonym) stay open throughout. On both backends.
async fn recorded_findings(backend: &str) {
    use std::collections::BTreeSet;
    let env = Env::new();
    let (county, key) = env.county(600, 20, 11);
    plant_unmatched(&county);
    let households = county.join("households.csv");
    let original = std::fs::read_to_string(&households).unwrap();
    spoil(&households);
    let spoiled = std::fs::read_to_string(&households).unwrap();
    let url = match backend {
        "sqlite" => env.store_url("dq.db"),
        _ => crate::support::fresh_postgres("dq_recorded").await,
    };
    let mut settings = env.settings("dq.db");
    settings.store.url = yujing::config::Secret::new(url.clone());
    let app = yujing::app::App::build(settings).await.unwrap();
    import_county(&app, &county).await;
    let feeds = crate::support::feeds(&county, &key);
    let inputs = feeds
        .iter()
        .cloned()
        .map(yujing::pipeline::sources::ndjson::Input::File)
        .collect();
    yujing::commands::run(
        &app,
        inputs,
        tokio_util::sync::CancellationToken::new(),
        false,
    )
    .await
    .unwrap();
    let departments = expected_departments_in(&county, &feeds, 2 * 86_400_000, None);
    let late: usize = departments.delays.values().filter(|d| d.4 > 0).count();
    assert!(late > 0);
    let record = |today: &str| {
        let out = env
            .yujing_at(&url)
            .args(["data-quality", "--today", today, "--record", "--json"])
            .env("YUJING__SWEEPS__LATE_REPORT_DAYS", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line = stderr
            .lines()
            .find(|l| l.starts_with("recorded on "))
            .unwrap_or_else(|| panic!("no record line in {stderr}"))
            .to_string();
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        // recorded on YYYY-MM-DD: opened, still open, resolved.
        (numbers[3], numbers[4], numbers[5])
    };
    let recorded = async || {
        let mut by_key = BTreeMap::new();
        for finding in app.store.recorded_findings().await.unwrap() {
            let key = format!("{}|{}", finding.finding.rule, finding.finding.subject);
            by_key.insert(key, finding);
        }
        by_key
    };
    let department_keys = departments.unmatched.len() + late;

    // First pass: everything opens on the day judged.
    let spoiled_keys = quality_keys(&county);
    assert!(spoiled_keys.len() > 5, "{spoiled_keys:?}");
    let (opened, kept, resolved) = record("2024-09-01");
    assert_eq!(
        (opened, kept, resolved),
        ((spoiled_keys.len() + department_keys) as u64, 0, 0)
    );
    let first = recorded().await;
    assert!(first.values().all(|f| f.since.to_string() == "2024-09-01"));
    assert!(first.values().all(|f| f.resolved_on.is_none()));
    let registry: BTreeSet<String> = first
        .keys()
        .filter(|k| !k.starts_with("quality.unmatched") && !k.starts_with("quality.late"))
        .cloned()
        .collect();
    assert_eq!(registry, spoiled_keys);
    for finding in first.values() {
        assert!(!finding.finding.fields.is_empty());
        // Subjects: a household number, a department with a pseudonym, a department.
        assert!(!finding.finding.subject.contains("********"), "{finding:?}");
    }
    let member = first
        .values()
        .find(|f| f.finding.rule == "quality.member_count_mismatch")
        .unwrap();
    assert_eq!(member.finding.fields, ["members"]);

    // The roster corrected: the findings it removed resolve, the others stay open
    // since the first day.
    std::fs::write(&households, &original).unwrap();
    let corrected_keys = quality_keys(&county);
    import_county(&app, &county).await;
    let (opened, kept, resolved) = record("2024-09-10");
    let gone: BTreeSet<&String> = spoiled_keys.difference(&corrected_keys).collect();
    assert!(!gone.is_empty());
    assert_eq!(resolved, gone.len() as u64);
    assert_eq!(
        opened,
        corrected_keys.difference(&spoiled_keys).count() as u64
    );
    assert_eq!(
        kept,
        (corrected_keys.intersection(&spoiled_keys).count() + department_keys) as u64
    );
    let second = recorded().await;
    for (key, finding) in &second {
        if gone.contains(key) {
            assert_eq!(
                finding.resolved_on.map(|d| d.to_string()).as_deref(),
                Some("2024-09-10")
            );
            assert_eq!(finding.since.to_string(), "2024-09-01");
        } else {
            assert_eq!(finding.resolved_on, None, "{key}");
            let since = if first.contains_key(key) {
                "2024-09-01"
            } else {
                "2024-09-10"
            };
            assert_eq!(finding.since.to_string(), since, "{key}");
        }
    }

    // Spoiled again: the resolved findings open anew, since the day they reappear.
    std::fs::write(&households, &spoiled).unwrap();
    import_county(&app, &county).await;
    let (opened, _, resolved) = record("2024-09-20");
    assert_eq!(opened, gone.len() as u64);
    assert_eq!(
        resolved,
        corrected_keys.difference(&spoiled_keys).count() as u64
    );
    let third = recorded().await;
    for key in &gone {
        assert_eq!(third[*key].since.to_string(), "2024-09-20");
        assert_eq!(third[*key].resolved_on, None);
    }
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_findings_sqlite() {
    recorded_findings("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_findings_postgres() {
    recorded_findings("postgres").await;
}
