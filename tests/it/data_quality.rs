//! `yujing data-quality` over a generated county whose roster was spoiled in a few
//! cheap ways: the command's counts equal the counts computed here, independently,
//! from the CSV files it was imported from.

use std::collections::{BTreeMap, HashMap};

use chrono::{Months, NaiveDate};

use crate::support::{Env, import_county, output};

/// The day judged.
const TODAY: &str = "2024-09-01";
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
fn expected(county: &std::path::Path) -> BTreeMap<String, Vec<String>> {
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
        let developmental = c[12] == "true";
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
