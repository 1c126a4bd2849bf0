//! The regional stage, second after the household rules: accepted events -> distinct
//! household counts per (region, risk kind, CST day) at every level of the hierarchy ->
//! a watermark that closes days -> the level's detectors judge each closed day (and
//! re-judge days late events change) -> systemic rules -> signals and campaign tasks.
//! Synchronous, no I/O: [`RegionalOutput`] is what the store commits with the batch.
//! Fails only when restoring a corrupt checkpoint ([`RegionalError`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::batch::{
    CountRow, LaneClock, LaneProgress, RegionalOutput, RestoredEvent, SeriesCheckpoint,
    WatermarkState,
};
use crate::domain::event::{Event, Payload, Subject};
use crate::domain::ids::{RegionCode, RegionLevel, stable_id};
use crate::domain::registry::{HouseholdIdx, Registry};
use crate::domain::signal::{Method, RegionalSignal, RiskKind};
use crate::domain::task::{Budget, NewTask, ScreeningTask, TaskKind};

use super::cusum::CusumState;
use super::ears::{DetectError, Judgement};
use super::scan::{Scan, Unit, zones};
use super::series::{
    DailyCounts, Day, Epoch, EpochModel, LevelDetectors, date_of, day_end, day_from_date, day_of,
    method_bit,
};
use super::settings::DetectSettings;
use super::signals::{
    Finding, SeriesKey, SignalBook, detector_severity, disaster_severity, rule_severity,
};
use super::systemic::{DailyHouseholds, add_household, classify, prune, windows_reaching};

/// Why state could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionalError {
    /// A stored series checkpoint is unusable (a bug or a hand-edited database).
    #[error("series checkpoint {region}/{kind} is corrupt: {reason}")]
    CorruptCheckpoint {
        /// Region.
        region: RegionCode,
        /// Kind.
        kind: RiskKind,
        /// What is wrong.
        reason: String,
    },
    /// The settings name a detector with invalid parameters (caught by the config check).
    #[error(transparent)]
    Detector(#[from] DetectError),
}

/// A series' detector state as its checkpoint document holds it (the same shape the
/// store has always kept, so older stores restore).
#[derive(Debug, Serialize, Deserialize)]
struct StoredSeries {
    region_code: RegionCode,
    kind: RiskKind,
    epochs: Vec<Epoch>,
}

fn checkpoint(key: SeriesKey, epochs: &[Epoch]) -> SeriesCheckpoint {
    let stored = StoredSeries {
        region_code: key.region,
        kind: key.kind,
        epochs: epochs.to_vec(),
    };
    SeriesCheckpoint {
        region_code: key.region,
        kind: key.kind,
        // Epochs hold finite numbers and dates only: serialising them cannot fail.
        document: serde_json::to_string(&stored).unwrap_or_default(),
    }
}

/// One series in memory.
#[derive(Debug, Default)]
struct Series {
    counts: BTreeMap<Day, u32>,
    /// CUSUM periods from the previous one on, oldest first.
    epochs: Vec<Epoch>,
    /// S after the last judged day.
    statistic: f64,
    /// Alarm masks of the judged days from `alarms_start`.
    alarms: VecDeque<u8>,
    alarms_start: Day,
    /// Earliest day to re-judge (a late event changed it, or the series is new).
    dirty_from: Option<Day>,
    checkpoint_dirty: bool,
}

