//! Unit tests of the regional stage: counting, watermark, late corrections, idle timeout,
//! signals and their lifecycle, systemic rules, campaigns, exact restore, and property
//! tests of order independence.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::config::Settings;
use crate::domain::alert::Level;
use crate::domain::event::{
    AssistanceApplication, Decision, DisasterDeclared, DisasterLevel, Event, Hazard,
    IndustryProjectFailure, Payload, Program, Subject, Unemployment, UnemploymentReason,
};
use crate::domain::ids::{EventId, HouseholdId};
use crate::domain::registry::{Household, HouseholdStatus};
use crate::domain::signal::SignalStatus;

const TOWNSHIP_A: &str = "522425101000";
const TOWNSHIP_B: &str = "522425102000";
const COUNTY: &str = "522425000000";

fn code(text: &str) -> RegionCode {
    RegionCode::parse(text).unwrap()
}

/// Two townships, three villages each, 40 households per village.
fn registry() -> Registry {
    let mut households = Vec::new();
    for township in [101, 102] {
        for village in 201..204 {
            for i in 0..40 {
                households.push(Household {
                    household_id: HouseholdId::parse(&format!("H{township}{village}{i:03}"))
                        .unwrap(),
                    region_code: code(&format!("522425{township}{village}")),
                    members: 3,
                    labour_capable: 2,
                    annual_net_income_yuan: 30_000.0,
                    status: HouseholdStatus::Ordinary,
                    monitoring_type: None,
                    identified_on: None,
                    risk_eliminated_on: None,
                    safety_net: false,
                    dibao: false,
                    tekun: false,
                    developmental_assistance: false,
                });
            }
        }
    }
    Registry::build(households, vec![], vec![]).0
}

fn settings() -> DetectSettings {
    Settings::defaults().detect
}

/// Noon (CST) of day `day` after 2024-01-01.
fn at(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap() + Duration::days(day)
}

fn event(id: &str, day: i64, payload: Payload, subject: Subject) -> Event {
    Event {
        event_id: EventId::parse(id).unwrap(),
        source: payload.kind().source(),
        occurred_at: at(day),
        reported_at: at(day),
        subject,
        payload_json: "{}".into(),
        payload,
    }
}

fn dibao(id: &str, day: i64) -> Event {
    event(
        id,
        day,
        Payload::AssistanceApplication(AssistanceApplication {
            program: Program::Dibao,
            decision: Decision::Applied,
            monthly_amount_yuan: None,
        }),
        Subject::Household(HouseholdId::parse("H0").unwrap()),
    )
}

fn layoff(id: &str, day: i64, employer: &str) -> Event {
    event(
        id,
        day,
        Payload::Unemployment(Unemployment {
            reason: UnemploymentReason::LaidOff,
            employer_id: Some(employer.into()),
            industry: None,
            previous_monthly_income_yuan: None,
        }),
        Subject::Household(HouseholdId::parse("H0").unwrap()),
    )
}

/// A heartbeat event (no household) that moves event time to `day`.
fn tick(id: &str, day: i64) -> Event {
    event(
        id,
        day,
        Payload::DisasterDeclared(DisasterDeclared {
            hazard: Hazard::Other,
            level: DisasterLevel::Iv,
            region_codes: vec![],
            ends_at: None,
        }),
        Subject::Region(code(COUNTY)),
    )
}

fn day_date(day: i64) -> NaiveDate {
    date_of(day_of(at(day)))
}

#[test]
fn counts_distinct_households_at_every_level() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    let h0 = 0; // village 522425101201
    let h1 = 1;
    stage.observe(&dibao("a", 10), &[h0], &registry);
    stage.observe(&dibao("b", 10), &[h0], &registry); // same household, same day
    stage.observe(&dibao("c", 10), &[h1], &registry);
    stage.observe(&dibao("d", 11), &[h0], &registry); // another day
    let output = stage.flush(&registry, at(11));
    let village = code("522425101201");
    for region in [village, code(TOWNSHIP_A), code(COUNTY)] {
        assert_eq!(stage.count(region, RiskKind::LowIncome, day_date(10)), 2);
        assert_eq!(stage.count(region, RiskKind::AnyRisk, day_date(10)), 2);
        assert_eq!(stage.count(region, RiskKind::LowIncome, day_date(11)), 1);
    }
    assert_eq!(
        stage.count(code(TOWNSHIP_B), RiskKind::LowIncome, day_date(10)),
        0
    );
    // 3 regions × 2 kinds × 2 days, absolute values.
    assert_eq!(output.counts.len(), 12);
    assert!(
        output
            .counts
            .iter()
            .all(|r| r.count == if r.day == day_date(10) { 2 } else { 1 })
    );
}

