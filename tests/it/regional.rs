//! Regional detection end to end on generated counties, without a store: feed lines ->
//! `Decoder` -> dedupe -> `resolve` -> `RegionalStage`, in arrival (report-time) order,
//! one batch per simulated hour. Planted scenarios are signalled within two days of onset
//! at the right region and kind; a background-only year stays within the false-alarm
//! budget; late events correct judged days; every output fits its schema.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use yujing::batch::RegionalOutput;
use yujing::config::Settings;
use yujing::domain::event::{Event, Payload};
use yujing::domain::ids::{HouseholdId, Pseudonymiser, RegionCode};
use yujing::domain::registry::Registry;
use yujing::domain::signal::{RegionalSignal, RiskKind, SignalStatus};
use yujing::domain::task::TaskKind;
use yujing::generate::{AnswerKey, GenerateOptions, generate};
use yujing::pipeline::decode::Decoder;
use yujing::pipeline::detect::RegionalStage;
use yujing::pipeline::detect::series::{day_from_date, day_of};
use yujing::pipeline::resolve::{Target, resolve};
use yujing::schemas::Schemas;

use crate::support::KEY;

struct County {
    _dir: tempfile::TempDir,
    key: AnswerKey,
    registry: Registry,
    /// Decoded, deduplicated events with their households, in arrival order.
    events: Vec<(Event, Vec<u32>)>,
}

fn county(households: usize, days: u32, seed: u64, planted: bool) -> County {
    let dir = tempfile::tempdir().unwrap();
    let options = GenerateOptions {
        households,
        days,
        seed,
        planted,
        ..GenerateOptions::default()
    };
    let key = generate(dir.path(), &options).unwrap();
    let registry = registry(dir.path());
    let pseudonymiser = Pseudonymiser::new(KEY.as_bytes());
    let decoder = Decoder::new(&Settings::defaults().validation);
    // Decoding "now": after the span, so every report time is in the past, but not so
    // far that the generator's bad lines from the future (2099) are accepted.
    let end = key.start + Duration::days(i64::from(days) + 30);
    let late = Utc.from_utc_datetime(&end.and_hms_opt(0, 0, 0).unwrap());
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for feed in &key.feeds {
        let text = std::fs::read(dir.path().join(feed)).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(event) = decoder.decode(line, late) else {
                continue; // the planted bad lines
            };
            if !seen.insert(event.event_id.digest(event.source.as_str())) {
                continue;
            }
            let households = match resolve(&event, &registry, &pseudonymiser).target {
                Target::Household(idx) => vec![idx],
                Target::Households(list, _) => list,
                Target::Regional(_) | Target::Unmatched => vec![],
            };
            events.push((event, households));
        }
    }
    events.sort_by_key(|(e, _)| (e.reported_at, e.event_id.clone()));
    County {
        _dir: dir,
        key,
        registry,
        events,
    }
}

fn registry(dir: &Path) -> Registry {
    let open = |name: &str| std::fs::File::open(dir.join(name)).unwrap();
    let regions = yujing::registry::parse_regions(open("regions.csv"))
        .unwrap()
        .rows;
    yujing::registry::registry_from_csv(
        open("households.csv"),
        open("members.csv"),
        regions,
        &Pseudonymiser::new(KEY.as_bytes()),
    )
    .unwrap()
}

/// Runs the events through a stage, one batch per hour of arrival time; `delay` moves
/// an event's arrival. After the last arrival, hourly idle flushes for `tail` days.
fn drive(
    county: &County,
    delay: impl Fn(&Event) -> Duration,
    tail: i64,
) -> (RegionalStage, Vec<RegionalOutput>) {
    let settings = Settings::defaults();
    let mut stage = RegionalStage::new(&settings.detect);
    let mut arrivals: Vec<(DateTime<Utc>, usize)> = county
        .events
        .iter()
        .enumerate()
        .map(|(i, (e, _))| (e.reported_at + delay(e), i))
        .collect();
    arrivals.sort();
    let hour = |t: DateTime<Utc>| t.timestamp().div_euclid(3600);
    let mut outputs = Vec::new();
    let mut next = 0;
    let mut clock = hour(arrivals[0].0);
    let end = hour(arrivals[arrivals.len() - 1].0) + tail * 24;
    while clock <= end {
        while next < arrivals.len() && hour(arrivals[next].0) <= clock {
            let (event, households) = &county.events[arrivals[next].1];
            stage.observe(event, households, &county.registry);
            next += 1;
        }
        let now = Utc.timestamp_opt((clock + 1) * 3600, 0).unwrap();
        outputs.push(stage.flush(&county.registry, now));
        clock += 1;
    }
    (stage, outputs)
}