impl Series {
    fn alarm_bits(&self, day: Day) -> u8 {
        usize::try_from(day - self.alarms_start)
            .ok()
            .and_then(|i| self.alarms.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn set_alarm_bits(&mut self, day: Day, bits: u8) {
        if self.alarms.is_empty() {
            self.alarms_start = day;
        }
        if day < self.alarms_start {
            for _ in day..self.alarms_start {
                self.alarms.push_front(0);
            }
            self.alarms_start = day;
        }
        let index = (day - self.alarms_start) as usize;
        if self.alarms.len() <= index {
            self.alarms.resize(index + 1, 0);
        }
        self.alarms[index] = bits;
    }

    fn epoch_index(&self, start: Day) -> Option<usize> {
        self.epochs
            .iter()
            .position(|e| day_from_date(e.start) == start)
    }
}

/// The regional stage with its state. See the module docs for the flow and
/// `config/default.toml` `[detect]` for every parameter.
///
/// Series kinds ([`RiskKind::SERIES`]): `unemployment`, `low_income` (低保/特困
/// applied), `illness` (serious illness), `disability` (grade 1–2), `disaster`
/// (household impact with loss or damage), `housing` (rated C/D), `dropout`, and
/// `any_risk` (any of them): each counts distinct households per CST day, at the
/// household's village, township and county. Events the registry cannot place
/// (unmatched) count nowhere (their village is unknown); water outages are not counted.
///
/// Lifecycle per batch: [`observe`](Self::observe) every accepted event, then
/// [`flush`](Self::flush) once. Once a day has been judged, an event reported after
/// the next day's end plus the allowed lateness waits (held) until that day is
/// judged, so that each day's first judgement, and what follows from it at its close,
/// is a function of the events, whatever the batches, inputs or restarts. At start-up: `restore_watermark`, `restore_counts`,
/// `restore_checkpoint`, `restore_signal`, `restore_campaign`, `restore_event`,
/// `finish_restore`, in that order.
pub struct RegionalStage {
    settings: DetectSettings,
    /// Village, township, county.
    detectors: [LevelDetectors; 3],
    /// The space–time scan, when enabled.
    scan: Option<Scan>,
    clock: WatermarkState,
    progressed: bool,
    /// The input ended: the next flush closes every day before the latest event's.
    input_ended: bool,
    clock_dirty: bool,
    /// The first day anything was counted for (the origin, once a day is judged).
    min_day_seen: Option<Day>,
    series: BTreeMap<SeriesKey, Series>,
    /// Distinct households per (region, kind) and day, for the retained days.
    households: HashMap<SeriesKey, DailyHouseholds>,
    /// Unemployment registrations per (area, employer) and day.
    layoffs: HashMap<(RegionCode, String), DailyHouseholds>,
    touched_layoffs: BTreeMap<(RegionCode, String), (Day, Day)>,
    touched_villages: BTreeMap<RegionCode, (Day, Day)>,
    /// Findings of the immediate rules waiting for the flush.
    pending: Vec<Finding>,
    signals: SignalBook,
    /// Per village, the last day of its latest campaign (its signal's day plus
    /// `campaign_due_days`): a signal over a village whose campaign still runs opens
    /// no second one.
    campaigns: BTreeMap<RegionCode, Day>,
    dirty_counts: BTreeSet<(SeriesKey, Day)>,
    /// Accepted events reported after the next day's close (its end plus the allowed
    /// lateness), by report time: they count once that day is judged, so that what a
    /// day's first judgement counts depends on the events alone, never on how they
    /// were batched or spread over partitions.
    held: BTreeMap<(DateTime<Utc>, u64), Held>,
    held_seq: u64,
    /// Per village, its households with risk events from the recent days before the
    /// last judged day on, as counted when that day was judged: the priority
    /// households of the campaigns opened until the next day is judged.
    recent: HashMap<RegionCode, DailyHouseholds>,
    late_events: u64,
    late_corrections: u64,
}

/// An accepted event waiting to be counted (see `RegionalStage::held`).
#[derive(Debug, Clone)]
struct Held {
    event: Event,
    households: Vec<HouseholdIdx>,
}

/// The last day (CST) of a period that runs out at `due_at`.
fn campaign_last_day(due_at: DateTime<Utc>) -> Day {
    day_of(due_at - Duration::seconds(1))
}

/// The villages a campaign over `region` screens: the region itself when it is a
/// village, else every village of it with registry households.
fn campaign_villages(region: RegionCode, registry: &Registry) -> BTreeSet<RegionCode> {
    if region.level() == RegionLevel::Village {
        BTreeSet::from([region])
    } else {
        registry
            .households_within(region)
            .into_iter()
            .map(|h| registry.household(h).region_code)
            .collect()
    }
}

fn level_index(level: RegionLevel) -> usize {
    match level {
        RegionLevel::Village => 0,
        RegionLevel::Township => 1,
        _ => 2,
    }
}

/// The scan of day `t` over every county's villages and every kind with a series: the
/// findings of clusters at least as rare as the configured recurrence interval, at the
/// cluster's village, township (all its villages in one) or county. Needs a full study
/// window since `origin`.
fn scan_findings(
    scan: &Scan,
    series: &BTreeMap<SeriesKey, Series>,
    registry: &Registry,
    origin: Day,
    t: Day,
) -> Vec<Finding> {
    let settings = scan.settings();
    let study = settings.study_days as Day;
    let first = t - study + 1;
    if first < origin {
        return Vec::new();
    }
    let mut by_county: BTreeMap<RegionCode, Vec<(RegionCode, usize)>> = BTreeMap::new();
    for (village, households) in registry.villages() {
        by_county
            .entry(village.county())
            .or_default()
            .push((village, households));
    }
    let mut findings = Vec::new();
    for (county, villages) in by_county {
        if villages.len() < 2 {
            continue;
        }
        let mut townships: Vec<RegionCode> = villages.iter().map(|(v, _)| v.township()).collect();
        townships.dedup();
        let units: Vec<Unit> = villages
            .iter()
            .map(|&(village, households)| Unit {
                position: registry
                    .region(village)
                    .and_then(|r| r.longitude.zip(r.latitude)),
                households,
                township: townships.binary_search(&village.township()).unwrap_or(0),
            })
            .collect();
        let mut zones_built = None;
        for (k, &kind) in RiskKind::SERIES.iter().enumerate() {
            let counts: Vec<Vec<u32>> = villages
                .iter()
                .map(|&(village, _)| {
                    let mut days = vec![0u32; settings.study_days];
                    if let Some(one) = series.get(&SeriesKey {
                        region: village,
                        kind,
                    }) {
                        for (&day, &count) in one.counts.range(first..=t) {
                            days[(day - first) as usize] = count;
                        }
                    }
                    days
                })
                .collect();
            let recent = settings.study_days - settings.max_days;
            if counts.iter().all(|c| c[recent..].iter().all(|&v| v == 0)) {
                continue;
            }
            let zones =
                zones_built.get_or_insert_with(|| zones(&units, settings.max_household_share));
            let stream = (u64::from(t as u32) << 32)
                ^ ((k as u64) << 24)
                ^ county.to_string().parse::<u64>().unwrap_or(0);
            let Some(cluster) = scan.analyse(zones, &counts, stream, true) else {
                continue;
            };
            if cluster.recurrence_days < settings.recurrence_days {
                continue;
            }
            let members: Vec<RegionCode> = cluster.units.iter().map(|&u| villages[u].0).collect();
            let region = match members.as_slice() {
                [one] => *one,
                [first_member, rest @ ..]
                    if rest.iter().all(|v| v.township() == first_member.township()) =>
                {
                    first_member.township()
                }
                _ => county,
            };
            let listed: Vec<String> = members.iter().map(|v| v.to_string()).collect();
            findings.push(Finding {
                key: SeriesKey { region, kind },
                method: Method::Scan,
                day: t,
                until: t,
                observed: cluster.observed,
                expected: Some(cluster.expected),
                upper_bound: None,
                severity: rule_severity(cluster.recurrence_days / settings.recurrence_days),
                levels_agreeing: 1,
                households: 0,
                reason: format!(
                    "scan: {} cases of {kind} in village(s) {} over the {} day(s) to {}, expected {:.2}; recurrence interval {:.0} days (p = {:.4}, {} replicates)",
                    cluster.observed,
                    listed.join(" "),
                    cluster.days,
                    date_of(t),
                    cluster.expected,
                    cluster.recurrence_days,
                    cluster.p_value,
                    cluster.replicates
                ),
            });
        }
    }
    findings
}

/// The village, township and county of a village code.
fn chain(village: RegionCode) -> [RegionCode; 3] {
    [village, village.township(), village.county()]
}

impl RegionalStage {
    /// A stage with empty state. The settings are checked at load time, so building the
    /// detectors cannot fail except on a bug (then the level runs without detectors).
    pub fn new(settings: &DetectSettings) -> Self {
        let target = settings.target_arl0_days(RiskKind::SERIES.len());
        let build = |level: RegionLevel| {
            LevelDetectors::new(settings, level, &settings.level(level).methods, target).unwrap_or(
                LevelDetectors {
                    level,
                    ears: Vec::new(),
                    cusum: None,
                    farrington: None,
                },
            )
        };
        RegionalStage {
            settings: settings.clone(),
            detectors: [
                build(RegionLevel::Village),
                build(RegionLevel::Township),
                build(RegionLevel::County),
            ],
            scan: settings
                .scan
                .enabled
                .then(|| Scan::try_new(&settings.scan).ok())
                .flatten(),
            clock: WatermarkState::default(),
            progressed: false,
            input_ended: false,
            clock_dirty: false,
            min_day_seen: None,
            series: BTreeMap::new(),
            households: HashMap::new(),
            layoffs: HashMap::new(),
            touched_layoffs: BTreeMap::new(),
            touched_villages: BTreeMap::new(),
            pending: Vec::new(),
            signals: SignalBook::default(),
            campaigns: BTreeMap::new(),
            dirty_counts: BTreeSet::new(),
            held: BTreeMap::new(),
            held_seq: 0,
            recent: HashMap::new(),
            late_events: 0,
            late_corrections: 0,
        }
    }

    /// The clock.
    pub fn watermark(&self) -> WatermarkState {
        self.clock.clone()
    }

    /// Declares the inputs of this run (file paths, assigned partitions): inputs not
    /// among them no longer hold the watermark, and new ones hold it from the start —
    /// until their first events, the watermark cannot pass them. Known inputs keep their
    /// latest event time.
    pub fn declare_lanes<'a>(&mut self, lanes: impl IntoIterator<Item = &'a str>) {
        let mut declared = std::collections::BTreeMap::new();
        for lane in lanes {
            let clock = self.clock.lanes.get(lane).copied().unwrap_or_default();
            declared.insert(
                lane.to_string(),
                LaneClock {
                    holding: true,
                    ..clock
                },
            );
        }
        if declared != self.clock.lanes {
            self.clock.lanes = declared;
            self.clock_dirty = true;
        }
    }

    /// Takes inputs' progress: whether each holds the watermark and its latest event
    /// time (never moved back). Takes effect at the next [`RegionalStage::flush`].
    pub fn update_lanes<'a>(&mut self, lanes: impl IntoIterator<Item = &'a LaneProgress>) {
        for progress in lanes {
            let clock = self.clock.lanes.entry(progress.lane.clone()).or_default();
            let max_event_time = clock.max_event_time.max(progress.max_event_time);
            let next = LaneClock {
                holding: progress.holding,
                max_event_time,
            };
            if *clock != next {
                *clock = next;
                self.clock_dirty = true;
            }
        }
    }