#[test]
fn watermark_closes_days_and_never_goes_backwards() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    stage.observe(&dibao("a", 10), &[0], &registry);
    let first = stage.flush(&registry, at(10));
    let mark = first.watermark.expect("clock changed").watermark.unwrap();
    assert_eq!(mark, at(10) - Duration::days(3));
    assert_eq!(
        first.days_judged, 0,
        "days before the first event's are not series days"
    );
    // An older event does not move the watermark back; it becomes the origin and the
    // closed days from it are judged.
    stage.observe(&dibao("b", 2), &[1], &registry);
    let second = stage.flush(&registry, at(10) + Duration::hours(1));
    let state = second.watermark.expect("days judged");
    assert_eq!(state.watermark, Some(mark));
    assert_eq!(state.origin, Some(day_date(2)));
    assert_eq!(state.judged_through, Some(day_date(6)));
    assert_eq!(second.days_judged, 5);
    stage.observe(&dibao("c", 20), &[2], &registry);
    let third = stage.flush(&registry, at(20));
    let state = third.watermark.expect("moved");
    assert_eq!(state.watermark, Some(at(17)));
    assert_eq!(state.judged_through, Some(day_date(16)));
    assert_eq!(third.days_judged, 10);
    // Older events never move it back.
    stage.observe(&dibao("d", 1), &[3], &registry);
    stage.flush(&registry, at(20) + Duration::hours(1));
    assert_eq!(stage.watermark().watermark, Some(at(17)));
}

#[test]
fn idle_timeout_advances_the_watermark() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    stage.observe(&dibao("a", 10), &[0], &registry);
    stage.flush(&registry, at(10));
    // 23 hours later: still held back by the lateness allowance.
    assert!(
        stage
            .flush(&registry, at(10) + Duration::hours(23))
            .watermark
            .is_none()
    );
    // Idle for the timeout: the watermark jumps to the latest event time...
    let idle = stage.flush(&registry, at(10) + Duration::hours(24));
    assert_eq!(idle.watermark.unwrap().watermark, Some(at(10)));
    // ...and then follows the clock, never beyond it.
    let later = stage.flush(&registry, at(10) + Duration::hours(24 + 36));
    assert_eq!(
        later.watermark.unwrap().watermark,
        Some(at(10) + Duration::hours(36))
    );
    // A new event restarts the lateness allowance but the watermark stays.
    stage.observe(&dibao("b", 11), &[1], &registry);
    let resumed = stage.flush(&registry, at(12));
    assert_eq!(
        stage.watermark().watermark,
        Some(at(10) + Duration::hours(36))
    );
    assert!(resumed.watermark.is_some(), "max event time moved");
}

/// Feeds `per_day(day)` households of low-income applications in village 0 for days
/// `0..days`, one flush per day.
fn steady(stage: &mut RegionalStage, registry: &Registry, days: i64, per_day: impl Fn(i64) -> u32) {
    let mut n = 0;
    for day in 0..days {
        for k in 0..per_day(day) {
            n += 1;
            let household = (k as usize + day as usize * 7) % 40;
            stage.observe(&dibao(&format!("s{n}"), day), &[household as u32], registry);
        }
        stage.observe(&tick(&format!("t{day}"), day), &[], registry);
        stage.flush(registry, at(day));
    }
}

#[test]
fn a_late_event_corrects_a_judged_day_and_re_judges_it() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    // 120 quiet days of background: one application every 10 days in village 0.
    steady(&mut stage, &registry, 120, |d| u32::from(d % 10 == 0));
    let judged = stage.watermark().judged_through.unwrap();
    let target = 110; // judged, not yet an alarm
    assert!(day_date(target) <= judged);
    assert!(
        stage.signals().next().is_none(),
        "quiet background raises nothing"
    );
    // Eight late applications for day 110 from distinct households.
    for k in 0..8 {
        stage.observe(&dibao(&format!("late{k}"), target), &[20 + k], &registry);
    }
    let output = stage.flush(&registry, at(120) + Duration::hours(1));
    assert_eq!(output.late_events, 8);
    assert_eq!(output.late_corrections, 8);
    let village = code("522425101201");
    let row = output
        .counts
        .iter()
        .find(|r| r.region_code == village && r.kind == RiskKind::LowIncome)
        .expect("corrected row");
    assert_eq!((row.day, row.count), (day_date(target), 9));
    let signal = output
        .signals
        .iter()
        .find(|s| s.region_code == village && s.risk_kind == RiskKind::LowIncome)
        .expect("the corrected day alarms");
    assert_eq!(signal.day, day_date(target));
    assert_eq!(signal.methods, vec![Method::Cusum]);
    assert_eq!(signal.observed, 9.0);
    // The same event again (distinct-household dedupe): no correction.
    stage.observe(&dibao("late0-again", target), &[20], &registry);
    let again = stage.flush(&registry, at(120) + Duration::hours(2));
    assert_eq!((again.late_events, again.late_corrections), (1, 0));
    assert!(again.counts.is_empty());
}

