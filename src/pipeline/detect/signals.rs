//! Signals from findings: one active [`RegionalSignal`] per (region, risk kind); a
//! finding (a detector's alarm on a judged day or week, a scan cluster, or a systemic
//! rule) raises one or updates the active one; a signal clears after `clear_after_days`
//! judged days without new evidence. Severity (红橙黄蓝) is defined here: each further
//! agreeing level or method raises it a step. Pure; cannot fail.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::domain::alert::Level;
use crate::domain::event::DisasterLevel;
use crate::domain::ids::RegionCode;
use crate::domain::signal::{Method, RegionalSignal, RiskKind, SignalStatus};

use super::ears::Judgement;
use super::series::{Day, date_of, day_from_date};

/// A series (and signal) key: a region of the hierarchy and a risk kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The region.
    pub region: RegionCode,
    /// The kind.
    pub kind: RiskKind,
}

/// One piece of evidence for a signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Region and kind.
    pub key: SeriesKey,
    /// The method.
    pub method: Method,
    /// The day it concerns.
    pub day: Day,
    /// The last day the evidence covers (a declared disaster's end), ≥ `day`.
    pub until: Day,
    /// What was counted.
    pub observed: f64,
    /// What was expected (detectors only).
    pub expected: Option<f64>,
    /// The bound or the rule's threshold.
    pub upper_bound: Option<f64>,
    /// Severity of this finding alone (levels agreeing included).
    pub severity: Level,
    /// Levels of the hierarchy that agree (1 for rules).
    pub levels_agreeing: u8,
    /// Households the finding itself counts (rules), or 0.
    pub households: u64,
    /// Why, with its numbers.
    pub reason: String,
}

/// Severity of a detector alarm: the exceedance score X = 1 + (observed − bound) /
/// max(bound − expected, 1) is 1 at the bound and grows by one for every further
/// "bound-to-expected" gap (at least one household) above it; below `thresholds[0]` it
/// is blue, then yellow, orange and red. Each further level of the hierarchy agreeing
/// (`levels_agreeing` − 1) raises it one step. A non-finite bound (textbook C3 when the
/// two previous days already alarm) measures the excess over the expected count.
pub fn detector_severity(judgement: &Judgement, levels_agreeing: u8, thresholds: &[f64]) -> Level {
    let score = exceedance(judgement);
    let mut level = from_score(score, thresholds);
    for _ in 1..levels_agreeing {
        level = level.raised();
    }
    level
}

/// The exceedance score of a judgement (see [`detector_severity`]).
pub fn exceedance(judgement: &Judgement) -> f64 {
    let (observed, expected, bound) = (
        judgement.observed,
        judgement.expected,
        judgement.upper_bound,
    );
    if bound.is_finite() {
        1.0 + (observed - bound) / (bound - expected).max(1.0)
    } else {
        1.0 + (observed - expected).max(0.0)
    }
}

fn from_score(score: f64, thresholds: &[f64]) -> Level {
    let at = |i: usize| thresholds.get(i).copied().unwrap_or(f64::INFINITY);
    if score >= at(2) {
        Level::Red
    } else if score >= at(1) {
        Level::Orange
    } else if score >= at(0) {
        Level::Yellow
    } else {
        Level::Blue
    }
}

/// Severity of a count rule (mass layoff, failed project, village share) from
/// observed / threshold: at the threshold yellow, at twice orange, at four times red.
pub fn rule_severity(ratio: f64) -> Level {
    if ratio >= 4.0 {
        Level::Red
    } else if ratio >= 2.0 {
        Level::Orange
    } else {
        Level::Yellow
    }
}

/// Severity of a declared disaster: response level Ⅰ red, Ⅱ orange, Ⅲ yellow, Ⅳ blue.
pub fn disaster_severity(level: DisasterLevel) -> Level {
    match level {
        DisasterLevel::I => Level::Red,
        DisasterLevel::Ii => Level::Orange,
        DisasterLevel::Iii => Level::Yellow,
        DisasterLevel::Iv => Level::Blue,
    }
}

/// The latest signal of every (region, kind), and what changed since the last drain.
#[derive(Debug, Default)]
pub struct SignalBook {
    latest: BTreeMap<SeriesKey, RegionalSignal>,
    dirty: BTreeSet<SeriesKey>,
    raised: BTreeSet<SeriesKey>,
    /// Snapshots replaced by a new episode before they were drained (a signal
    /// cleared and a new one raised between two drains): drained too, so the store
    /// sees the old episode cleared.
    superseded: Vec<RegionalSignal>,
}

impl SignalBook {
    /// Restores the latest signal of a (region, kind) read back from the store.
    pub fn restore(&mut self, signal: RegionalSignal) {
        let key = SeriesKey {
            region: signal.region_code,
            kind: signal.risk_kind,
        };
        match self.latest.get(&key) {
            Some(kept) if kept.episode > signal.episode => {}
            _ => {
                self.latest.insert(key, signal);
            }
        }
    }