    /// The latest signal of every (region, kind) (tests and the API).
    pub fn signals(&self) -> impl Iterator<Item = &RegionalSignal> {
        self.signals.all()
    }

    /// The count of a series on a day (tests and the report).
    pub fn count(&self, region: RegionCode, kind: RiskKind, day: NaiveDate) -> u32 {
        self.series
            .get(&SeriesKey { region, kind })
            .and_then(|s| s.counts.get(&day_from_date(day)).copied())
            .unwrap_or(0)
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn judged_through(&self) -> Option<Day> {
        self.clock.judged_through.map(day_from_date)
    }

    fn refit_days(&self) -> Day {
        self.settings.cusum.refit_days as Day
    }

    /// First day that late events can re-judge: the start of the previous refit period.
    fn horizon_start(&self) -> Option<Day> {
        let judged = self.judged_through()?;
        let refit = self.refit_days();
        Some(judged - judged.rem_euclid(refit) - refit)
    }

    /// First day whose (household, kind) records are kept.
    fn dedupe_from(&self) -> Option<Day> {
        Some(self.judged_through()? - self.settings.dedupe_days as Day)
    }

    /// The earliest day whose count rows the store must give back at start-up (None:
    /// all of them, nothing has been judged). Call after [`RegionalStage::restore_watermark`].
    pub fn counts_needed_from(&self) -> Option<NaiveDate> {
        let horizon = self.horizon_start()?;
        let mut back =
            self.settings.cusum.history_days as Day + self.settings.ears.baseline_days as Day + 5;
        if self.detectors.iter().any(|d| d.farrington.is_some()) {
            // Farrington's weeks, and a week more for a re-judged week end.
            back = back.max(self.settings.farrington.history_days() as Day + 7);
        }
        Some(date_of(horizon - back))
    }

    /// The earliest event time whose events the store must give back at start-up (for
    /// the distinct-household records and the rule windows). None: every event.
    pub fn events_needed_from(&self) -> Option<DateTime<Utc>> {
        self.dedupe_from().map(|day| day_end(day - 1))
    }

    /// The report time after which committed events are still held, not counted (they
    /// must be restored whatever their event time). None: nothing is held. Call after
    /// [`RegionalStage::restore_watermark`].
    pub fn events_held_after(&self) -> Option<DateTime<Utc>> {
        self.release_bound()
    }

    /// Counts an accepted event (after dedupe by event id). `households` are the
    /// registry households it resolved to: one for person and household subjects,
    /// several for an industry-project failure, none for region events or unmatched
    /// ones. Takes effect at the next [`RegionalStage::flush`]. An event reported after
    /// the close of the next day to judge (its end plus the allowed lateness) is held
    /// and counted once that day is judged; the rules that need no count (a declared
    /// disaster, a failed industry project) take it at once.
    pub fn observe(&mut self, event: &Event, households: &[HouseholdIdx], registry: &Registry) {
        if self
            .clock
            .max_event_time
            .is_none_or(|max| event.occurred_at > max)
        {
            self.clock.max_event_time = Some(event.occurred_at);
            self.progressed = true;
            self.clock_dirty = true;
        }
        if self
            .release_bound()
            .is_some_and(|bound| event.reported_at > bound)
        {
            self.hold(event, households);
        } else {
            self.take(event, households, registry);
        }
    }

    /// Takes an event in: the rules that need no count (a declared disaster, a failed
    /// industry project), then its counts.
    fn take(&mut self, event: &Event, households: &[HouseholdIdx], registry: &Registry) {
        let day = day_of(event.occurred_at);
        self.min_day_seen = Some(self.min_day_seen.map_or(day, |d| d.min(day)));
        match &event.payload {
            Payload::DisasterDeclared(declared) => {
                let until = declared.ends_at.map_or(day, |end| day_of(end).max(day));
                // Regions above the county (a city, a province) are signalled at the
                // registry's counties within them: the hierarchy yujing monitors.
                let mut regions: BTreeSet<RegionCode> = BTreeSet::new();
                for &region in &declared.region_codes {
                    if region.level() >= RegionLevel::County {
                        regions.insert(region);
                    } else {
                        regions.extend(
                            registry
                                .households_within(region)
                                .into_iter()
                                .map(|h| registry.household(h).region_code.county()),
                        );
                    }
                }
                for region in regions {
                    let affected = registry.households_within(region).len() as u64;
                    self.pending.push(Finding {
                        key: SeriesKey {
                            region,
                            kind: RiskKind::Disaster,
                        },
                        method: Method::DisasterDeclared,
                        day,
                        until,
                        observed: affected as f64,
                        expected: None,
                        upper_bound: None,
                        severity: disaster_severity(declared.level),
                        levels_agreeing: 1,
                        households: affected,
                        reason: format!(
                            "{} declared ({} response, {}): {affected} registry households in the region",
                            declared.hazard,
                            declared.level,
                            event.event_id
                        ),
                    });
                }
            }
            Payload::IndustryProjectFailure(failure) => {
                let needed = self.settings.rules.industry_failure_households;
                if let Subject::Region(region) = event.subject
                    && region.level() >= RegionLevel::County
                    && households.len() >= needed
                {
                    let involved = households.len();
                    self.pending.push(Finding {
                        key: SeriesKey {
                            region,
                            kind: RiskKind::IndustryFailure,
                        },
                        method: Method::IndustryProjectFailure,
                        day,
                        until: day,
                        observed: involved as f64,
                        expected: None,
                        upper_bound: Some(needed as f64),
                        severity: rule_severity(involved as f64 / needed as f64),
                        levels_agreeing: 1,
                        households: involved as u64,
                        reason: format!(
                            "industry project {} ({}) failed with {involved} registry households involved (rule: ≥ {needed}), loss {} yuan",
                            failure.project_id, failure.project_name, failure.loss_yuan
                        ),
                    });
                }
            }
            _ => {}
        }
        self.count_event(event.occurred_at, &event.payload, households, registry);
        self.add_recent(
            event.occurred_at,
            event.reported_at,
            &event.payload,
            households,
            registry,
        );
    }

    /// An event reported by the last judged day's close, arriving after it (from a
    /// partition that had caught up, say) joins that close's recent households, as a
    /// restart reading the store would count it.
    fn add_recent(
        &mut self,
        occurred_at: DateTime<Utc>,
        reported_at: DateTime<Utc>,
        payload: &Payload,
        households: &[HouseholdIdx],
        registry: &Registry,
    ) {
        let Some(judged) = self.judged_through() else {
            return;
        };
        let day = day_of(occurred_at);
        let lateness = self.settings.allowed_lateness_days;
        if day < self.recent_from(judged)
            || day > judged + lateness as Day
            || reported_at > day_end(judged) + Duration::days(lateness)
            || classify(payload).is_empty()
        {
            return;
        }
        for &household in households {
            let village = registry.household(household).region_code;
            add_household(self.recent.entry(village).or_default(), day, household);
        }
    }

    /// The latest report time an event may have to count in the first judgement of the
    /// next day to judge: that day's end plus the allowed lateness (None before the
    /// first judgement: what arrives until then counts at once, and the first judged
    /// day is the earliest it holds). The bound only grows. The watermark closes that day only once
    /// every input holding it has passed this time, so every event reported by then has
    /// arrived, whichever input it came through.
    fn release_bound(&self) -> Option<DateTime<Utc>> {
        self.judged_through()
            .map(|judged| day_end(judged + 1) + Duration::days(self.settings.allowed_lateness_days))
    }

    fn hold(&mut self, event: &Event, households: &[HouseholdIdx]) {
        let immediate = matches!(
            event.payload,
            Payload::DisasterDeclared(_) | Payload::IndustryProjectFailure(_)
        );
        if !immediate && (households.is_empty() || classify(&event.payload).is_empty()) {
            return;
        }
        self.held_seq += 1;
        self.held.insert(
            (event.reported_at, self.held_seq),
            Held {
                event: event.clone(),
                households: households.to_vec(),
            },
        );
    }

    /// Takes in the held events reported by `bound` (all of them with None).
    fn release(&mut self, bound: Option<DateTime<Utc>>, registry: &Registry) {
        let released = match bound {
            Some(bound) => {
                let later = self.held.split_off(&(bound, u64::MAX));
                std::mem::replace(&mut self.held, later)
            }
            None => std::mem::take(&mut self.held),
        };
        for held in released.into_values() {
            self.take(&held.event, &held.households, registry);
        }
    }

    /// Events held, waiting for their day's close (tests, metrics).
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Counts one event at its households (and a layoff at its employer); an event
    /// with something to count on a judged day is late, a correction when it changes a
    /// count.
    fn count_event(
        &mut self,
        occurred_at: DateTime<Utc>,
        payload: &Payload,
        households: &[HouseholdIdx],
        registry: &Registry,
    ) {
        if households.is_empty() || classify(payload).is_empty() {
            return;
        }
        let day = day_of(occurred_at);
        let late = self.judged_through().is_some_and(|judged| day <= judged);
        let mut corrected = false;
        for &kind in classify(payload) {
            for &household in households {
                corrected |= self.count_household(household, kind, day, registry);
            }
        }
        if let Payload::Unemployment(unemployment) = payload
            && let Some(employer) = &unemployment.employer_id
        {
            for &household in households {
                self.record_layoff(household, employer, day, registry, true);
            }
        }
        if late {
            self.late_events += 1;
            self.late_corrections += u64::from(corrected);
        }
    }

    /// Adds a (household, kind, day) if new; returns whether a count changed.
    fn count_household(
        &mut self,
        household: HouseholdIdx,
        kind: RiskKind,
        day: Day,
        registry: &Registry,
    ) -> bool {
        let village = registry.household(household).region_code;
        let keep = self.dedupe_from().is_none_or(|from| day >= from);
        if keep {
            let days = self
                .households
                .entry(SeriesKey {
                    region: village,
                    kind,
                })
                .or_default();
            if !add_household(days, day, household) {
                return false;
            }
            for region in &chain(village)[1..] {
                let days = self
                    .households
                    .entry(SeriesKey {
                        region: *region,
                        kind,
                    })
                    .or_default();
                add_household(days, day, household);
            }
            if kind == RiskKind::AnyRisk {
                let range = self.touched_villages.entry(village).or_insert((day, day));
                *range = (range.0.min(day), range.1.max(day));
            }
        }
        let judged = self.judged_through();
        let horizon = self.horizon_start();
        for region in chain(village) {
            let key = SeriesKey { region, kind };
            let series = self.series_entry(key);
            *series.counts.entry(day).or_insert(0) += 1;
            if let (Some(judged), Some(horizon)) = (judged, horizon)
                && day <= judged
            {
                let from = day.max(horizon);
                series.dirty_from = Some(series.dirty_from.map_or(from, |d| d.min(from)));
            }
            self.dirty_counts.insert((key, day));
        }
        true
    }

    fn record_layoff(
        &mut self,
        household: HouseholdIdx,
        employer: &str,
        day: Day,
        registry: &Registry,
        touch: bool,
    ) {
        if self.dedupe_from().is_some_and(|from| day < from) {
            return;
        }
        let village = registry.household(household).region_code;
        for area in [village.township(), village.county()] {
            let key = (area, employer.to_string());
            let days = self.layoffs.entry(key.clone()).or_default();
            if add_household(days, day, household) && touch {
                let range = self.touched_layoffs.entry(key).or_insert((day, day));
                *range = (range.0.min(day), range.1.max(day));
            }
        }
    }

    /// The series of `key`, created on first use. A new series after days were judged
    /// is judged over the re-judge horizon at the next flush.
    fn series_entry(&mut self, key: SeriesKey) -> &mut Series {
        let horizon = self.horizon_start();
        self.series.entry(key).or_insert_with(|| Series {
            dirty_from: horizon,
            checkpoint_dirty: true,
            ..Series::default()
        })
    }

    /// Declares that a finite input (files, a replay) has ended: the next flush moves the
    /// watermark to the latest event time, as if the idle timeout had passed, so every
    /// day before the latest event's is judged. Events arriving later are late
    /// corrections as usual.
    pub fn end_of_input(&mut self) {
        self.input_ended = true;
    }

    /// Advances the watermark and, for each day it closed, in order: re-judges the days
    /// late events changed, judges the day, runs the scan, clears idle signals, opens
    /// the campaigns of active signals, then counts the held events the next day's
    /// first judgement takes; then re-judges what late events changed since. The
    /// rules' findings apply as they come. Returns everything
    /// the store must commit with the batch. Call once per batch, after every `observe`
    /// of it; `now` is the processing time (it drives the idle timeout and the
    /// timestamps). What the store holds after a day's close is a function of the
    /// events and the days closed, never of the batches they came in.
    pub fn flush(&mut self, registry: &Registry, now: DateTime<Utc>) -> RegionalOutput {
        let mut output = RegionalOutput::default();
        let ended = self.input_ended;
        self.advance_watermark(now);
        let old_judged = self.judged_through();
        let new_closed = self.clock.watermark.map(|w| day_of(w) - 1);
        if old_judged.is_none()
            && let (Some(first), Some(closed)) = (self.min_day_seen, new_closed)
            && closed >= first
        {
            self.clock.origin = Some(date_of(first));
        }
        self.apply_findings(registry, now);
        if let (Some(origin), Some(closed)) = (self.clock.origin.map(day_from_date), new_closed) {
            let newly_from = old_judged.map_or(origin, |j| j + 1);
            for t in newly_from..=closed {
                self.judge_through(t, true, origin, registry, now, &mut output);
                self.release(self.release_bound(), registry);
                self.apply_findings(registry, now);
            }
            // The input is all there is: what it still held counts.
            if ended {
                self.release(None, registry);
                self.apply_findings(registry, now);
            }
            // The days late events corrected are judged again before the batch commits
            // (so that the stored judgements always follow from the stored counts, and
            // a restart continues exactly).
            if let Some(judged) = self.judged_through()
                && self.series.values().any(|s| s.dirty_from.is_some())
            {
                self.judge_through(judged, false, origin, registry, now, &mut output);
            }
        }
        self.update_households_affected();
        // Signals the rules raised since: their campaigns open now, not at the next close.
        output.tasks.extend(self.open_campaigns(registry, now));
        if self.judged_through() != old_judged {
            self.prune();
        }

        output.counts = std::mem::take(&mut self.dirty_counts)
            .into_iter()
            .map(|(key, day)| CountRow {
                region_code: key.region,
                kind: key.kind,
                day: date_of(day),
                count: self
                    .series
                    .get(&key)
                    .and_then(|s| s.counts.get(&day).copied())
                    .unwrap_or(0),
            })
            .collect();
        for (key, series) in &mut self.series {
            if std::mem::take(&mut series.checkpoint_dirty) {
                output.checkpoints.push(checkpoint(*key, &series.epochs));
            }
        }
        if std::mem::take(&mut self.clock_dirty) {
            output.watermark = Some(self.clock.clone());
        }
        output.signals = self.signals.drain();
        output.late_events = std::mem::take(&mut self.late_events);
        output.late_corrections = std::mem::take(&mut self.late_corrections);
        output
    }

    /// The windowed rules' findings for what was counted since, and every finding
    /// waiting, into the signals.
    fn apply_findings(&mut self, registry: &Registry, now: DateTime<Utc>) {
        self.rule_findings(registry);
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|f| (f.day, f.key));
        for finding in pending {
            self.signals.apply(finding, now);
        }
    }