#[test]
fn signals_clear_after_quiet_days_and_campaigns_open_once() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    // A surge of 12 households on day 100 after a quiet background.
    steady(&mut stage, &registry, 150, |d| {
        if d == 100 { 12 } else { u32::from(d % 15 == 0) }
    });
    let signals: Vec<&RegionalSignal> = stage
        .signals()
        .filter(|s| s.risk_kind == RiskKind::LowIncome)
        .collect();
    let village = signals
        .iter()
        .find(|s| s.region_code == code("522425101201"))
        .expect("village signal");
    assert_eq!(village.onset_day, day_date(100));
    assert_eq!(village.status, SignalStatus::Cleared, "14 quiet days later");
    assert!(village.levels_agreeing >= 2, "township and county agree");
    assert!(village.severity >= Level::Orange);
    assert!(village.campaign);
    assert!(signals.iter().all(|s| s.onset_day == day_date(100)));
}

#[test]
fn campaigns_cover_every_village_of_the_region() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    let declared = event(
        "flood",
        50,
        Payload::DisasterDeclared(DisasterDeclared {
            hazard: Hazard::Flood,
            level: DisasterLevel::Ii,
            region_codes: vec![code(TOWNSHIP_A), code("522425102201")],
            ends_at: Some(at(55)),
        }),
        Subject::Region(code(COUNTY)),
    );
    stage.observe(&declared, &[], &registry);
    let output = stage.flush(&registry, at(50));
    assert_eq!(output.signals.len(), 2);
    let township = output
        .signals
        .iter()
        .find(|s| s.region_code == code(TOWNSHIP_A))
        .unwrap();
    assert_eq!(township.households_affected, 120);
    assert_eq!(township.severity, Level::Orange);
    assert_eq!(township.methods, vec![Method::DisasterDeclared]);
    assert_eq!(township.evidence_until, day_date(55));
    assert!(township.campaign);
    let villages: Vec<String> = output
        .tasks
        .iter()
        .filter(|t| t.signal_id.as_deref() == Some(township.signal_id.as_str()))
        .map(|t| t.village_code.to_string())
        .collect();
    assert_eq!(villages, ["522425101201", "522425101202", "522425101203"]);
    assert!(output.tasks.iter().all(|t| t.kind == TaskKind::Campaign
        && t.household_id.is_none()
        && t.alert_id.is_none()
        && t.due_at == crate::domain::task::deadline(at(50), 15)));
    assert_eq!(output.tasks.len(), 4);
    // More evidence updates the same signal and opens no second campaign.
    stage.observe(&township_a_flood("flood-2", 51), &[], &registry);
    let again = stage.flush(&registry, at(51));
    assert!(again.tasks.is_empty());
    assert!(
        again
            .signals
            .iter()
            .all(|s| s.status == SignalStatus::Updated)
    );
}

fn disaster_declared(id: &str, day: i64, region: &str) -> Event {
    event(
        id,
        day,
        Payload::DisasterDeclared(DisasterDeclared {
            hazard: Hazard::Flood,
            level: DisasterLevel::Ii,
            region_codes: vec![code(region)],
            ends_at: None,
        }),
        Subject::Region(code(COUNTY)),
    )
}

/// Signals over one village — its township's, then the county's, then a restarted
/// stage's — open one campaign while the first still runs (`campaign_due_days` from
/// its signal's day, in event time), and a new one after it ends.
#[test]
fn one_campaign_per_village_while_it_runs() {
    let registry = registry();
    let due = settings().signals.campaign_due_days;
    let mut stage = RegionalStage::new(&settings());
    stage.observe(
        &disaster_declared("flood-a", 50, TOWNSHIP_A),
        &[],
        &registry,
    );
    let first = stage.flush(&registry, at(50));
    let villages_of = |tasks: &[ScreeningTask]| -> Vec<String> {
        tasks.iter().map(|t| t.village_code.to_string()).collect()
    };
    assert_eq!(
        villages_of(&first.tasks),
        ["522425101201", "522425101202", "522425101203"]
    );
    // The county's signal two days later: only the villages outside township A.
    stage.observe(
        &disaster_declared("flood-county", 52, COUNTY),
        &[],
        &registry,
    );
    let second = stage.flush(&registry, at(52));
    let county = second
        .signals
        .iter()
        .find(|s| s.region_code == code(COUNTY))
        .expect("a county signal");
    assert!(county.campaign, "the county signal is covered by campaigns");
    let opened = villages_of(&second.tasks);
    assert!(
        !opened.is_empty(),
        "villages outside township A get a campaign"
    );
    assert!(
        opened.iter().all(|v| !v.starts_with("522425101")),
        "township A's villages already run a campaign: {opened:?}"
    );
    // A stage restored from the signals and campaign tasks knows the running campaigns.
    let mut campaigns: Vec<ScreeningTask> = first.tasks.into_iter().chain(second.tasks).collect();
    let restore = |from: &RegionalStage, campaigns: &[ScreeningTask]| {
        let mut to = RegionalStage::new(&settings());
        to.restore_watermark(from.watermark().clone());
        for signal in from.signals() {
            to.restore_signal(signal.clone());
        }
        for task in campaigns {
            to.restore_campaign(task.village_code, task.due_at);
        }
        to.finish_restore();
        to
    };
    let mut restored = restore(&stage, &campaigns);
    // Township A's campaigns count 15 days from day 50, its signal's day.
    let last = 50 + due;
    restored.observe(
        &disaster_declared("flood-b", last, TOWNSHIP_B),
        &[],
        &registry,
    );
    restored.observe(
        &disaster_declared("flood-a2", last, TOWNSHIP_A),
        &[],
        &registry,
    );
    let third = restored.flush(&registry, at(last));
    assert!(
        villages_of(&third.tasks).is_empty(),
        "on the campaigns' last day no village opens another: {:?}",
        villages_of(&third.tasks)
    );
    // The day after township A's campaigns end, a new signal in one of its villages
    // (township A's own signal is still active, its campaign opened) opens a new one.
    campaigns.extend(third.tasks);
    let mut later = restore(&restored, &campaigns);
    later.observe(
        &disaster_declared("flood-v", last + 1, "522425101201"),
        &[],
        &registry,
    );
    let fourth = later.flush(&registry, at(last + 1));
    assert_eq!(villages_of(&fourth.tasks), ["522425101201"]);
}