    /// The latest signal of a key.
    pub fn get(&self, key: &SeriesKey) -> Option<&RegionalSignal> {
        self.latest.get(key)
    }

    /// Every latest signal (tests, the report).
    pub fn all(&self) -> impl Iterator<Item = &RegionalSignal> {
        self.latest.values()
    }

    /// Folds a finding in: updates the active signal of its key, or raises a new one.
    pub fn apply(&mut self, finding: Finding, now: DateTime<Utc>) {
        let key = finding.key;
        let undrained = !self.dirty.insert(key);
        match self.latest.get_mut(&key) {
            Some(signal) if signal.is_active() => {
                let day = date_of(finding.day);
                let shown =
                    day > signal.day || (day == signal.day && finding.severity > signal.severity);
                if shown {
                    signal.day = day;
                    signal.observed = finding.observed;
                    signal.expected = finding.expected;
                    signal.upper_bound = finding.upper_bound;
                    signal.levels_agreeing = finding.levels_agreeing;
                    signal.reason = finding.reason;
                }
                signal.onset_day = signal.onset_day.min(day);
                signal.evidence_until = signal.evidence_until.max(date_of(finding.until));
                signal.severity = signal.severity.max(finding.severity);
                if let Err(at) = signal.methods.binary_search(&finding.method) {
                    // Another method agreeing on the episode raises it one step.
                    signal.methods.insert(at, finding.method);
                    signal.severity = signal.severity.raised();
                }
                signal.households_affected = signal.households_affected.max(finding.households);
                if !self.raised.contains(&key) {
                    signal.status = SignalStatus::Updated;
                }
                signal.updated_at = now;
            }
            previous => {
                if undrained && let Some(previous) = &previous {
                    self.superseded.push((*previous).clone());
                }
                let episode = previous.map_or(0, |s| s.episode + 1);
                let day = date_of(finding.day);
                let signal = RegionalSignal {
                    signal_id: RegionalSignal::id_for(key.region, key.kind, episode),
                    episode,
                    region_code: key.region,
                    region_level: key.region.level(),
                    risk_kind: key.kind,
                    methods: vec![finding.method],
                    severity: finding.severity,
                    status: SignalStatus::Raised,
                    onset_day: day,
                    day,
                    evidence_until: date_of(finding.until.max(finding.day)),
                    observed: finding.observed,
                    expected: finding.expected,
                    upper_bound: finding.upper_bound,
                    levels_agreeing: finding.levels_agreeing,
                    households_affected: finding.households,
                    reason: finding.reason,
                    campaign: false,
                    raised_at: now,
                    updated_at: now,
                    cleared_at: None,
                };
                self.latest.insert(key, signal);
                self.raised.insert(key);
            }
        }
    }

    /// Clears every active signal whose evidence ended `clear_after_days` or more days
    /// before the judged day `day`.
    pub fn clear_idle(&mut self, day: Day, clear_after_days: i64, now: DateTime<Utc>) {
        for (key, signal) in &mut self.latest {
            if signal.is_active()
                && i64::from(day - day_from_date(signal.evidence_until)) >= clear_after_days
            {
                signal.status = SignalStatus::Cleared;
                signal.cleared_at = Some(now);
                signal.updated_at = now;
                self.dirty.insert(*key);
            }
        }
    }

    /// Active signals (for campaigns and household counts).
    pub fn active_mut(&mut self) -> impl Iterator<Item = (&SeriesKey, &mut RegionalSignal)> {
        self.latest.iter_mut().filter(|(_, s)| s.is_active())
    }

    /// Marks a signal changed (a campaign was opened, its household count grew).
    pub fn touch(&mut self, key: SeriesKey) {
        self.dirty.insert(key);
    }