    /// Re-judges the days late events changed, up to `t`, and with `newly` judges `t`
    /// for the first time (the scan, the idle signals cleared, the campaigns opened).
    fn judge_through(
        &mut self,
        t: Day,
        newly: bool,
        origin: Day,
        registry: &Registry,
        now: DateTime<Utc>,
        output: &mut RegionalOutput,
    ) {
        let first = self
            .series
            .values()
            .filter_map(|s| s.dirty_from)
            .min()
            .map_or(t, |d| d.min(t))
            .max(origin);
        for series in self.series.values_mut() {
            series.dirty_from = series.dirty_from.map(|d| d.max(origin));
        }
        // The rules' signals since the last close open their campaigns as they would
        // have at the end of the batch they came in.
        output.tasks.extend(self.open_campaigns(registry, now));
        for d in first..=t {
            let closing = newly && d == t;
            for finding in self.judge_day(d, closing, origin) {
                self.signals.apply(finding, now);
            }
            if closing {
                if let Some(scan) = &self.scan {
                    for finding in scan_findings(scan, &self.series, registry, origin, t) {
                        self.signals.apply(finding, now);
                    }
                }
                output.days_judged += 1;
                self.clock.judged_through = Some(date_of(t));
                self.clock_dirty = true;
                self.signals
                    .clear_idle(t, self.settings.signals.clear_after_days, now);
                self.take_recent(t);
                self.prune_campaigns();
            }
        }
        for series in self.series.values_mut() {
            series.dirty_from = None;
        }
        self.update_households_affected();
        output.tasks.extend(self.open_campaigns(registry, now));
    }