/// A campaign task lists its village's households with risk events in the last
/// `campaign_recent_days` (30), most days with events first, then the most recent.
#[test]
fn campaign_tasks_list_households_with_recent_risk_events_first() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    // Village 101201: household 5 on days 30 and 45, household 2 on day 48, household 7
    // on day 10 (too long ago); village 101202: household 45 on day 40.
    for (n, (household, day)) in [(5, 30), (5, 45), (2, 48), (7, 10), (45, 40)]
        .into_iter()
        .enumerate()
    {
        stage.observe(&dibao(&format!("d{n}"), day), &[household], &registry);
    }
    stage.observe(&township_a_flood("flood", 50), &[], &registry);
    let output = stage.flush(&registry, at(50));
    let priority = |village: &str| -> Vec<String> {
        output
            .tasks
            .iter()
            .find(|t| t.village_code == code(village))
            .expect("a campaign task for the village")
            .priority_households
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(priority("522425101201"), ["H101201005", "H101201002"]);
    assert_eq!(priority("522425101202"), ["H101202005"]);
    assert!(priority("522425101203").is_empty());
}

/// A level II flood declared by the county for township A on `day`, open-ended.
fn township_a_flood(id: &str, day: i64) -> Event {
    event(
        id,
        day,
        Payload::DisasterDeclared(DisasterDeclared {
            hazard: Hazard::Flood,
            level: DisasterLevel::Ii,
            region_codes: vec![code(TOWNSHIP_A)],
            ends_at: None,
        }),
        Subject::Region(code(COUNTY)),
    )
}

#[test]
fn mass_layoff_and_failed_project_rules() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    // Four layoffs from one employer in township A on days 30–32: not yet.
    for k in 0..4u32 {
        stage.observe(
            &layoff(&format!("l{k}"), 30 + i64::from(k % 3), "E1"),
            &[k * 3],
            &registry,
        );
    }
    // Others from different employers do not add up.
    stage.observe(&layoff("x1", 31, "E2"), &[50], &registry);
    assert!(stage.flush(&registry, at(32)).signals.is_empty());
    // The fifth, in another village of the same township, six days after the first.
    stage.observe(&layoff("l5", 36, "E1"), &[45], &registry);
    let output = stage.flush(&registry, at(36));
    let mut regions: Vec<String> = output
        .signals
        .iter()
        .filter(|s| s.methods == vec![Method::MassLayoff])
        .map(|s| s.region_code.to_string())
        .collect();
    regions.sort();
    assert_eq!(regions, [COUNTY, TOWNSHIP_A]);
    let township = output
        .signals
        .iter()
        .find(|s| s.region_code == code(TOWNSHIP_A))
        .unwrap();
    assert_eq!((township.observed, township.day), (5.0, day_date(36)));
    assert_eq!(township.risk_kind, RiskKind::Unemployment);
    assert_eq!(township.severity, Level::Yellow);
    // A failed project with 3 households.
    let failure = event(
        "p1",
        40,
        Payload::IndustryProjectFailure(IndustryProjectFailure {
            project_id: "P1".into(),
            project_name: "茶园".into(),
            household_ids: vec![],
            loss_yuan: 1000.0,
        }),
        Subject::Region(code("522425101202")),
    );
    stage.observe(&failure, &[40, 41, 42], &registry);
    let output = stage.flush(&registry, at(40));
    let project = output
        .signals
        .iter()
        .find(|s| s.risk_kind == RiskKind::IndustryFailure)
        .expect("failed project signal");
    assert_eq!(project.region_code, code("522425101202"));
    assert_eq!(project.households_affected, 3);
}