fn snapshots(outputs: &[RegionalOutput]) -> impl Iterator<Item = &RegionalSignal> {
    outputs.iter().flat_map(|o| o.signals.iter())
}

#[test]
fn planted_scenarios_are_signalled_within_two_days_at_the_right_region_and_kind() {
    let county = county(3000, 150, 11, true);
    let scenarios: BTreeMap<&str, usize> =
        county
            .key
            .regional
            .iter()
            .fold(BTreeMap::new(), |mut m, c| {
                *m.entry(c.scenario.as_str()).or_default() += 1;
                m
            });
    for name in [
        "factory_closure",
        "dibao_surge",
        "flood",
        "industry_project_failure",
    ] {
        assert!(
            scenarios.contains_key(name),
            "{name} planted: {scenarios:?}"
        );
    }
    assert!(scenarios["flood"] >= 2, "the flood covers several villages");
    let (_, outputs) = drive(&county, |_| Duration::zero(), 5);
    for case in &county.key.regional {
        let region = RegionCode::parse(&case.region_code).unwrap();
        let onset = day_from_date(case.onset);
        let hit = snapshots(&outputs).find(|s| {
            s.region_code == region
                && s.risk_kind == case.kind
                && (onset..=onset + 2).contains(&day_from_date(s.day))
                && s.methods.contains(&case.method)
        });
        assert!(
            hit.is_some(),
            "{} at {} ({}) from {}: no {} signal by {} within 2 days; signals there: {:#?}",
            case.scenario,
            case.region_code,
            case.level,
            case.onset,
            case.kind,
            case.method,
            snapshots(&outputs)
                .filter(|s| s.region_code == region && s.risk_kind == case.kind)
                .map(|s| (s.day, s.methods.clone(), s.status))
                .collect::<Vec<_>>()
        );
    }
    // The factory closure opens a campaign in every village of its township.
    let factory = county
        .key
        .regional
        .iter()
        .find(|c| c.scenario == "factory_closure")
        .unwrap();
    let township = RegionCode::parse(&factory.region_code).unwrap();
    let signal = snapshots(&outputs)
        .find(|s| s.region_code == township && s.risk_kind == RiskKind::Unemployment)
        .unwrap();
    let villages: HashSet<RegionCode> = outputs
        .iter()
        .flat_map(|o| o.tasks.iter())
        .filter(|t| t.signal_id.as_deref() == Some(signal.signal_id.as_str()))
        .map(|t| t.village_code)
        .collect();
    let expected: HashSet<RegionCode> = county
        .registry
        .households_within(township)
        .into_iter()
        .map(|h| county.registry.household(h).region_code)
        .collect();
    assert_eq!(villages, expected);
    // Its tasks list households of their own village to visit first: the laid-off
    // households among them.
    let campaign: Vec<_> = outputs
        .iter()
        .flat_map(|o| o.tasks.iter())
        .filter(|t| t.signal_id.as_deref() == Some(signal.signal_id.as_str()))
        .collect();
    let listed: Vec<&HouseholdId> = campaign
        .iter()
        .flat_map(|t| t.priority_households.iter())
        .collect();
    assert!(
        listed.len() >= factory.households,
        "{} listed",
        listed.len()
    );
    for task in &campaign {
        let distinct: HashSet<&HouseholdId> = task.priority_households.iter().collect();
        assert_eq!(distinct.len(), task.priority_households.len());
        for id in &task.priority_households {
            let index = county
                .registry
                .household_idx(id)
                .expect("a registry household");
            assert_eq!(
                county.registry.household(index).region_code,
                task.village_code
            );
        }
    }
    // One campaign at a time per village: signals over a village whose campaign still
    // runs (from its signal's onset, `campaign_due_days`) open no second one.
    let due = Settings::defaults().detect.signals.campaign_due_days;
    let onsets: HashMap<&str, NaiveDate> = snapshots(&outputs)
        .map(|s| (s.signal_id.as_str(), s.onset_day))
        .collect();
    let mut by_village: BTreeMap<RegionCode, Vec<NaiveDate>> = BTreeMap::new();
    for task in outputs.iter().flat_map(|o| o.tasks.iter()) {
        if task.kind == TaskKind::Campaign {
            let signal = task.signal_id.as_deref().expect("a campaign's signal");
            by_village
                .entry(task.village_code)
                .or_default()
                .push(onsets[signal]);
        }
    }
    assert!(!by_village.is_empty());
    for (village, mut days) in by_village {
        days.sort();
        for pair in days.windows(2) {
            assert!(
                (pair[1] - pair[0]).num_days() >= due,
                "village {village}: campaigns from {} and {} overlap",
                pair[0],
                pair[1]
            );
        }
    }
    // Every output fits its published schema.
    let schemas = Schemas::get();
    for signal in snapshots(&outputs) {
        let value = serde_json::to_value(signal).unwrap();
        let violations = schemas.violations("outputs/regional_signal.json", &value);
        assert!(violations.is_empty(), "{value}: {violations:?}");
    }
    for task in outputs.iter().flat_map(|o| o.tasks.iter()) {
        let value = serde_json::to_value(task).unwrap();
        assert!(
            schemas.is_valid("outputs/screening_task.json", &value),
            "{value}"
        );
    }
}

