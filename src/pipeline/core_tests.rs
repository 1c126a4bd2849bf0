//! The core's results do not depend on how records are cut into batches: rules are
//! applied household by household at the end of a batch, which must give exactly
//! what applying them record by record gives.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use super::core::Core;
use crate::batch::{Match, StoredEvent};
use crate::config::Settings;
use crate::domain::alert::HouseholdAlert;
use crate::domain::ids::Pseudonymiser;
use crate::domain::record::{Origin, RawRecord};
use crate::domain::task::ScreeningTask;
use crate::generate::{GenerateOptions, generate};

const KEY: &[u8] = b"core-test-key";

/// A generated county: its core and its records in feed order.
fn county() -> (Core, Vec<RawRecord>) {
    county_with(&Settings::defaults())
}

/// Settings under which many alerts expire in the county's season: yellow alerts
/// below the task level too, a short expiry, a short lateness.
fn expiring() -> Settings {
    let mut settings = Settings::defaults();
    settings.rules.task_min_level = crate::domain::alert::Level::Orange;
    settings.rules.expiry_days = 10;
    settings.rules.max_lateness_days = 7;
    settings
}

/// A generated county under `settings`.
fn county_with(settings: &Settings) -> (Core, Vec<RawRecord>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let options = GenerateOptions {
        households: 400,
        days: 120,
        seed: 7,
        ..GenerateOptions::default()
    };
    let key = generate(dir.path(), &options).expect("county");
    let open = |name: &str| std::fs::File::open(dir.path().join(name)).expect("registry file");
    let registry = crate::registry::registry_from_csv(
        open("households.csv"),
        open("members.csv"),
        Vec::new(),
        &Pseudonymiser::new(KEY),
    )
    .expect("registry");
    let mut records = Vec::new();
    for feed in &key.feeds {
        let text = std::fs::read(dir.path().join(feed)).expect("feed");
        for (line, bytes) in text.split(|&b| b == b'\n').enumerate() {
            if !bytes.is_empty() {
                records.push(RawRecord {
                    bytes: bytes.to_vec(),
                    origin: Origin::File {
                        path: feed.as_str().into(),
                        line: line as u64 + 1,
                        byte_offset: 0,
                    },
                    original_len: None,
                });
            }
        }
    }
    let core = Core::new(settings, Pseudonymiser::new(KEY), registry).without_regional_stage();
    (core, records)
}

/// Each alert's and task's last snapshot, the accepted events in order, and the count
/// of suppressed findings, after processing `records` in batches of `size`.
struct Outcome {
    alerts: BTreeMap<String, HouseholdAlert>,
    tasks: BTreeMap<String, ScreeningTask>,
    events: Vec<StoredEvent>,
    suppressed: u64,
    /// Alert ends with their event time, in order.
    closures: Vec<(String, chrono::DateTime<Utc>)>,
}

fn run(core: &mut Core, records: &[RawRecord], size: usize) -> Outcome {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut outcome = Outcome {
        alerts: BTreeMap::new(),
        tasks: BTreeMap::new(),
        events: Vec::new(),
        suppressed: 0,
        closures: Vec::new(),
    };
    for batch in records.chunks(size) {
        let output = core.process(batch, now);
        outcome.suppressed += output.counts.suppressed;
        outcome.events.extend(output.events);
        outcome.closures.extend(output.closures);
        for alert in output.alerts {
            outcome.alerts.insert(alert.alert_id.clone(), alert);
        }
        for task in output.tasks {
            outcome.tasks.insert(task.task_id.clone(), task);
        }
    }
    outcome
}

#[test]
fn batching_does_not_change_alerts_tasks_or_events() {
    batching_changes_nothing(&Settings::defaults());
}

/// Alerts expire (by their household's next event, and marked by the stream) alike
/// however the records are cut into batches.
#[test]
fn batching_does_not_change_expiries() {
    batching_changes_nothing(&expiring());
}