#[test]
fn village_share_rule() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    // 5 % of 40 households = 2, but at least 5 households: four are not enough.
    for k in 0..4u32 {
        stage.observe(&dibao(&format!("v{k}"), 20 + i64::from(k)), &[k], &registry);
    }
    assert!(
        stage
            .flush(&registry, at(23))
            .signals
            .iter()
            .all(|s| s.methods != vec![Method::VillageShare])
    );
    stage.observe(&dibao("v5", 26), &[5], &registry);
    let output = stage.flush(&registry, at(26));
    let share = output
        .signals
        .iter()
        .find(|s| s.methods.contains(&Method::VillageShare))
        .expect("share reached");
    assert_eq!(share.region_code, code("522425101201"));
    assert_eq!(share.risk_kind, RiskKind::AnyRisk);
    assert_eq!(share.observed, 5.0);
    // 5/40 = 12.5 % is 2.5 times the 5 % share: orange.
    assert_eq!(share.severity, Level::Orange);
}

/// The store's part, in memory: what a restart gives back.
#[derive(Default)]
struct FakeStore {
    counts: BTreeMap<(RegionCode, RiskKind, NaiveDate), u32>,
    checkpoints: BTreeMap<(RegionCode, RiskKind), SeriesCheckpoint>,
    watermark: WatermarkState,
    signals: BTreeMap<(RegionCode, RiskKind), RegionalSignal>,
    campaigns: Vec<(RegionCode, DateTime<Utc>)>,
    events: Vec<(Event, Vec<HouseholdIdx>)>,
}

impl FakeStore {
    fn commit(&mut self, output: &RegionalOutput) {
        for row in &output.counts {
            self.counts
                .insert((row.region_code, row.kind, row.day), row.count);
        }
        for checkpoint in &output.checkpoints {
            self.checkpoints.insert(
                (checkpoint.region_code, checkpoint.kind),
                checkpoint.clone(),
            );
        }
        if let Some(state) = output.watermark.clone() {
            self.watermark = state;
        }
        for signal in &output.signals {
            // The episode is stored beside the document; JSON round trip as the store does.
            let mut back: RegionalSignal =
                serde_json::from_str(&serde_json::to_string(signal).unwrap()).unwrap();
            back.episode = signal.episode;
            self.signals
                .insert((signal.region_code, signal.risk_kind), back);
        }
        self.campaigns
            .extend(output.tasks.iter().map(|t| (t.village_code, t.due_at)));
    }

    fn restore(&self, registry: &Registry) -> RegionalStage {
        let mut stage = RegionalStage::new(&settings());
        stage.restore_watermark(self.watermark.clone());
        let from = stage.counts_needed_from();
        stage.restore_counts(
            self.counts
                .iter()
                .filter(|(k, _)| from.is_none_or(|f| k.2 >= f))
                .map(|(&(region_code, kind, day), &count)| CountRow {
                    region_code,
                    kind,
                    day,
                    count,
                }),
        );
        for checkpoint in self.checkpoints.values() {
            stage.restore_checkpoint(checkpoint.clone()).unwrap();
        }
        for signal in self.signals.values() {
            stage.restore_signal(signal.clone());
        }
        for &(village, due_at) in &self.campaigns {
            stage.restore_campaign(village, due_at);
        }
        let since = stage.events_needed_from();
        let held_after = stage.events_held_after();
        for (event, households) in &self.events {
            if since.is_some_and(|s| event.occurred_at < s)
                && held_after.is_none_or(|h| event.reported_at <= h)
            {
                continue;
            }
            let restored = RestoredEvent {
                event_id: event.event_id.clone(),
                occurred_at: event.occurred_at,
                reported_at: event.reported_at,
                person_key: None,
                households: households
                    .iter()
                    .map(|&h| registry.household(h).household_id.clone())
                    .collect(),
                region_code: match event.subject {
                    Subject::Region(region) => Some(region),
                    _ => None,
                },
                payload: Some(event.payload.clone()),
            };
            stage.restore_event(&restored, registry);
        }
        stage.finish_restore();
        stage
    }
}

/// A day of mixed events, deterministic in `day`.
fn day_events(day: i64) -> Vec<(Event, Vec<HouseholdIdx>)> {
    let mut out = Vec::new();
    let n = (day * 7919 % 5) as u32;
    for k in 0..n {
        let household = ((day as u32) * 13 + k * 29) % 240;
        out.push((
            dibao(&format!("d{day}-{k}"), day - i64::from(k % 3)),
            vec![household],
        ));
    }
    if day % 9 == 0 {
        for k in 0..3u32 {
            out.push((
                layoff(&format!("u{day}-{k}"), day, "E9"),
                vec![(day as u32 + k * 50) % 240],
            ));
        }
    }
    if day == 140 {
        for k in 0..10u32 {
            out.push((dibao(&format!("surge{k}"), day), vec![100 + k]));
        }
    }
    out.push((tick(&format!("t{day}"), day), vec![]));
    out
}