#[test]
fn a_background_year_stays_within_the_false_alarm_budget() {
    let county = county(2000, 365, 5, false);
    assert!(county.key.regional.is_empty());
    let (stage, outputs) = drive(&county, |_| Duration::zero(), 5);
    let raised: BTreeMap<&str, &RegionalSignal> = snapshots(&outputs)
        .map(|s| (s.signal_id.as_str(), s))
        .collect();
    let regions: HashSet<RegionCode> = county
        .registry
        .households_within(RegionCode::parse("522425000000").unwrap())
        .into_iter()
        .flat_map(|h| {
            let village = county.registry.household(h).region_code;
            [village, village.township(), village.county()]
        })
        .collect();
    let judged = stage.watermark();
    let days = (day_from_date(judged.judged_through.unwrap())
        - day_from_date(judged.origin.unwrap())
        + 1) as f64;
    let budget = Settings::defaults()
        .detect
        .cusum
        .false_alarms_per_region_year
        * regions.len() as f64
        * days
        / 365.0;
    println!(
        "{} signals over {days} days in {} regions (budget {budget:.1}): {:#?}",
        raised.len(),
        regions.len(),
        raised
            .values()
            .map(|s| (
                s.region_code.to_string(),
                s.risk_kind,
                s.day,
                s.methods.clone()
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        raised.len() as f64 <= budget,
        "{} false alarms > {budget:.1}",
        raised.len()
    );
}

#[test]
fn late_events_correct_a_judged_day_instead_of_being_lost() {
    let county = county(3000, 150, 11, true);
    let surge = county
        .key
        .regional
        .iter()
        .find(|c| c.scenario == "dibao_surge")
        .unwrap();
    let township = RegionCode::parse(&surge.region_code).unwrap();
    let onset = day_from_date(surge.onset);
    // Low-income applications of the surge days arrive ten days late.
    let held = |event: &Event| {
        let day = day_of(event.occurred_at);
        let application = matches!(&event.payload, Payload::AssistanceApplication(_));
        if application && (onset..onset + 6).contains(&day) {
            Duration::days(10)
        } else {
            Duration::zero()
        }
    };
    let (in_time, _) = drive(&county, |_| Duration::zero(), 5);
    let (late, outputs) = drive(&county, held, 5);
    let corrections: u64 = outputs.iter().map(|o| o.late_corrections).sum();
    assert!(
        corrections >= 18,
        "the surge's applications corrected judged days: {corrections}"
    );
    for day in onset - 2..onset + 8 {
        let date = yujing::pipeline::detect::series::date_of(day);
        assert_eq!(
            late.count(township, RiskKind::LowIncome, date),
            in_time.count(township, RiskKind::LowIncome, date),
            "{date}"
        );
    }
    for day in onset - 2..onset + 8 {
        let date = yujing::pipeline::detect::series::date_of(day);
        eprintln!(
            "{date} {} {}",
            late.count(township, RiskKind::LowIncome, date),
            late.count(township, RiskKind::AnyRisk, date)
        );
    }
    eprintln!("{:?} {:?}", surge.onset, late.watermark());
    assert!(late.count(township, RiskKind::LowIncome, surge.onset) >= 3);
    // The corrected days were re-judged: the surge is signalled for its onset.
    let signal = snapshots(&outputs)
        .find(|s| {
            s.region_code == township
                && s.risk_kind == RiskKind::LowIncome
                && (onset..=onset + 2).contains(&day_from_date(s.day))
        })
        .expect("re-judged surge signalled");
    assert_ne!(signal.status, SignalStatus::Cleared);
}