fn batching_changes_nothing(settings: &Settings) {
    let (mut core, records) = county_with(settings);
    let (mut single, _) = county_with(settings);
    let whole = run(&mut core, &records, records.len());
    let one_by_one = run(&mut single, &records, 1);
    assert!(
        whole.alerts.len() > 20,
        "the county raises alerts ({})",
        whole.alerts.len()
    );
    // Several households change within one batch, several times each.
    assert!(whole.events.len() > 2 * whole.alerts.len());
    // Events carry their household's id and village.
    let matched: Vec<_> = whole
        .events
        .iter()
        .filter(|e| e.matched == Match::Matched && e.person_key.is_some())
        .collect();
    assert!(!matched.is_empty());
    let registry = core.registry();
    for event in matched {
        let key = event.person_key.expect("a person event");
        let person = registry.person(&key).expect("a registry person");
        let household = registry.household(person.household);
        assert_eq!(event.household_id.as_ref(), Some(&household.household_id));
        assert_eq!(event.region_code, Some(household.region_code));
    }
    assert_eq!(whole.events, one_by_one.events);
    assert_eq!(whole.suppressed, one_by_one.suppressed);
    assert_eq!(whole.tasks, one_by_one.tasks);
    assert_eq!(
        whole.alerts.keys().collect::<Vec<_>>(),
        one_by_one.alerts.keys().collect::<Vec<_>>()
    );
    for (id, alert) in &whole.alerts {
        assert_eq!(alert, &one_by_one.alerts[id], "alert {id}");
    }
    let sorted = |closures: &[(String, chrono::DateTime<Utc>)]| {
        let mut closures = closures.to_vec();
        closures.sort();
        closures
    };
    assert_eq!(sorted(&whole.closures), sorted(&one_by_one.closures));
    if settings.rules.expiry_days < 30 {
        let expired = whole
            .alerts
            .values()
            .filter(|a| a.status == crate::domain::alert::AlertStatus::Expired)
            .count();
        assert!(expired > 20, "{expired} alerts expired");
    }
}

/// A task counts its days from the warning's report time, not from when yujing
/// processed it: the same records processed at another time give the same due dates.
#[test]
fn a_replay_at_another_time_gives_the_same_due_dates() {
    let (mut core, records) = county();
    let (mut later, _) = county();
    let first = run(&mut core, &records, 512);
    let mut replay = Outcome {
        alerts: BTreeMap::new(),
        tasks: BTreeMap::new(),
        events: Vec::new(),
        suppressed: 0,
        closures: Vec::new(),
    };
    let much_later = Utc.with_ymd_and_hms(2027, 6, 1, 0, 0, 0).unwrap();
    for batch in records.chunks(512) {
        for task in later.process(batch, much_later).tasks {
            replay.tasks.insert(task.task_id.clone(), task);
        }
    }
    assert!(first.tasks.len() > 10, "{} tasks", first.tasks.len());
    assert_eq!(
        first.tasks.keys().collect::<Vec<_>>(),
        replay.tasks.keys().collect::<Vec<_>>()
    );
    let reported: std::collections::HashSet<_> =
        first.events.iter().map(|e| e.reported_at).collect();
    for (id, task) in &first.tasks {
        let again = &replay.tasks[id];
        assert_eq!(
            (task.budget_from, task.pass_on_due_at, task.due_at),
            (again.budget_from, again.pass_on_due_at, again.due_at),
            "task {id}"
        );
        assert!(
            reported.contains(&task.budget_from),
            "task {id} counts from a warning's report time, not {}",
            task.budget_from
        );
        assert_ne!(task.created_at, again.created_at);
    }
}