/// A restart anywhere continues exactly: the restored stage produces the same outputs
/// as the one that kept running.
#[test]
fn restore_continues_exactly() {
    let registry = registry();
    let mut running = RegionalStage::new(&settings());
    let mut store = FakeStore::default();
    for day in 0..130 {
        for (event, households) in day_events(day) {
            running.observe(&event, &households, &registry);
            store.events.push((event, households));
        }
        let output = running.flush(&registry, at(day));
        store.commit(&output);
    }
    let mut restored = store.restore(&registry);
    assert_eq!(restored.watermark(), running.watermark());
    for day in 130..200 {
        // Include late events (three days back) in the comparison.
        for (event, households) in day_events(day) {
            running.observe(&event, &households, &registry);
            restored.observe(&event, &households, &registry);
        }
        let a = running.flush(&registry, at(day));
        let b = restored.flush(&registry, at(day));
        assert_eq!(a, b, "day {day}");
    }
    assert!(
        running.signals().count() > 0,
        "the surge and layoffs signalled"
    );
}

/// What the store holds of a run: the latest snapshot of every signal and task, the
/// counts, the late events (processing-time stamps left out, and whether an active
/// signal's snapshot says raised or updated).
#[derive(Debug, Default, PartialEq)]
struct Held {
    signals: BTreeMap<String, String>,
    tasks: BTreeMap<String, String>,
    counts: BTreeMap<(RegionCode, RiskKind, NaiveDate), u32>,
    late: u64,
}

impl Held {
    /// The first differences from `other`, for a readable failure.
    fn differences(&self, other: &Held) -> Vec<String> {
        fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
            what: &str,
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
            out: &mut Vec<String>,
        ) {
            for (key, value) in a {
                if b.get(key) != Some(value) {
                    out.push(format!("{what} {key:?}: {value:?} / {:?}", b.get(key)));
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(format!("{what} {key:?}: None / {value:?}"));
                }
            }
        }
        let mut out = Vec::new();
        diff("signal", &self.signals, &other.signals, &mut out);
        diff("task", &self.tasks, &other.tasks, &mut out);
        diff("count", &self.counts, &other.counts, &mut out);
        if self.late != other.late {
            out.push(format!("late {} / {}", self.late, other.late));
        }
        out.truncate(8);
        out
    }

    fn take(&mut self, output: &RegionalOutput) {
        for s in &output.signals {
            self.signals.insert(
                s.signal_id.clone(),
                // Raised or updated says which snapshot first showed it, not what
                // was judged: active or cleared is compared.
                format!(
                    "{} {} {:?} {} {} {} {} {:?} {} {}",
                    s.region_code,
                    s.risk_kind,
                    s.severity,
                    if s.is_active() { "active" } else { "cleared" },
                    s.onset_day,
                    s.day,
                    s.evidence_until,
                    s.methods,
                    s.levels_agreeing,
                    s.campaign
                ),
            );
        }
        for t in &output.tasks {
            self.tasks.insert(
                t.task_id.clone(),
                format!(
                    "{} {:?} {:?} {}",
                    t.village_code, t.level, t.priority_households, t.due_at
                ),
            );
        }
        for row in &output.counts {
            self.counts
                .insert((row.region_code, row.kind, row.day), row.count);
        }
        self.late += output.late_events;
    }
}

/// A department-like stream: the mixed days, a flood declared for township A and a
/// village surge, each event reported 0 to about 8 days after it occurred (beyond the
/// allowed lateness for some), in the order they were reported.
fn reported_stream() -> Vec<(Event, Vec<HouseholdIdx>)> {
    let mut events: Vec<(Event, Vec<HouseholdIdx>)> = (0..200).flat_map(day_events).collect();
    events.push((township_a_flood("flood", 100), vec![]));
    for k in 0..12u32 {
        events.push((dibao(&format!("village-surge{k}"), 170), vec![40 + k]));
    }
    for (i, (event, _)) in events.iter_mut().enumerate() {
        let hours = (i as u64).wrapping_mul(2_654_435_761) % 200;
        event.reported_at = event.occurred_at + Duration::hours(hours as i64);
    }
    events.sort_by_key(|(event, _)| event.reported_at);
    events
}

