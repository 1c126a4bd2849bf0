//! The embedded default end to end: generated county -> import -> run -> alerts,
//! tasks and dead letters in SQLite; bad input; kill and resume; stdin; exports.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use yujing::app::App;
use yujing::commands::{self, ExportKind};
use yujing::domain::alert::HouseholdAlert;
use yujing::pipeline::sources::ndjson::Input;
use yujing::schemas::Schemas;

use crate::support::{Env, feeds, import_county, output};

/// What must be equal between two runs over the same input.
type AlertView = (
    String,
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

fn view(alert: &HouseholdAlert) -> AlertView {
    (
        alert.alert_id.clone(),
        alert.household_id.to_string(),
        alert.level.to_string(),
        alert.action.to_string(),
        alert.risk_types.iter().map(|r| r.to_string()).collect(),
        alert
            .rules
            .iter()
            .map(|r| format!("{} {} {}", r.rule_id, r.level, r.reason))
            .collect(),
        alert.evidence.iter().map(|e| e.to_string()).collect(),
    )
}

async fn alerts(app: &App) -> BTreeMap<String, HouseholdAlert> {
    let mut found = BTreeMap::new();
    app.store
        .export_alerts(&mut |alert| {
            found.insert(alert.household_id.to_string(), alert);
            Ok(())
        })
        .await
        .unwrap();
    found
}

async fn run_files(app: &App, files: &[std::path::PathBuf]) -> yujing::pipeline::RunSummary {
    let inputs = files.iter().cloned().map(Input::File).collect();
    commands::run(app, inputs, CancellationToken::new(), false)
        .await
        .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_county_meets_its_answer_key() {
    let env = Env::new();
    let (county, key) = env.county(3000, 120, 7);
    let app = env.app("county.db").await;
    import_county(&app, &county).await;
    let summary = run_files(&app, &feeds(&county, &key)).await;
    assert_eq!(summary.counts.records, key.lines);

    let alerts = alerts(&app).await;
    assert!(
        key.must_alert.len() >= 30,
        "every case planted at least once"
    );
    for case in &key.must_alert {
        let alert = alerts
            .get(&case.household_id)
            .unwrap_or_else(|| panic!("{} ({}) not alerted", case.household_id, case.case));
        assert!(
            alert.level >= case.min_level,
            "{} ({}): {} below {}",
            case.household_id,
            case.case,
            alert.level,
            case.min_level
        );
        assert_eq!(
            alert.action, case.action,
            "{} ({})",
            case.household_id, case.case
        );
    }
    for case in &key.must_not_alert {
        assert!(
            !alerts.contains_key(&case.household_id),
            "decoy {} ({}) alerted: {:?}",
            case.household_id,
            case.case,
            alerts[&case.household_id].rules
        );
    }
    let report = app.store.report().await.unwrap();
    assert_eq!(report.events_processed, key.lines);
    assert_eq!(report.dead_letters, key.bad_lines);
    assert_eq!(report.duplicates, key.duplicates);
    assert_eq!(report.unmatched, key.unmatched);
    assert_eq!(
        report.events_accepted + report.duplicates + report.dead_letters,
        report.events_processed
    );
    // Every alert at or above yellow has a household task; blue ones do not.
    let mut household_tasks = 0;
    let mut campaign_tasks = 0;
    app.store
        .export_tasks(&mut |task| {
            if task.kind == yujing::domain::task::TaskKind::Campaign {
                campaign_tasks += 1;
            } else {
                household_tasks += 1;
            }
            Ok(())
        })
        .await
        .unwrap();
    let tasked = alerts
        .values()
        .filter(|a| a.level >= yujing::domain::alert::Level::Yellow)
        .count();
    assert_eq!(household_tasks, tasked);
    // The planted regional scenarios are signalled, and the severe ones open
    // campaigns for their villages.
    let mut signals = Vec::new();
    app.store
        .export_signals(&mut |signal| {
            signals.push(signal);
            Ok(())
        })
        .await
        .unwrap();
    for scenario in &key.regional {
        assert!(
            signals
                .iter()
                .any(|s| s.region_code.to_string() == scenario.region_code
                    && s.risk_kind == scenario.kind),
            "scenario {} ({} {}) not signalled: {:?}",
            scenario.scenario,
            scenario.region_code,
            scenario.kind,
            signals
                .iter()
                .map(|s| (s.region_code.to_string(), s.risk_kind))
                .collect::<Vec<_>>()
        );
    }
    assert!(campaign_tasks > 0, "severe signals open campaigns");
}

/// A feed of valid lines with a known set of bad ones mixed in.
fn mixed_feed(env: &Env) -> (std::path::PathBuf, usize, Vec<(&'static str, Vec<u8>)>) {
    let valid = |i: usize| {
        format!(
            r#"{{"event_id":"OK-{i}","source":"housing","kind":"housing_safety","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","household_id":"H{i}","payload":{{"rating":"A"}}}}"#
        )
        .into_bytes()
    };
    let person = |id: &str, payload: &str| {
        format!(
            r#"{{"event_id":"BAD-{id}","source":"disabled_persons_federation","kind":"disability_certified","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","person_id":"{id}","payload":{payload}}}"#
        )
        .into_bytes()
    };
    let mut two_mib = br#"{"event_id":"HUGE","note":""#.to_vec();
    two_mib.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    two_mib.extend_from_slice(br#""}"#);
    let mut not_utf8 = br#"{"event_id":"BIN","person_id":"11010519491231002X","x":""#.to_vec();
    not_utf8.extend_from_slice(b"\xff\xfe");
    not_utf8.extend_from_slice(br#""}"#);
    let bad: Vec<(&'static str, Vec<u8>)> = vec![
        ("json.syntax", br#"{"event_id": "BROKEN", "source": "#.to_vec()),
        ("json.not_utf8", not_utf8),
        ("line.too_long", two_mib),
        (
            "schema.type",
            person("11010519491231002X", r#"{"grade":"two","category":"physical"}"#),
        ),
        (
            "id.check_digit",
            person("110105194912310021", r#"{"grade":2,"category":"physical"}"#),
        ),
        (
            "schema.enum",
            br#"{"event_id":"K1","source":"water","kind":"rainfall","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","region_code":"522425000000","payload":{}}"#.to_vec(),
        ),
        (
            "time.reported_in_future",
            br#"{"event_id":"F1","source":"housing","kind":"housing_safety","occurred_at":"2099-05-01T10:00:00+08:00","reported_at":"2099-05-02T09:00:00+08:00","household_id":"H1","payload":{"rating":"C"}}"#.to_vec(),
        ),
    ];
    let path = env.path("mixed.ndjson");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut valid_count = 0;
    for (i, (_, line)) in bad.iter().enumerate() {
        for j in 0..50 {
            file.write_all(&valid(i * 50 + j)).unwrap();
            file.write_all(b"\n").unwrap();
            valid_count += 1;
        }
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    (path, valid_count, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_become_dead_letters_and_the_rest_is_processed() {
    let env = Env::new();
    let (path, valid, bad) = mixed_feed(&env);
    let app = env.app("mixed.db").await;
    let summary = run_files(&app, std::slice::from_ref(&path)).await;
    assert_eq!(summary.counts.dead_letters, bad.len() as u64);
    assert_eq!(summary.counts.accepted, valid as u64);
    assert_eq!(
        summary.counts.unmatched, valid as u64,
        "no registry imported"
    );

    let mut letters = Vec::new();
    app.store
        .export_dead_letters(&mut |letter| {
            letters.push(letter.to_document());
            Ok(())
        })
        .await
        .unwrap();
    let rules: Vec<String> = letters
        .iter()
        .map(|l| l["rule"].as_str().unwrap().to_string())
        .collect();
    for (rule, _) in &bad {
        assert!(
            rules.contains(&rule.to_string()),
            "{rule} missing from {rules:?}"
        );
    }
    for letter in &letters {
        let violations = Schemas::get().violations("outputs/dead_letter.json", letter);
        assert!(violations.is_empty(), "{violations:?}\n{letter}");
        assert_eq!(letter["origin"]["kind"], "file");
        let line = letter["origin"]["line"].as_u64().unwrap();
        assert_eq!(line % 51, 0, "each bad line follows 50 good ones");
    }
    use base64::Engine;
    let raw_of = |rule: &str| {
        let letter = letters.iter().find(|l| l["rule"] == rule).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(letter["raw_base64"].as_str().unwrap())
            .unwrap()
    };
    // Original bytes kept, non-UTF-8 included, with the resident ID masked in place.
    let binary = raw_of("json.not_utf8");
    assert_eq!(binary.len(), bad[1].1.len());
    assert!(binary.ends_with(b"\xff\xfe\"}"));
    assert!(binary.windows(18).any(|w| w == b"110105********002X"));
    assert!(!binary.windows(17).any(|w| w == b"11010519491231002"));
    // The 2 MiB line is kept up to the configured cap, with its full length.
    let huge = letters
        .iter()
        .find(|l| l["rule"] == "line.too_long")
        .unwrap();
    assert_eq!(huge["raw_bytes"].as_u64().unwrap(), bad[2].1.len() as u64);
    assert_eq!(huge["raw_truncated"], false, "2 MiB is under the 4 MiB cap");
    assert_eq!(raw_of("line.too_long"), bad[2].1);
    // Reasons name the field.
    let typed = letters.iter().find(|l| l["rule"] == "schema.type").unwrap();
    assert_eq!(typed["field"], "/payload/grade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_deterministic_and_resuming_a_finished_file_adds_nothing() {
    let env = Env::new();
    let (county, key) = env.county(600, 90, 11);
    let files = feeds(&county, &key);
    let first = env.app("first.db").await;
    import_county(&first, &county).await;
    run_files(&first, &files).await;
    // The same files again: positions say they are done.
    let again = run_files(&first, &files).await;
    assert_eq!(again.counts.records, 0);
    let second = env.app("second.db").await;
    import_county(&second, &county).await;
    // Another order of files: the same alerts, ids included.
    let mut reversed = files.clone();
    reversed.reverse();
    run_files(&second, &reversed).await;
    let a: Vec<AlertView> = alerts(&first).await.values().map(view).collect();
    let b: Vec<AlertView> = alerts(&second).await.values().map(view).collect();
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

fn event_rows(db: &std::path::Path) -> i64 {
    // Read-only peek at progress from outside the process under test.
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3;c=sqlite3.connect('file:{}?mode=ro',uri=True);print(c.execute('select count(*) from events').fetchone()[0])",
            db.display()
        ))
        .output();
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_without_loss_or_duplicates() {
    let env = Env::new();
    let (county, key) = env.county(3000, 200, 5);
    let files: Vec<String> = feeds(&county, &key)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    for db in ["whole.db", "killed.db"] {
        let app = env.app(db).await;
        import_county(&app, &county).await;
        app.store.close().await;
    }
    output(
        env.yujing("whole.db")
            .env("YUJING__INPUT__BATCH_SIZE", "500")
            .arg("run")
            .args(&files),
    );

    // Kill the second run at three points, then let it finish.
    let mut kills = 0;
    for threshold in [key.lines / 5, key.lines / 2, key.lines * 4 / 5] {
        let mut child = env
            .yujing("killed.db")
            .env("YUJING__INPUT__BATCH_SIZE", "500")
            .arg("run")
            .args(&files)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if event_rows(&env.path("killed.db")) as u64 >= threshold {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "run did not progress"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait().unwrap();
    }
    assert!(kills >= 1, "at least one run was killed mid-stream");
    output(
        env.yujing("killed.db")
            .env("YUJING__INPUT__BATCH_SIZE", "500")
            .arg("run")
            .args(&files),
    );

    let whole = env.app("whole.db").await;
    let killed = env.app("killed.db").await;
    let a: Vec<AlertView> = alerts(&whole).await.values().map(view).collect();
    let b: Vec<AlertView> = alerts(&killed).await.values().map(view).collect();
    assert_eq!(a.len(), b.len());
    assert_eq!(a, b);
    let (ra, rb) = (
        whole.store.report().await.unwrap(),
        killed.store.report().await.unwrap(),
    );
    assert_eq!(ra.events_processed, key.lines);
    assert_eq!(
        rb.events_processed, key.lines,
        "no record lost or counted twice"
    );
    assert_eq!(ra.events_accepted, rb.events_accepted);
    assert_eq!(ra.duplicates, rb.duplicates);
    assert_eq!(ra.dead_letters, rb.dead_letters);
    assert_eq!(ra.tasks_by_stage, rb.tasks_by_stage);
    // The regional stage resumed exactly too: the same signals, episode by episode.
    let signals = |app: &App| {
        let store = app.store.clone();
        async move {
            let mut found = Vec::new();
            store
                .export_signals(&mut |s| {
                    found.push(format!(
                        "{} {} {} {} {} {:?}",
                        s.signal_id, s.severity, s.status, s.day, s.observed, s.methods
                    ));
                    Ok(())
                })
                .await
                .unwrap();
            found
        }
    };
    let (sa, sb) = (signals(&whole).await, signals(&killed).await);
    assert!(!sa.is_empty());
    assert_eq!(sa, sb);
    assert_eq!(ra.signals_by_severity, rb.signals_by_severity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_input_and_exports_that_fit_their_schemas() {
    let env = Env::new();
    let (county, key) = env.county(500, 90, 3);
    let app = env.app("stdin.db").await;
    import_county(&app, &county).await;
    app.store.close().await;
    let mut stdin_text = Vec::new();
    for feed in feeds(&county, &key) {
        stdin_text.extend(std::fs::read(feed).unwrap());
    }
    let mut child = env
        .yujing("stdin.db")
        .args(["run", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stdin_text).unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let report: serde_json::Value =
        serde_json::from_str(&output(env.yujing("stdin.db").args(["report", "--json"]))).unwrap();
    assert_eq!(report["events_processed"], key.lines);
    for key_name in [
        "events_processed",
        "dead_letters",
        "unmatched",
        "duplicates",
        "alerts_by_level",
        "alerts_by_action",
        "alerts_by_status",
        "tasks_by_stage",
        "rule_yield",
    ] {
        assert!(report.get(key_name).is_some(), "report lacks {key_name}");
    }
    // The yield section: every alert once, and a row per rule in the text as well.
    let alert_count = output(env.yujing("stdin.db").args(["export", "alerts"]))
        .lines()
        .count();
    assert_eq!(report["rule_yield"]["all"]["alerts"], alert_count);
    let rules = report["rule_yield"]["rules"].as_array().unwrap();
    assert!(rules.len() > 3, "{rules:?}");
    let text = output(env.yujing("stdin.db").arg("report"));
    assert!(text.contains("rule yield"), "{text}");
    for rule in rules {
        let id = rule["rule_id"].as_str().unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}: {text}"));
        let alerts: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(alerts, rule["alerts"].as_u64().unwrap(), "{line}");
    }
    for (what, schema) in [
        ("alerts", "outputs/household_alert.json"),
        ("tasks", "outputs/screening_task.json"),
        ("dead-letters", "outputs/dead_letter.json"),
    ] {
        let text = output(env.yujing("stdin.db").args(["export", what]));
        let mut lines = 0;
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let violations = Schemas::get().violations(schema, &value);
            assert!(violations.is_empty(), "{what}: {violations:?}\n{line}");
            lines += 1;
        }
        assert!(lines > 0, "{what} export is empty");
    }
    // Stdin cannot be resumed, so it leaves no stored position.
    let app = env.app("stdin.db").await;
    assert_eq!(app.store.position("stdin").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_clear_resident_id_reaches_the_database() {
    let env = Env::new();
    let (county, key) = env.county(400, 60, 9);
    let app = env.app("privacy.db").await;
    import_county(&app, &county).await;
    run_files(&app, &feeds(&county, &key)).await;
    app.store.close().await;
    let members = std::fs::read_to_string(county.join("members.csv")).unwrap();
    let ids: Vec<&str> = members
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap())
        .collect();
    assert!(ids.len() > 1000);
    let mut bytes = std::fs::read(env.path("privacy.db")).unwrap();
    if let Ok(wal) = std::fs::read(env.path("privacy.db-wal")) {
        bytes.extend(wal);
    }
    let text = String::from_utf8_lossy(&bytes);
    for id in &ids {
        assert!(!text.contains(id), "a clear resident ID is stored");
        // Not even the 14 digits that the mask hides together with the prefix.
        assert!(!text.contains(&id[..14]));
    }
    assert!(text.contains(&format!("{}********", &ids[0][..6])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_import_is_idempotent_and_reports_bad_rows() {
    let env = Env::new();
    let (county, _) = env.county(300, 10, 2);
    let households = std::fs::read_to_string(county.join("households.csv")).unwrap();
    let bad = format!(
        "{households}BROKEN ROW,1,2\nH-X,522425101201,0,0,1,ordinary,,,,false,false,false\n"
    );
    std::fs::write(env.path("households.csv"), bad).unwrap();
    let app = env.app("registry.db").await;
    for round in 0..2 {
        let summary = commands::import_registry(
            &app,
            &env.path("households.csv"),
            &county.join("members.csv"),
            &Default::default(),
        )
        .await
        .unwrap();
        let lines: Vec<u64> = summary.errors.iter().map(|(_, e)| e.line).collect();
        let total_lines = households.lines().count() as u64;
        assert_eq!(
            lines,
            vec![total_lines + 1, total_lines + 2],
            "round {round}"
        );
        let report = app.store.report().await.unwrap();
        assert_eq!(report.households, 300, "round {round}");
    }
}

#[test]
fn validate_reports_every_bad_line_and_exits_one() {
    let env = Env::new();
    let (path, valid, bad) = mixed_feed(&env);
    let result = env
        .yujing("unused.db")
        .args(["validate", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(report["valid"], valid);
    assert_eq!(report["bad"].as_array().unwrap().len(), bad.len());
    let text = String::from_utf8_lossy(&result.stdout);
    assert!(!text.contains("11010519491231002"), "validate masks IDs");
    // A clean file passes.
    let clean = env.path("clean.ndjson");
    let good = String::from_utf8_lossy(&std::fs::read(&path).unwrap())
        .lines()
        .filter(|l| l.contains("\"OK-"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&clean, good).unwrap();
    let status = env
        .yujing("unused.db")
        .arg("validate")
        .arg(&clean)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn commands_without_a_key_say_how_to_set_it() {
    let env = Env::new();
    let result = env
        .yujing("nokey.db")
        .env_remove("YUJING__PRIVACY__PSEUDONYMISATION_KEY")
        .args(["run", "x.ndjson"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("YUJING__PRIVACY__PSEUDONYMISATION_KEY"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_document_per_line() {
    let env = Env::new();
    let (county, key) = env.county(300, 60, 4);
    let app = env.app("export.db").await;
    import_county(&app, &county).await;
    run_files(&app, &feeds(&county, &key)).await;
    let mut buffer = Vec::new();
    let count = commands::export(&app, ExportKind::Tasks, &mut buffer)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(buffer).unwrap().lines().count() as u64,
        count
    );
}

async fn page_size(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.expect("open the file");
    let size = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&pool)
        .await
        .expect("page size");
    pool.close().await;
    size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_sqlite_page_size_applies_to_new_files_only() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut settings = yujing::config::Settings::defaults().store;
    settings.sqlite_page_size = 8192;
    let store = yujing::store::Store::connect(&url, &settings)
        .await
        .expect("new store");
    store.close().await;
    assert_eq!(page_size(&url).await, 8192, "a new file takes the setting");

    settings.sqlite_page_size = 16384;
    let store = yujing::store::Store::connect(&url, &settings)
        .await
        .expect("existing store");
    store.close().await;
    assert_eq!(
        page_size(&url).await,
        8192,
        "an existing file keeps its size"
    );
}

/// The county's feeds as one file, every line in event-time order (lines without an
/// event time last): what one interleaved stream of the departments would deliver.
fn merged_in_event_time(
    county: &std::path::Path,
    key: &yujing::generate::AnswerKey,
) -> std::path::PathBuf {
    let mut lines: Vec<(Option<chrono::DateTime<chrono::Utc>>, Vec<u8>)> = Vec::new();
    for feed in feeds(county, key) {
        for line in std::fs::read(&feed).unwrap().split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let at = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|value| value["occurred_at"].as_str().map(str::to_string))
                .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
                .map(|at| at.with_timezone(&chrono::Utc));
            lines.push((at, line.to_vec()));
        }
    }
    lines.sort_by_key(|(at, _)| (at.is_none(), *at));
    let merged = county.join("merged.ndjson");
    let mut out = std::fs::File::create(&merged).unwrap();
    for (_, line) in lines {
        out.write_all(&line).unwrap();
        out.write_all(b"\n").unwrap();
    }
    merged
}

/// One file per department, read one after another, is judged in event time exactly
/// as one stream of the same events in event-time order: each file holds the regional
/// watermark until it is read, so no event of a later file is late for the days an
/// earlier file reached, and the detectors raise the same signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_files_read_one_after_another_are_judged_as_one_stream_in_event_time() {
    let env = Env::new();
    let (county, key) = env.county(1000, 120, 11);
    let sequential = env.app("sequential.db").await;
    import_county(&sequential, &county).await;
    run_files(&sequential, &feeds(&county, &key)).await;
    let merged = env.app("merged.db").await;
    import_county(&merged, &county).await;
    run_files(&merged, &[merged_in_event_time(&county, &key)]).await;

    let (one_by_one, interleaved) = (
        sequential.store.report().await.unwrap(),
        merged.store.report().await.unwrap(),
    );
    assert_eq!(one_by_one.events_accepted, interleaved.events_accepted);
    assert_eq!(
        one_by_one.late_events, interleaved.late_events,
        "files read in turn are not late for one another"
    );
    let signals = crate::support::signal_views(&sequential.store, None).await;
    assert!(
        signals.iter().any(|s| s.contains("cusum")),
        "the detectors find the planted spikes: {signals:#?}"
    );
    assert_eq!(
        signals,
        crate::support::signal_views(&merged.store, None).await
    );
}

/// The county's feeds as two exports, cut at a report day as departments export daily:
/// every line reported up to `cut` in the first, the rest in the second, each in report
/// order (lines without a report time in the second).
fn exports_cut_at(
    county: &std::path::Path,
    key: &yujing::generate::AnswerKey,
    cut: chrono::DateTime<chrono::Utc>,
) -> [std::path::PathBuf; 2] {
    let mut lines: Vec<(Option<chrono::DateTime<chrono::Utc>>, Vec<u8>)> = Vec::new();
    for feed in feeds(county, key) {
        for line in std::fs::read(&feed).unwrap().split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let at = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|value| value["reported_at"].as_str().map(str::to_string))
                .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
                .map(|at| at.with_timezone(&chrono::Utc));
            lines.push((at, line.to_vec()));
        }
    }
    lines.sort_by_key(|(at, _)| (at.is_none(), *at));
    let paths = [
        county.join("export-1.ndjson"),
        county.join("export-2.ndjson"),
    ];
    let mut files = paths.clone().map(|p| std::fs::File::create(p).unwrap());
    for (at, line) in lines {
        let file = &mut files[usize::from(at.is_none_or(|at| at > cut))];
        file.write_all(&line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    paths
}

/// Yesterday's export, then today's in a later run: the end of the first run leaves
/// the days within `detect.allowed_lateness_days` open (the input may continue), so
/// today's export still fills them — nothing is late that one run over both exports
/// finds on time, and the signals are the same. `--complete` (`input.complete`)
/// judges every day at the end instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_days_export_still_fills_the_days_the_last_run_left_open() {
    let env = Env::new();
    let (county, key) = env.county(1000, 120, 11);
    let cut = chrono::DateTime::parse_from_rfc3339("2024-05-15T00:00:00+08:00")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let [first, second] = exports_cut_at(&county, &key, cut);
    let daily = env.app("daily.db").await;
    import_county(&daily, &county).await;
    run_files(&daily, std::slice::from_ref(&first)).await;
    let judged = daily.store.report().await.unwrap();
    run_files(&daily, std::slice::from_ref(&second)).await;
    let once = env.app("once.db").await;
    import_county(&once, &county).await;
    run_files(&once, &[first.clone(), second.clone()]).await;
    let (daily_report, once_report) = (
        daily.store.report().await.unwrap(),
        once.store.report().await.unwrap(),
    );
    assert_eq!(daily_report.events_accepted, once_report.events_accepted);
    assert!(judged.events_accepted > 0 && judged.events_accepted < once_report.events_accepted);
    assert_eq!(
        daily_report.late_events, once_report.late_events,
        "the second export is not late for the days the first left open"
    );
    assert_eq!(
        crate::support::signal_views(&daily.store, None).await,
        crate::support::signal_views(&once.store, None).await
    );
    // A complete input judges its last days at its end: the second export is then
    // late for them.
    let mut settings = env.settings("complete.db");
    settings.input.complete = true;
    let complete = App::build(settings).await.expect("app");
    import_county(&complete, &county).await;
    run_files(&complete, std::slice::from_ref(&first)).await;
    run_files(&complete, std::slice::from_ref(&second)).await;
    let complete_report = complete.store.report().await.unwrap();
    assert!(
        complete_report.late_events > once_report.late_events,
        "{} late after a complete first export, {} in one run",
        complete_report.late_events,
        once_report.late_events
    );
}

/// A department still writing its file: the last line, without its line end yet, is
/// not read (no dead letter of half a record); once the line is complete the next run
/// reads it whole. A file that has not changed for `input.settle_seconds` is complete,
/// and its last line is read even without a line end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_last_line_waits_for_the_rest() {
    let env = Env::new();
    let (county, key) = env.county(200, 30, 5);
    let app = env.app("growing.db").await;
    import_county(&app, &county).await;
    let source = feeds(&county, &key)
        .into_iter()
        .find(|f| f.to_string_lossy().contains("housing"))
        .unwrap();
    let text = std::fs::read_to_string(&source).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"occurred_at\""))
        .collect();
    assert!(lines.len() >= 3);
    let last = lines[lines.len() - 1];
    let (head, tail) = last.split_at(last.len() / 2);
    let growing = env.path("growing.ndjson");
    let complete_part = lines[..lines.len() - 1].join("\n") + "\n";
    std::fs::write(&growing, format!("{complete_part}{head}")).unwrap();

    let first = run_files(&app, std::slice::from_ref(&growing)).await;
    assert_eq!(first.counts.records, lines.len() as u64 - 1);
    assert_eq!(
        first.counts.dead_letters, 0,
        "half a record is not a dead letter"
    );

    std::fs::write(&growing, format!("{complete_part}{head}{tail}\n")).unwrap();
    let second = run_files(&app, std::slice::from_ref(&growing)).await;
    assert_eq!(
        second.counts.records, 1,
        "the completed line, read once, whole"
    );
    assert_eq!(second.counts.dead_letters, 0);
    assert_eq!(second.counts.accepted + second.counts.duplicates, 1);

    // A settled file's last line is complete even without a line end.
    let settled = env.path("settled.ndjson");
    std::fs::write(&settled, lines[0]).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&settled)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let third = run_files(&app, std::slice::from_ref(&settled)).await;
    assert_eq!(third.counts.records, 1);
}

/// Every line of `files` whose event id is one of `ids`.
fn lines_with_ids(files: &[std::path::PathBuf], ids: &[String]) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if value["event_id"]
                .as_str()
                .is_some_and(|id| ids.iter().any(|e| e == id))
            {
                found.push(value);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_long_closed_alert_opens_a_new_one() {
    let env = Env::new();
    let (county, key) = env.county(400, 60, 21);
    let files = feeds(&county, &key);
    let app = env.app("episodes.db").await;
    import_county(&app, &county).await;
    run_files(&app, &files).await;
    let first = alerts(&app).await;
    let (household, alert) = first.iter().next().expect("the county raises alerts");
    let (household, old_id) = (household.clone(), alert.alert_id.clone());
    let evidence: Vec<String> = alert.evidence.iter().map(|e| e.to_string()).collect();
    drop(app);

    // The alert was handled and closed long ago: no cool-down holds it any more.
    let pool = sqlx::SqlitePool::connect(&env.store_url("episodes.db"))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE alerts SET status = 'closed', closed_at = '2000-01-01T00:00:00Z' WHERE alert_id = ?",
    )
    .bind(&old_id)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    // The same risk again, reported anew after a restart.
    let again = env.path("again.ndjson");
    let mut text = String::new();
    for mut line in lines_with_ids(&files, &evidence) {
        let id = line["event_id"].as_str().unwrap().to_string();
        line["event_id"] = serde_json::Value::String(format!("{id}-again"));
        text.push_str(&line.to_string());
        text.push('\n');
    }
    assert!(!text.is_empty(), "the alert's evidence is in the feeds");
    std::fs::write(&again, text).unwrap();
    let app = env.app("episodes.db").await;
    run_files(&app, std::slice::from_ref(&again)).await;

    let mut ids = Vec::new();
    app.store
        .export_alerts(&mut |a| {
            if a.household_id.to_string() == household {
                ids.push((a.alert_id.clone(), a.status.to_string()));
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        ids.len(),
        2,
        "the closed alert and a new one under a new id: {ids:?}"
    );
    assert!(
        ids.iter()
            .any(|(id, status)| id != &old_id && status == "open"),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_store_cannot_hold_never_stops_the_stream_on_either_backend() {
    for postgres in [false, true] {
        let env = Env::new();
        let mut settings = env.settings("nul.db");
        if postgres {
            settings.store.url =
                yujing::config::Secret::new(crate::support::fresh_postgres("nul").await);
        }
        let app = App::build(settings).await.unwrap();
        let path = env.path("nul.ndjson");
        let valid = r#"{"event_id":"NUL-2","source":"housing","kind":"housing_safety","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","household_id":"H1","payload":{"rating":"A"}}"#;
        // Refused (the id breaks the schema), its salvaged id and kind hold NULs,
        // as does the field the reason names; then a valid line.
        let refused = r#"{"event_id":"NUL\u0000-1","source":"housing","kind":"housing\u0000safety","payload":{"x\u0000":1}}"#;
        std::fs::write(&path, format!("{refused}\n{valid}\n")).unwrap();
        let summary = run_files(&app, std::slice::from_ref(&path)).await;
        assert_eq!(summary.counts.dead_letters, 1, "postgres: {postgres}");
        assert_eq!(summary.counts.accepted, 1, "postgres: {postgres}");
        let mut letters = Vec::new();
        app.store
            .export_dead_letters(&mut |letter| {
                letters.push(letter);
                Ok(())
            })
            .await
            .unwrap();
        let letter = &letters[0];
        assert_eq!(letter.salvage.event_id.as_deref(), Some("NUL\u{FFFD}-1"));
        assert_eq!(
            letter.salvage.kind.as_deref(),
            Some("housing\u{FFFD}safety")
        );
        assert!(!letter.rejection.reason.contains('\0'));
        assert!(letter.rejection.field.iter().all(|f| !f.contains('\0')));
        // The bytes are kept as they were read.
        assert_eq!(letter.raw, refused.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_departments_may_use_one_event_id_on_either_backend() {
    for postgres in [false, true] {
        let env = Env::new();
        let mut settings = env.settings("ids.db");
        if postgres {
            settings.store.url =
                yujing::config::Secret::new(crate::support::fresh_postgres("ids").await);
        }
        let app = App::build(settings).await.unwrap();
        let housing = r#"{"event_id":"2024-0001","source":"housing","kind":"housing_safety","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","household_id":"H1","payload":{"rating":"A"}}"#;
        let education = r#"{"event_id":"2024-0001","source":"education","kind":"school_dropout","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","person_id":"11010519491231002X","payload":{"school_stage":"primary"}}"#;
        let path = env.path("ids.ndjson");
        // The housing record twice: one duplicate, and the other department's
        // record of the same number is an event of its own.
        std::fs::write(&path, format!("{housing}\n{education}\n{housing}\n")).unwrap();
        let summary = run_files(&app, std::slice::from_ref(&path)).await;
        assert_eq!(summary.counts.accepted, 2, "postgres: {postgres}");
        assert_eq!(summary.counts.duplicates, 1, "postgres: {postgres}");
        // After a restart (the seen set rebuilt from the store), both are known.
        let again = env.path("ids-again.ndjson");
        std::fs::write(&again, format!("{education}\n{housing}\n")).unwrap();
        let summary = run_files(&app, std::slice::from_ref(&again)).await;
        assert_eq!(summary.counts.accepted, 0, "postgres: {postgres}");
        assert_eq!(summary.counts.duplicates, 2, "postgres: {postgres}");
        let report = app.store.report().await.unwrap();
        assert_eq!(report.events_accepted, 2, "postgres: {postgres}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_read_in_part_ends_quietly_and_a_mistyped_store_is_refused() {
    use std::io::BufRead;
    let env = Env::new();
    let (county, key) = env.county(1500, 60, 4);
    let app = env.app("export.db").await;
    import_county(&app, &county).await;
    run_files(&app, &feeds(&county, &key)).await;
    app.store.close().await;
    // `yujing export alerts | head -1`: more than a pipe holds, one line read.
    let mut child = env
        .yujing("export.db")
        .args(["export", "alerts"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    // A store path that does not exist is refused, not created empty.
    for args in [&["report"][..], &["export", "alerts"][..]] {
        let output = env.yujing("exprot.db").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains("no store at"), "{args:?}: {stderr}");
        assert!(
            !env.path("exprot.db").exists(),
            "{args:?} created the store"
        );
    }
}

/// With `store.event_retention_days` set, a run deletes the events older than that
/// (in event time, before the latest stored) — never fewer days than the state read
/// back at start-up needs — at its start, and nothing newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_leave_the_store() {
    let env = Env::new();
    let (county, key) = env.county(300, 120, 5);
    let mut settings = env.settings("retention.db");
    settings.rules.lookback_days = 10;
    settings.rules.max_lateness_days = 5;
    settings.input.dedupe_horizon_days = 20;
    settings.store.event_retention_days = 40;
    assert_eq!(yujing::pipeline::event_retention_days(&settings), 40);
    settings.store.event_retention_days = 25;
    assert_eq!(
        yujing::pipeline::event_retention_days(&settings),
        30,
        "raised to twice the look-back and lateness"
    );
    let app = App::build(settings).await.expect("app");
    import_county(&app, &county).await;
    run_files(&app, &feeds(&county, &key)).await;
    let all = app
        .store
        .load_state(None, None, chrono::DateTime::UNIX_EPOCH, None)
        .await
        .unwrap()
        .seen;
    let latest = all.iter().map(|(_, at)| *at).max().unwrap();
    let bound = latest - chrono::Duration::days(30);
    assert!(
        all.iter().any(|(_, at)| *at < bound),
        "old events were stored"
    );
    // The next run (nothing new to read) deletes them at its start.
    let empty = env.path("empty.ndjson");
    std::fs::write(&empty, b"").unwrap();
    run_files(&app, &[empty]).await;
    let kept = app
        .store
        .load_state(None, None, chrono::DateTime::UNIX_EPOCH, None)
        .await
        .unwrap()
        .seen;
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|(_, at)| *at >= bound));
    assert_eq!(
        kept.len(),
        all.iter().filter(|(_, at)| *at >= bound).count()
    );
}