/// A decision closes its alert at the stream's point of event time: the same risk
/// within `rules.cooldown_days` after it is suppressed and later opens a new alert,
/// however much later (in processing time) the decision or the events came.
#[test]
fn the_cool_down_counts_in_event_time_from_the_decision() {
    use crate::domain::alert::AlertStatus;
    use crate::domain::task::LoggedChange;
    let (mut core, records) = county();
    let first = run(&mut core, &records, records.len());
    let clock = first
        .events
        .iter()
        .map(|e| e.occurred_at)
        .max()
        .expect("events");
    // An open alert on one risk type and a record of its newest evidence.
    // (The feeds hold malformed records on purpose: those are no evidence.)
    let value = |r: &RawRecord| -> serde_json::Value {
        serde_json::from_slice(&r.bytes).unwrap_or_default()
    };
    let (alert, record) = first
        .alerts
        .values()
        .filter(|a| a.status == AlertStatus::Open && a.risk_types.len() == 1)
        .find_map(|a| {
            let newest = a.evidence.last()?;
            let record = records
                .iter()
                .find(|r| value(r)["event_id"].as_str() == Some(newest.as_str()))?;
            let kind = value(record)["kind"].as_str()?.to_string();
            (kind == "medical_settlement").then(|| (a.clone(), record.clone()))
        })
        .expect("an open alert on one risk with a medical settlement as evidence");
    let processing = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    core.apply_registry_changes(
        &[LoggedChange {
            id: 1,
            household_id: Some(alert.household_id.clone()),
            change: None,
            alert_id: Some(alert.alert_id.clone()),
        }],
        processing,
    );
    let again = |days: i64, id: &str| -> RawRecord {
        let mut copy = value(&record);
        let at = (clock + chrono::Duration::days(days)).to_rfc3339();
        copy["event_id"] = id.into();
        copy["occurred_at"] = at.clone().into();
        copy["reported_at"] = at.into();
        RawRecord {
            bytes: serde_json::to_vec(&copy).expect("json"),
            ..record.clone()
        }
    };
    let cooldown = Settings::defaults().rules.cooldown_days;
    let closing = core.process(&[], processing);
    assert_eq!(
        closing.closures,
        vec![(alert.alert_id.clone(), clock)],
        "closed at the stream's latest event time"
    );
    let within = core.process(&[again(cooldown - 5, "YB-COOLDOWN-000001")], processing);
    assert_eq!(within.counts.accepted, 1, "{:?}", within.dead_letters);
    assert!(
        within
            .alerts
            .iter()
            .all(|a| a.household_id != alert.household_id),
        "still cooling down"
    );
    assert!(within.counts.suppressed >= 1);
    let after = core.process(&[again(cooldown + 5, "YB-COOLDOWN-000002")], processing);
    assert_eq!(after.counts.accepted, 1, "{:?}", after.dead_letters);
    let reopened: Vec<_> = after
        .alerts
        .iter()
        .filter(|a| a.household_id == alert.household_id)
        .collect();
    assert_eq!(reopened.len(), 1, "a new alert after the cool-down");
    assert_ne!(reopened[0].alert_id, alert.alert_id);
}

/// Duplicates are found within `input.dedupe_horizon_days` of event time: the seen set
/// forgets older events as event time moves on, and an event older than the horizon
/// — a repeat of a forgotten one or not — is refused to dead letters as too late
/// instead of being accepted twice.
#[test]
fn the_seen_set_holds_the_dedupe_horizon_and_older_events_are_refused() {
    let (mut core, records) = county();
    let first = run(&mut core, &records, records.len());
    let held = core.seen_count();
    assert_eq!(held, first.events.len());
    let clock = first.events.iter().map(|e| e.occurred_at).max().unwrap();
    let horizon = Settings::defaults().input.dedupe_horizon_days;
    let record = records
        .iter()
        .find(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.bytes)
                .is_ok_and(|v| v["kind"] == "medical_settlement")
        })
        .unwrap()
        .clone();
    let at = |days: i64, id: &str| -> RawRecord {
        let mut copy: serde_json::Value = serde_json::from_slice(&record.bytes).unwrap();
        let time = (clock + chrono::Duration::days(days)).to_rfc3339();
        copy["event_id"] = id.into();
        copy["occurred_at"] = time.clone().into();
        copy["reported_at"] = time.into();
        RawRecord {
            bytes: serde_json::to_vec(&copy).unwrap(),
            ..record.clone()
        }
    };
    let far = clock + chrono::Duration::days(horizon + 400);
    // Event time moves on past the horizon of every event so far.
    let moved = core.process(&[at(horizon + 400, "YB-HORIZON-000001")], far);
    assert_eq!(moved.counts.accepted, 1, "{:?}", moved.dead_letters);
    assert!(
        core.seen_count() < held / 10,
        "{} digests held of {held}",
        core.seen_count()
    );
    // A repeat of a forgotten event, and a new one just as old: both too late.
    let repeat = core.process(&[record.clone(), at(0, "YB-HORIZON-000002")], far);
    assert_eq!(repeat.counts.accepted, 0);
    assert_eq!(repeat.counts.duplicates, 0);
    let rules: Vec<&str> = repeat
        .dead_letters
        .iter()
        .map(|d| d.rejection.rule.as_str())
        .collect();
    assert_eq!(
        rules,
        ["time.beyond_dedupe_horizon", "time.beyond_dedupe_horizon"]
    );
    // Within the horizon: accepted once, then a duplicate.
    let inside = at(401, "YB-HORIZON-000003");
    let once = core.process(std::slice::from_ref(&inside), far);
    assert_eq!(once.counts.accepted, 1, "{:?}", once.dead_letters);
    let twice = core.process(&[inside], far);
    assert_eq!((twice.counts.accepted, twice.counts.duplicates), (0, 1));
}