/// What a closed day holds is a function of the events alone, once the first day is
/// judged (until then, what arrived counts): after the same first batch, one event per
/// batch, batches of 37, the rest as one backlog, and batches of 50 with a restart
/// before the first judged day and another in the middle give the same signals,
/// campaign tasks, counts and late events.
#[test]
fn closed_days_do_not_depend_on_batches_or_restarts() {
    let registry = registry();
    let events = reported_stream();
    let first_batch = events
        .iter()
        .take_while(|(event, _)| event.reported_at < at(12))
        .count();
    let (first, rest) = events.split_at(first_batch);
    let now = at(0);
    let run = |batch: usize| -> Held {
        let mut stage = RegionalStage::new(&settings());
        let mut held = Held::default();
        for part in std::iter::once(first).chain(rest.chunks(batch)) {
            for (event, households) in part {
                stage.observe(event, households, &registry);
            }
            held.take(&stage.flush(&registry, now));
        }
        held
    };
    let one_by_one = run(1);
    assert!(
        one_by_one.signals.len() >= 3,
        "layoffs, the flood and the surge signal: {:#?}",
        one_by_one.signals
    );
    assert!(!one_by_one.tasks.is_empty(), "campaigns open");
    assert!(one_by_one.late > 0, "some events are reported late");
    let same = |held: &Held, what: &str| {
        let differences = held.differences(&one_by_one);
        assert!(
            differences.is_empty(),
            "{what}:\n{}",
            differences.join("\n")
        );
    };
    same(&run(37), "batches of 37");
    same(&run(rest.len()), "one backlog");

    let mut stage = RegionalStage::new(&settings());
    let mut store = FakeStore::default();
    let mut held = Held::default();
    let early = first
        .iter()
        .take_while(|(event, _)| event.reported_at < at(1))
        .count();
    let (before, after) = first.split_at(early);
    let parts: Vec<&[(Event, Vec<HouseholdIdx>)]> =
        [before, after].into_iter().chain(rest.chunks(50)).collect();
    for (n, part) in parts.iter().enumerate() {
        if n == 1 {
            assert_eq!(stage.watermark().judged_through, None);
            stage = store.restore(&registry);
        }
        if n == parts.len() / 2 {
            stage = store.restore(&registry);
            assert!(stage.held_count() > 0, "the restart holds events again");
        }
        for (event, households) in part.iter() {
            stage.observe(event, households, &registry);
            store.events.push((event.clone(), households.clone()));
        }
        let output = stage.flush(&registry, now);
        store.commit(&output);
        held.take(&output);
    }
    same(&held, "batches of 50 and two restarts");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Counts do not depend on the arrival order within the lateness bound, and the
    /// watermark never goes backwards whatever the order.
    #[test]
    fn counts_are_order_independent(
        seed in any::<u64>(),
        batches in 1usize..8,
    ) {
        let registry = registry();
        let mut events: Vec<(Event, Vec<HouseholdIdx>)> = (30..60).flat_map(day_events).collect();
        // Shuffle within the lateness bound: sort by day plus a jitter of up to 3 days.
        let mut state = seed | 1;
        let mut jitter = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 72) as i64
        };
        let mut keyed: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, (e, _))| ((e.occurred_at - at(0)).num_hours() + jitter(), i))
            .collect();
        keyed.sort();
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut in_order = RegionalStage::new(&settings());
        let mut shuffled = RegionalStage::new(&settings());
        for (event, households) in &events {
            in_order.observe(event, households, &registry);
        }
        in_order.flush(&registry, at(60));
        let chunk = order.len().div_ceil(batches);
        let mut last_mark = None;
        for (b, part) in order.chunks(chunk).enumerate() {
            for &i in part {
                let (event, households) = &events[i];
                shuffled.observe(event, households, &registry);
            }
            shuffled.flush(&registry, at(30) + Duration::hours(b as i64));
            let mark = shuffled.watermark().watermark;
            prop_assert!(mark >= last_mark);
            last_mark = mark;
        }
        events.sort_by_key(|(e, _)| e.occurred_at);
        for day in 25..61 {
            for region in [code("522425101201"), code(TOWNSHIP_A), code(TOWNSHIP_B), code(COUNTY)] {
                for kind in [RiskKind::LowIncome, RiskKind::Unemployment, RiskKind::AnyRisk] {
                    prop_assert_eq!(
                        in_order.count(region, kind, day_date(day)),
                        shuffled.count(region, kind, day_date(day))
                    );
                }
            }
        }
    }
}

#[test]
fn imported_history_is_persisted_and_feeds_the_baselines() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    let township = code(TOWNSHIP_A);
    stage.import_history((0..60).map(|day| CountRow {
        region_code: township,
        kind: RiskKind::LowIncome,
        day: day_date(day),
        count: 2,
    }));
    stage.observe(&dibao("a", 60), &[0], &registry);
    let output = stage.flush(&registry, at(60));
    assert_eq!(
        output.counts.len(),
        60 + 3 * 2,
        "imported rows and the event's"
    );
    assert_eq!(output.watermark.unwrap().origin, Some(day_date(0)));
    assert_eq!(stage.count(township, RiskKind::LowIncome, day_date(30)), 2);
    assert_eq!(stage.count(township, RiskKind::LowIncome, day_date(60)), 1);
}

#[test]
fn end_of_input_closes_the_days_before_the_latest_event() {
    let registry = registry();
    let mut stage = RegionalStage::new(&settings());
    stage.observe(&dibao("a", 5), &[0], &registry);
    stage.observe(&dibao("b", 10), &[1], &registry);
    stage.flush(&registry, at(10));
    assert_eq!(stage.watermark().judged_through, Some(day_date(6)));
    stage.end_of_input();
    let output = stage.flush(&registry, at(10) + Duration::minutes(1));
    assert_eq!(output.watermark.unwrap().watermark, Some(at(10)));
    assert_eq!(stage.watermark().judged_through, Some(day_date(9)));
}