    /// The first of the recent days a campaign's priority households come from, as
    /// day `t` is judged.
    fn recent_from(&self, t: Day) -> Day {
        t - self.settings.signals.campaign_recent_days as Day + 1
    }

    /// Keeps each village's households with risk events from the recent days before
    /// `t` on, as counted now that `t` is judged (the days after it too: what was
    /// reported by its close).
    fn take_recent(&mut self, t: Day) {
        let from = self.recent_from(t);
        // What is counted by `t`'s close occurred by its end plus the allowed lateness
        // (a backlog taken in before the first judged day holds later days too).
        let to = t + self.settings.allowed_lateness_days as Day;
        self.recent = self
            .households
            .iter()
            .filter(|(key, _)| {
                key.kind == RiskKind::AnyRisk && key.region.level() == RegionLevel::Village
            })
            .filter_map(|(key, days)| {
                let kept: DailyHouseholds = days
                    .range(from..=to)
                    .map(|(&day, list)| (day, list.clone()))
                    .collect();
                (!kept.is_empty()).then_some((key.region, kept))
            })
            .collect();
    }

    /// Watermark = latest event time − allowed lateness, where "latest" is that of the
    /// least advanced input still holding it (nothing passes an input that holds it
    /// without events yet), or the latest of all when none holds it; after
    /// `idle_timeout` of processing time without a new latest event time, event time is
    /// taken to go on at the pace of processing time from the latest event (never past
    /// `now`), whatever the inputs hold. Never goes backwards.
    fn advance_watermark(&mut self, now: DateTime<Utc>) {
        if std::mem::take(&mut self.progressed) {
            self.clock.last_progress_at = Some(now);
        }
        let Some(max) = self.clock.max_event_time else {
            return;
        };
        let mut holding = self.clock.lanes.values().filter(|lane| lane.holding);
        let base = match holding.next() {
            None => Some(max),
            Some(first) => holding.fold(first.max_event_time, |least, lane| {
                least.zip(lane.max_event_time).map(|(a, b)| a.min(b))
            }),
        };
        let mut candidate = base.map(|base| {
            if std::mem::take(&mut self.input_ended) {
                base
            } else {
                base - Duration::days(self.settings.allowed_lateness_days)
            }
        });
        if let Some(last) = self.clock.last_progress_at {
            let idle = now - last;
            let timeout = Duration::hours(self.settings.idle_timeout_hours);
            if idle >= timeout {
                let idle_mark = (max + (idle - timeout)).min(now);
                candidate = Some(candidate.map_or(idle_mark, |c| c.max(idle_mark)));
            }
        }
        if let Some(candidate) = candidate
            && self.clock.watermark.is_none_or(|w| candidate > w)
        {
            self.clock.watermark = Some(candidate);
            self.clock_dirty = true;
        }
    }