    /// Keys changed since the last drain.
    pub fn dirty_keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.dirty.iter()
    }

    /// The mutable signal of a key.
    pub fn get_mut(&mut self, key: &SeriesKey) -> Option<&mut RegionalSignal> {
        self.latest.get_mut(key)
    }

    /// Takes the snapshots changed since the last drain.
    pub fn drain(&mut self) -> Vec<RegionalSignal> {
        self.raised.clear();
        let mut snapshots = std::mem::take(&mut self.superseded);
        snapshots.extend(
            std::mem::take(&mut self.dirty)
                .into_iter()
                .filter_map(|key| self.latest.get(&key).cloned()),
        );
        snapshots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key() -> SeriesKey {
        SeriesKey {
            region: RegionCode::parse("522425101000").unwrap(),
            kind: RiskKind::Unemployment,
        }
    }

    fn finding(day: Day, severity: Level, method: Method) -> Finding {
        Finding {
            key: key(),
            method,
            day,
            until: day,
            observed: 5.0,
            expected: Some(1.0),
            upper_bound: Some(3.0),
            severity,
            levels_agreeing: 1,
            households: 0,
            reason: "test".into(),
        }
    }

    fn now(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn severity_by_hand() {
        let at_bound = Judgement {
            observed: 3.0,
            expected: 1.0,
            upper_bound: 3.0,
            statistic: 0.0,
            alarm: Some(false),
        };
        assert_eq!(exceedance(&at_bound), 1.0);
        let thresholds = [2.0, 3.0, 5.0];
        // 7 households, bound 3, expected 1: X = 1 + 4/2 = 3 → orange; two levels → red.
        let high = Judgement {
            observed: 7.0,
            ..at_bound
        };
        assert_eq!(exceedance(&high), 3.0);
        assert_eq!(detector_severity(&high, 1, &thresholds), Level::Orange);
        assert_eq!(detector_severity(&high, 2, &thresholds), Level::Red);
        // Bound close to the mean: the gap counts as one household.
        let sparse = Judgement {
            observed: 2.0,
            expected: 0.1,
            upper_bound: 0.5,
            statistic: 0.0,
            alarm: Some(true),
        };
        assert_eq!(exceedance(&sparse), 2.5);
        assert_eq!(detector_severity(&sparse, 1, &thresholds), Level::Yellow);
        let minus_inf = Judgement {
            upper_bound: f64::NEG_INFINITY,
            ..sparse
        };
        assert!((exceedance(&minus_inf) - 2.9).abs() < 1e-12);
        assert_eq!(rule_severity(1.0), Level::Yellow);
        assert_eq!(rule_severity(2.4), Level::Orange);
        assert_eq!(rule_severity(4.0), Level::Red);
        assert_eq!(disaster_severity(DisasterLevel::Iii), Level::Yellow);
    }

    /// One active signal per (region, kind): later findings update it; after clearing, the
    /// next finding opens a new episode with a new id.
    #[test]
    fn one_active_signal_per_key_and_clearing() {
        let mut book = SignalBook::default();
        book.apply(finding(100, Level::Blue, Method::Cusum), now(1));
        book.apply(finding(101, Level::Orange, Method::MassLayoff), now(1));
        let drained = book.drain();
        assert_eq!(drained.len(), 1);
        let first = &drained[0];
        assert_eq!(
            first.status,
            SignalStatus::Raised,
            "raised and updated in one batch"
        );
        assert_eq!(first.methods, vec![Method::Cusum, Method::MassLayoff]);
        assert_eq!(
            first.severity,
            Level::Red,
            "orange, and a second method agrees"
        );
        assert_eq!(first.day, date_of(101));
        assert_eq!(first.onset_day, date_of(100));
        book.apply(finding(102, Level::Blue, Method::Cusum), now(2));
        let updated = book.drain();
        assert_eq!(updated[0].status, SignalStatus::Updated);
        assert_eq!(
            updated[0].severity,
            Level::Red,
            "never lowered while active"
        );
        assert_eq!(updated[0].signal_id, first.signal_id);

        book.clear_idle(115, 14, now(3));
        assert!(book.drain().is_empty(), "13 quiet days are not enough");
        book.clear_idle(116, 14, now(3));
        let cleared = book.drain();
        assert_eq!(cleared[0].status, SignalStatus::Cleared);
        assert_eq!(cleared[0].cleared_at, Some(now(3)));

        book.apply(finding(130, Level::Blue, Method::Cusum), now(4));
        let again = book.drain();
        assert_eq!(again[0].status, SignalStatus::Raised);
        assert_eq!(again[0].episode, 1);
        assert_ne!(again[0].signal_id, first.signal_id);
    }

    #[test]
    fn each_further_method_agreeing_raises_the_severity_a_step() {
        let mut book = SignalBook::default();
        book.apply(finding(100, Level::Blue, Method::Cusum), now(1));
        book.apply(finding(101, Level::Blue, Method::Cusum), now(1));
        assert_eq!(
            book.drain()[0].severity,
            Level::Blue,
            "the same method again"
        );
        book.apply(
            finding(103, Level::Blue, Method::FarringtonFlexible),
            now(2),
        );
        let signal = &book.drain()[0];
        assert_eq!(signal.severity, Level::Yellow);
        assert_eq!(
            signal.methods,
            vec![Method::Cusum, Method::FarringtonFlexible]
        );
        book.apply(finding(104, Level::Blue, Method::Scan), now(3));
        assert_eq!(book.drain()[0].severity, Level::Orange);
    }

    #[test]
    fn a_signal_cleared_and_raised_again_between_drains_drains_both_episodes() {
        let mut book = SignalBook::default();
        book.apply(finding(10, Level::Yellow, Method::Cusum), now(1));
        book.drain();
        book.apply(finding(11, Level::Yellow, Method::Cusum), now(2));
        book.clear_idle(40, 14, now(3));
        book.apply(finding(41, Level::Orange, Method::Cusum), now(4));
        let drained = book.drain();
        let states: Vec<(u32, SignalStatus)> =
            drained.iter().map(|s| (s.episode, s.status)).collect();
        assert_eq!(
            states,
            vec![(0, SignalStatus::Cleared), (1, SignalStatus::Raised)],
            "the store must see episode 0 cleared before episode 1 is raised"
        );
    }
}
