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
    let core = Core::new(&Settings::defaults(), Pseudonymiser::new(KEY), registry)
        .without_regional_stage();
    (core, records)
}

/// Each alert's and task's last snapshot, the accepted events in order, and the count
/// of suppressed findings, after processing `records` in batches of `size`.
struct Outcome {
    alerts: BTreeMap<String, HouseholdAlert>,
    tasks: BTreeMap<String, ScreeningTask>,
    events: Vec<StoredEvent>,
    suppressed: u64,
}

fn run(core: &mut Core, records: &[RawRecord], size: usize) -> Outcome {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut outcome = Outcome {
        alerts: BTreeMap::new(),
        tasks: BTreeMap::new(),
        events: Vec::new(),
        suppressed: 0,
    };
    for batch in records.chunks(size) {
        let output = core.process(batch, now);
        outcome.suppressed += output.counts.suppressed;
        outcome.events.extend(output.events);
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
    let (mut core, records) = county();
    let (mut single, _) = county();
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
}