    /// Judges day `t` for every series that needs it (all of them when `newly` closed,
    /// else those re-judged from `t` or earlier); returns the findings of new alarms.
    fn judge_day(&mut self, t: Day, newly: bool, origin: Day) -> Vec<Finding> {
        let refit = self.refit_days();
        let epoch_start = t - t.rem_euclid(refit);
        let mut new_alarms: Vec<(SeriesKey, Method, Judgement)> = Vec::new();
        let RegionalStage {
            detectors, series, ..
        } = self;
        for (key, series) in series.iter_mut() {
            let rejudge = series.dirty_from.is_some_and(|from| from <= t);
            if !(newly || rejudge) {
                continue;
            }
            let detectors = &mut detectors[level_index(key.region.level())];
            if series.dirty_from == Some(t) {
                series.statistic = statistic_before(series, t);
            }
            // The CUSUM's period model for t, fitted when its first day is first judged.
            let mut has_model = false;
            if let Some(plan) = detectors.cusum.as_mut() {
                let index = match series.epoch_index(epoch_start) {
                    Some(index) => index,
                    None => {
                        let epoch = plan.fit(&series.counts, origin, epoch_start, series.statistic);
                        series.epochs.push(epoch);
                        series.epochs.sort_by_key(|e| e.start);
                        series.checkpoint_dirty = true;
                        series.epoch_index(epoch_start).unwrap_or(0)
                    }
                };
                let statistic = series.statistic;
                match series.epochs[index].model.as_mut() {
                    Some(model) => {
                        has_model = true;
                        if t == epoch_start && model.carry_in.to_bits() != statistic.to_bits() {
                            model.carry_in = statistic;
                            series.checkpoint_dirty = true;
                        }
                    }
                    None => series.statistic = 0.0,
                }
            }
            let model = if has_model {
                model_for(series, t)
            } else {
                None
            };
            let (judgements, next) =
                detectors.judge(&series.counts, origin, t, model, series.statistic);
            series.statistic = next;
            let before = if newly { 0 } else { series.alarm_bits(t) };
            let bits = judgements.alarms();
            series.set_alarm_bits(t, bits);
            let fresh = bits & !before;
            for &method in Method::DETECTORS {
                if fresh & method_bit(method) != 0
                    && let Some(judgement) = judgements.get(method)
                {
                    new_alarms.push((*key, method, judgement));
                }
            }
        }
        if new_alarms.is_empty() {
            return Vec::new();
        }
        let mut agreement: HashMap<RiskKind, Agreement> = HashMap::new();
        for &(key, _, _) in &new_alarms {
            agreement.entry(key.kind).or_default();
        }
        for (key, series) in self.series.iter() {
            if series.alarm_bits(t) != 0
                && let Some(kind) = agreement.get_mut(&key.kind)
            {
                kind.add(key.region);
            }
        }
        let thresholds = &self.settings.signals.severity_exceedance;
        new_alarms
            .into_iter()
            .map(|(key, method, judgement)| {
                let agreeing = agreement
                    .get(&key.kind)
                    .map_or(1, |a| a.levels(key.region));
                let severity = detector_severity(&judgement, agreeing, thresholds);
                let expected = judgement.expected;
                let bound = judgement.upper_bound;
                Finding {
                    key,
                    method,
                    day: t,
                    until: t,
                    observed: judgement.observed,
                    expected: expected.is_finite().then_some(expected),
                    upper_bound: bound.is_finite().then_some(bound),
                    severity,
                    levels_agreeing: agreeing,
                    households: 0,
                    reason: format!(
                        "{method}: {} households with {} on {} in {} {}, expected {:.2}, bound {:.2}; {agreeing} level(s) agree",
                        judgement.observed,
                        key.kind,
                        date_of(t),
                        key.region.level().as_str(),
                        key.region,
                        expected,
                        bound
                    ),
                }
            })
            .collect()
    }

    /// Findings of the windowed rules for the keys touched since the last flush.
    fn rule_findings(&mut self, registry: &Registry) {
        let rules = self.settings.rules.clone();
        for ((area, employer), (first, last)) in std::mem::take(&mut self.touched_layoffs) {
            let Some(days) = self.layoffs.get(&(area, employer.clone())) else {
                continue;
            };
            let window = rules.mass_layoff_window_days;
            let needed = rules.mass_layoff_households;
            if let Some((day, latest, most)) =
                windows_reaching(days, first, last + window as Day - 1, window, needed)
            {
                let finding = Finding {
                    key: SeriesKey {
                        region: area,
                        kind: RiskKind::Unemployment,
                    },
                    method: Method::MassLayoff,
                    day,
                    until: latest,
                    observed: most as f64,
                    expected: None,
                    upper_bound: Some(needed as f64),
                    severity: rule_severity(most as f64 / needed as f64),
                    levels_agreeing: 1,
                    households: most as u64,
                    reason: format!(
                        "mass layoff: {most} households registered unemployment from employer {employer} within {window} days in {} {area} (rule: ≥ {needed})",
                        area.level().as_str()
                    ),
                };
                self.push_window_findings(finding, latest);
            }
        }
        for (village, (first, last)) in std::mem::take(&mut self.touched_villages) {
            let Some(days) = self.households.get(&SeriesKey {
                region: village,
                kind: RiskKind::AnyRisk,
            }) else {
                continue;
            };
            let total = registry.households_within(village).len();
            if total == 0 {
                continue;
            }
            let window = rules.village_share_window_days;
            let needed = ((rules.village_share * total as f64).ceil() as usize)
                .max(rules.village_share_min_households)
                .max(1);
            if let Some((day, latest, most)) =
                windows_reaching(days, first, last + window as Day - 1, window, needed)
            {
                let share = most as f64 / total as f64;
                let finding = Finding {
                    key: SeriesKey {
                        region: village,
                        kind: RiskKind::AnyRisk,
                    },
                    method: Method::VillageShare,
                    day,
                    until: latest,
                    observed: most as f64,
                    expected: None,
                    upper_bound: Some(needed as f64),
                    severity: rule_severity(share / rules.village_share),
                    levels_agreeing: 1,
                    households: most as u64,
                    reason: format!(
                        "{most} of {total} households ({:.1} %) of village {village} had new risk events within {window} days (rule: ≥ {:.1} % and ≥ {})",
                        100.0 * share,
                        100.0 * rules.village_share,
                        rules.village_share_min_households
                    ),
                };
                self.push_window_findings(finding, latest);
            }
        }
    }

    /// A windowed rule's finding at its first window reaching the threshold and, when
    /// later, at its last: the signal's onset and its latest day then follow from the
    /// data, however it was batched.
    fn push_window_findings(&mut self, finding: Finding, latest: Day) {
        if latest > finding.day {
            self.pending.push(Finding {
                day: latest,
                ..finding.clone()
            });
        }
        self.pending.push(finding);
    }

    /// Households affected of the changed active signals: distinct households of the
    /// region with the kind over the episode (kept days), never lowered.
    fn update_households_affected(&mut self) {
        let keys: Vec<SeriesKey> = self.signals.dirty_keys().copied().collect();
        for key in keys {
            let Some(days) = self.households.get(&key) else {
                continue;
            };
            if let Some(signal) = self.signals.get_mut(&key) {
                let distinct = super::systemic::distinct_between(
                    days,
                    day_from_date(signal.onset_day),
                    day_from_date(signal.day),
                ) as u64;
                signal.households_affected = signal.households_affected.max(distinct);
            }
        }
    }