/// Farrington Flexible in the stream: six years of imported township history, then a week
/// of surging applications: the week's Sunday raises a signal with the weekly sums, and
/// the signal's evidence is the Farrington bound, not a daily one.
#[test]
fn farrington_judges_closed_weeks_on_imported_history() {
    let registry = registry();
    let mut settings = settings();
    settings.village.methods = vec![];
    settings.county.methods = vec![];
    settings.township.methods = vec![Method::FarringtonFlexible];
    let mut stage = RegionalStage::new(&settings);
    let township = code(TOWNSHIP_A);
    // Background about 1.4 a week, deterministic.
    let background = |day: i64| u32::from((day.rem_euclid(97) * 31 + 7) % 5 == 0);
    stage.import_history(
        (-2200..0)
            .filter(|&d| background(d) > 0)
            .map(|day| CountRow {
                region_code: township,
                kind: RiskKind::LowIncome,
                day: day_date(day),
                count: background(day),
            }),
    );
    // 2024-01-01 is a Monday: days 0..=6 are one week, ending on Sunday 2024-01-07.
    assert!(super::super::series::is_week_end(day_from_date(day_date(
        6
    ))));
    let mut n = 0;
    for day in 0..7 {
        for k in 0..3 {
            n += 1;
            stage.observe(
                &dibao(&format!("w{n}"), day),
                &[k + 3 * day as u32],
                &registry,
            );
        }
    }
    stage.observe(&tick("t", 10), &[], &registry);
    let output = stage.flush(&registry, at(10));
    let signal = output
        .signals
        .iter()
        .filter(|s| s.region_code == township && s.risk_kind == RiskKind::LowIncome)
        .max_by_key(|s| s.day)
        .expect("the surging week alarms");
    assert_eq!(signal.methods, vec![Method::FarringtonFlexible]);
    assert_eq!(signal.day, day_date(6));
    assert_eq!(signal.observed, 21.0, "the week's households");
    let bound = signal.upper_bound.expect("a bound");
    assert!((2.0..21.0).contains(&bound), "{bound}");
    // The same week without the surge: no Farrington signal that week.
    let mut quiet = RegionalStage::new(&settings);
    quiet.import_history(
        (-2200..0)
            .filter(|&d| background(d) > 0)
            .map(|day| CountRow {
                region_code: township,
                kind: RiskKind::LowIncome,
                day: day_date(day),
                count: background(day),
            }),
    );
    quiet.observe(&dibao("q", 3), &[0], &registry);
    quiet.observe(&tick("t", 10), &[], &registry);
    let output = quiet.flush(&registry, at(10));
    assert!(
        output
            .signals
            .iter()
            .all(|s| s.day < day_date(0) || s.risk_kind != RiskKind::LowIncome),
        "{:?}",
        output.signals
    );
}

/// The scan in the stream: background applications spread over all six villages for
/// 80 days, then one village's surge over two days: a `scan` signal at that village (the
/// test registry has no coordinates: hierarchy zones). Without the surge, none.
#[test]
fn the_scan_signals_a_village_cluster_and_not_the_background() {
    let registry = registry();
    let mut settings = settings();
    settings.village.methods = vec![];
    settings.township.methods = vec![];
    settings.county.methods = vec![];
    assert!(settings.scan.enabled);
    let run = |surge: bool| {
        let mut stage = RegionalStage::new(&settings);
        let mut n = 0;
        for day in 0..84 {
            // About one application a day somewhere in the county.
            let household = ((day * 37 + 11) % 240) as u32;
            if day % 4 != 3 {
                n += 1;
                stage.observe(&dibao(&format!("b{n}"), day), &[household], &registry);
            }
            if surge && (78..80).contains(&day) {
                for k in 0..5 {
                    n += 1;
                    let household = 40 + k + 5 * (day as u32 - 78); // village 522425101202
                    stage.observe(&dibao(&format!("s{n}"), day), &[household], &registry);
                }
            }
            stage.observe(&tick(&format!("t{day}"), day), &[], &registry);
            stage.flush(&registry, at(day));
        }
        stage
            .signals()
            .filter(|s| s.methods.contains(&Method::Scan))
            .cloned()
            .collect::<Vec<_>>()
    };
    let found = run(true);
    let signal = found
        .iter()
        .find(|s| s.risk_kind == RiskKind::LowIncome)
        .expect("the cluster is signalled");
    assert_eq!(signal.region_code, code("522425101202"), "{signal:?}");
    assert!(signal.day >= day_date(78) && signal.day <= day_date(80 + 6));
    assert!(
        signal.reason.contains("recurrence interval"),
        "{}",
        signal.reason
    );
    assert!(run(false).is_empty(), "background only: no scan signal");
}