    /// One campaign task per village of the region of every active signal at or above
    /// the configured severity that has none yet: its priority households are the
    /// village's with risk events in the recent days before the signal's day (and
    /// after it), as counted when the last judged day was judged (whichever batch the
    /// signal came in).
    fn open_campaigns(&mut self, registry: &Registry, now: DateTime<Utc>) -> Vec<ScreeningTask> {
        let min = self.settings.signals.campaign_min_level;
        let mut tasks = Vec::new();
        let mut opened = Vec::new();
        // Before the first judged day, what was counted so far.
        let before_judging = self.clock.judged_through.is_none();
        let (recent, households) = (&self.recent, &self.households);
        let recent_days = self.settings.signals.campaign_recent_days as Day;
        // The narrowest region first: a village's own signal opens its campaign before
        // the township's or county's signal of the same events would.
        let mut candidates: Vec<(&SeriesKey, &mut RegionalSignal)> = self
            .signals
            .active_mut()
            .filter(|(_, signal)| !signal.campaign && signal.severity >= min)
            .collect();
        candidates.sort_by_key(|(key, _)| (std::cmp::Reverse(key.region.level()), **key));
        for (key, signal) in candidates {
            let day = day_from_date(signal.day);
            // A campaign's days count from its signal's day, in event time (the
            // day itself not counted, as every period in days).
            let budget_from = day_end(day - 1);
            let budget = Budget {
                pass_on_days: self.settings.signals.campaign_due_days,
                decision_days: self.settings.signals.campaign_due_days,
            };
            let (_, due_at) = budget.deadlines(budget_from);
            for village in campaign_villages(key.region, registry) {
                // The village already screens every household in a campaign still
                // running: one campaign at a time.
                if self
                    .campaigns
                    .get(&village)
                    .is_some_and(|&last| day <= last)
                {
                    continue;
                }
                self.campaigns.insert(village, campaign_last_day(due_at));
                let days = if before_judging {
                    households.get(&SeriesKey {
                        region: village,
                        kind: RiskKind::AnyRisk,
                    })
                } else {
                    recent.get(&village)
                };
                let priority = days
                    .map(|days| recent_households(days, day - recent_days + 1, Day::MAX))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| registry.household(h).household_id.clone())
                    .collect();
                // A campaign has no separate pass-on budget: the village screens
                // within the campaign's days.
                tasks.push(ScreeningTask::open(
                    NewTask {
                        task_id: stable_id(
                            "campaign",
                            &[signal.signal_id.as_bytes(), village.to_string().as_bytes()],
                        ),
                        kind: TaskKind::Campaign,
                        alert_id: None,
                        signal_id: Some(signal.signal_id.clone()),
                        household_id: None,
                        village_code: village,
                        level: signal.severity,
                        priority_households: priority,
                    },
                    budget,
                    budget_from,
                    now,
                ));
            }
            signal.campaign = true;
            signal.updated_at = now;
            opened.push(*key);
        }
        for key in opened {
            self.signals.touch(key);
        }
        tasks
    }

    /// Drops what no later judgement, rule or restart needs.
    fn prune(&mut self) {
        self.prune_campaigns();
        if let Some(from) = self.dedupe_from() {
            for days in self.households.values_mut() {
                prune(days, from);
            }
            self.households.retain(|_, days| !days.is_empty());
            for days in self.layoffs.values_mut() {
                prune(days, from);
            }
            self.layoffs.retain(|_, days| !days.is_empty());
        }
        let (Some(horizon), Some(counts_from)) = (
            self.horizon_start(),
            self.counts_needed_from().map(day_from_date),
        ) else {
            return;
        };
        for series in self.series.values_mut() {
            series.counts = series.counts.split_off(&counts_from);
            let before = series.epochs.len();
            series.epochs.retain(|e| day_from_date(e.start) >= horizon);
            series.checkpoint_dirty |= series.epochs.len() != before;
            while series.alarms_start < horizon && !series.alarms.is_empty() {
                series.alarms.pop_front();
                series.alarms_start += 1;
            }
        }
    }

    /// Imports history: count rows from before the stream (another system's records, a
    /// `yujing detect` CSV), so baselines and in-control models have years to learn from
    /// (Farrington-type detectors need them). Rows replace the counts of their day and are
    /// persisted with the next flush; days already judged are re-judged within the
    /// horizon.
    pub fn import_history(&mut self, rows: impl IntoIterator<Item = CountRow>) {
        let judged = self.judged_through();
        let horizon = self.horizon_start();
        for row in rows {
            let day = day_from_date(row.day);
            self.min_day_seen = Some(self.min_day_seen.map_or(day, |d| d.min(day)));
            let key = SeriesKey {
                region: row.region_code,
                kind: row.kind,
            };
            let series = self.series_entry(key);
            series.counts.insert(day, row.count);
            if let (Some(judged), Some(horizon)) = (judged, horizon)
                && day <= judged
            {
                let from = day.max(horizon);
                series.dirty_from = Some(series.dirty_from.map_or(from, |d| d.min(from)));
            }
            self.dirty_counts.insert((key, day));
        }
    }

    // ---- restore -------------------------------------------------------------------

    /// Restore step 1: the stored clock.
    pub fn restore_watermark(&mut self, state: WatermarkState) {
        self.clock = state;
    }

    /// Restore step 2: count rows (at least from [`RegionalStage::counts_needed_from`];
    /// ignored before the first judged day, when step 5 counts the events again).
    pub fn restore_counts(&mut self, rows: impl IntoIterator<Item = CountRow>) {
        // Before the first judged day the events themselves are taken in again
        // (`restore_event`), in the order they were committed.
        if self.judged_through().is_none() {
            return;
        }
        for row in rows {
            let day = day_from_date(row.day);
            self.min_day_seen = Some(self.min_day_seen.map_or(day, |d| d.min(day)));
            let series = self.series.entry(SeriesKey {
                region: row.region_code,
                kind: row.kind,
            });
            let series = series.or_default();
            series.counts.insert(day, row.count);
        }
    }

    /// Restore step 3: series checkpoints.
    pub fn restore_checkpoint(
        &mut self,
        checkpoint: SeriesCheckpoint,
    ) -> Result<(), RegionalError> {
        let corrupt = |reason: &str| RegionalError::CorruptCheckpoint {
            region: checkpoint.region_code,
            kind: checkpoint.kind,
            reason: reason.to_string(),
        };
        let stored: StoredSeries =
            serde_json::from_str(&checkpoint.document).map_err(|e| corrupt(&e.to_string()))?;
        let refit = self.refit_days();
        for epoch in &stored.epochs {
            if day_from_date(epoch.start).rem_euclid(refit) != 0 {
                return Err(corrupt("a refit period does not start on the grid"));
            }
            if epoch.model.as_ref().is_some_and(|m| !m.is_consistent()) {
                return Err(corrupt("an in-control model is inconsistent"));
            }
        }
        let series = self
            .series
            .entry(SeriesKey {
                region: checkpoint.region_code,
                kind: checkpoint.kind,
            })
            .or_default();
        series.epochs = stored.epochs;
        series.epochs.sort_by_key(|e| e.start);
        Ok(())
    }

    /// Restore step 4: the latest signal of each (region, kind), active or cleared
    /// (with its episode number set).
    pub fn restore_signal(&mut self, signal: RegionalSignal) {
        self.signals.restore(signal);
    }

    /// Restore step 4b: a campaign task's village and due time, so that a signal over
    /// a village whose campaign still runs opens no second one.
    pub fn restore_campaign(&mut self, village: RegionCode, due_at: DateTime<Utc>) {
        let last = campaign_last_day(due_at);
        let kept = self.campaigns.entry(village).or_insert(last);
        *kept = (*kept).max(last);
    }

    /// Restore step 5: a stored event, in commit order (at least from
    /// [`RegionalStage::events_needed_from`], and every event reported after
    /// [`RegionalStage::events_held_after`]),
    /// re-entering the distinct-household records and rule windows without counting;
    /// an event reported after the next day's close is held again, to count then.
    pub fn restore_event(&mut self, event: &RestoredEvent, registry: &Registry) {
        let Some(payload) = event.payload.as_ref() else {
            return;
        };
        let day = day_of(event.occurred_at);
        let held = self
            .release_bound()
            .is_some_and(|bound| event.reported_at > bound);
        if !held && self.dedupe_from().is_some_and(|from| day < from) {
            return;
        }
        let mut households: Vec<HouseholdIdx> = event
            .households
            .iter()
            .filter_map(|id| registry.household_idx(id))
            .collect();
        if let Payload::IndustryProjectFailure(failure) = payload {
            households.extend(
                failure
                    .household_ids
                    .iter()
                    .filter_map(|id| registry.household_idx(id)),
            );
            households.sort_unstable();
            households.dedup();
        }
        // Committed but not yet taken in (held, or nothing judged yet): taken in again
        // as it first was, held until its day's close or counted now.
        if held || self.judged_through().is_none() {
            let subject = match (event.region_code, event.households.first()) {
                (Some(region), _) => Subject::Region(region),
                (None, Some(household)) => Subject::Household(household.clone()),
                (None, None) => return,
            };
            let again = Event {
                event_id: event.event_id.clone(),
                source: payload.kind().source(),
                occurred_at: event.occurred_at,
                reported_at: event.reported_at,
                subject,
                payload: payload.clone(),
                payload_json: "{}".into(),
            };
            if held {
                self.hold(&again, &households);
            } else {
                self.observe(&again, &households, registry);
            }
            return;
        }
        // Counted by the time the last judged day closed: among its recent households.
        self.add_recent(
            event.occurred_at,
            event.reported_at,
            payload,
            &households,
            registry,
        );
        for &kind in classify(payload) {
            for &household in &households {
                let village = registry.household(household).region_code;
                for region in chain(village) {
                    let days = self
                        .households
                        .entry(SeriesKey { region, kind })
                        .or_default();
                    add_household(days, day, household);
                }
            }
        }
        if let Payload::Unemployment(unemployment) = payload
            && let Some(employer) = &unemployment.employer_id
        {
            for &household in &households {
                self.record_layoff(household, employer, day, registry, false);
            }
        }
    }

    /// Forgets the campaigns over for `campaign_due_days` by the last judged day (no
    /// signal of a day they cover comes any more): at each close, and as a restore
    /// finishes, so that a restarted stage blocks exactly the villages a running one does.
    fn prune_campaigns(&mut self) {
        if let Some(judged) = self.judged_through() {
            let keep = self.settings.signals.campaign_due_days as Day;
            self.campaigns.retain(|_, last| *last + keep >= judged);
        }
    }

    /// Restore step 6 (last): re-derives the judgements of the re-judge horizon from
    /// the counts and checkpoints, so the stage continues exactly where it stopped.
    pub fn finish_restore(&mut self) {
        self.prune_campaigns();
        let (Some(origin), Some(judged), Some(horizon)) = (
            self.clock.origin.map(day_from_date),
            self.judged_through(),
            self.horizon_start(),
        ) else {
            return;
        };
        let RegionalStage {
            detectors, series, ..
        } = self;
        for (key, series) in series.iter_mut() {
            let detectors = &mut detectors[level_index(key.region.level())];
            series.alarms.clear();
            let from = horizon.max(origin);
            series.statistic = statistic_before(series, from);
            for t in from..=judged {
                let model = if detectors.cusum.is_some() {
                    model_for(series, t)
                } else {
                    None
                };
                let statistic = if model.is_some() {
                    series.statistic
                } else {
                    0.0
                };
                let (judgements, next) =
                    detectors.judge(&series.counts, origin, t, model, statistic);
                series.statistic = next;
                series.set_alarm_bits(t, judgements.alarms());
            }
            series.checkpoint_dirty = false;
            series.dirty_from = None;
        }
        self.clock_dirty = false;
    }
}

/// The households with risk events on days `from..=to`: most days with events first,
/// then the most recent, then by registry order (deterministic).
fn recent_households(days: &DailyHouseholds, from: Day, to: Day) -> Vec<HouseholdIdx> {
    let mut seen: HashMap<HouseholdIdx, (u32, Day)> = HashMap::new();
    for (&day, list) in days.range(from..=to) {
        for &household in list {
            let entry = seen.entry(household).or_insert((0, day));
            entry.0 += 1;
            entry.1 = entry.1.max(day);
        }
    }
    let mut ranked: Vec<(HouseholdIdx, (u32, Day))> = seen.into_iter().collect();
    ranked.sort_by(|(a, (a_days, a_last)), (b, (b_days, b_last))| {
        b_days.cmp(a_days).then(b_last.cmp(a_last)).then(a.cmp(b))
    });
    ranked.into_iter().map(|(household, _)| household).collect()
}

/// Which regions alarm for one kind on one day, by level, to count agreeing levels.
#[derive(Debug, Default)]
struct Agreement {
    alarming: HashSet<RegionCode>,
    townships_with_village: HashSet<RegionCode>,
    counties_with_village: HashSet<RegionCode>,
    counties_with_township: HashSet<RegionCode>,
}

impl Agreement {
    fn add(&mut self, region: RegionCode) {
        self.alarming.insert(region);
        match region.level() {
            RegionLevel::Village => {
                self.townships_with_village.insert(region.township());
                self.counties_with_village.insert(region.county());
            }
            RegionLevel::Township => {
                self.counties_with_township.insert(region.county());
            }
            _ => {}
        }
    }

    /// Levels (1–3) along `region`'s chain that alarm: itself, its ancestors, its
    /// descendants.
    fn levels(&self, region: RegionCode) -> u8 {
        let levels = match region.level() {
            RegionLevel::Village => {
                1 + u8::from(self.alarming.contains(&region.township()))
                    + u8::from(self.alarming.contains(&region.county()))
            }
            RegionLevel::Township => {
                1 + u8::from(self.townships_with_village.contains(&region))
                    + u8::from(self.alarming.contains(&region.county()))
            }
            _ => {
                1 + u8::from(self.counties_with_township.contains(&region))
                    + u8::from(self.counties_with_village.contains(&region))
            }
        };
        levels.min(3)
    }
}

/// The model for day `t` of a series (the period containing it).
fn model_for(series: &Series, t: Day) -> Option<&EpochModel> {
    series
        .epochs
        .iter()
        .rev()
        .find(|e| day_from_date(e.start) <= t)
        .and_then(|e| e.model.as_ref())
}

/// S_{t−1}, replaying the CUSUM from the oldest kept period's carried-in statistic.
fn statistic_before(series: &Series, t: Day) -> f64 {
    let Some(first) = series.epochs.first() else {
        return 0.0;
    };
    let start = day_from_date(first.start);
    if t < start {
        return 0.0;
    }
    let mut statistic = first.model.as_ref().map_or(0.0, |m| m.carry_in);
    for day in start..t {
        statistic = match model_for(series, day) {
            Some(model) => step(model, statistic, series.counts.count(day), day),
            None => 0.0,
        };
    }
    statistic
}

/// One CUSUM day from `statistic` (S_{t−1}) to S_t after any reset.
fn step(model: &EpochModel, statistic: f64, count: f64, day: Day) -> f64 {
    let Some(chart) = model.chart() else {
        return 0.0;
    };
    let mut state = CusumState::with_statistic(statistic);
    // Counts are whole and ≥ 0 and μ0 is floored > 0: a step cannot fail.
    match state.step(&chart, count, model.mu0(day)) {
        Ok(_) => state.statistic(),
        Err(_) => statistic,
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
