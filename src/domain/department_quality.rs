//! The data-quality figures of the department feeds, as the store reads them from its
//! events: subjects a department sent events for that the roster does not hold
//! (`quality.unmatched_persons`, 应纳未纳 risk), and each department's reporting
//! delay, reported − occurred (`quality.late_reporting`, 录入不及时). Rows in, counts
//! and figures out; pure, nothing fails. Resident IDs appear masked only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::event::Source;
use super::ids::{RegionCode, RegionLevel};

/// One subject not on the roster and the events one department sent for it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UnmatchedSubject {
    /// The department.
    pub source: Source,
    /// The person, masked (first 6 + last 4); absent for a household subject.
    pub person_masked: Option<String>,
    /// The household number the event named, for a household subject.
    pub household_id: Option<String>,
    /// The resident ID's issuing area (its first 6 digits, a county-level code):
    /// where the ID was issued, not where the person lives.
    pub id_area: Option<String>,
    /// The event's village or region, when the event carried one.
    #[schema(value_type = Option<String>)]
    pub region_code: Option<RegionCode>,
    /// Events from this department for this subject.
    pub events: u64,
    /// The earliest of their event times.
    pub first_occurred_at: DateTime<Utc>,
    /// The latest of their event times.
    pub last_occurred_at: DateTime<Utc>,
    /// The person's pseudonym (the keyed hash, hex): what tells two persons with one
    /// masked form apart. Kept for recording, never shown.
    #[serde(skip)]
    pub pseudonym: Option<String>,
}

impl UnmatchedSubject {
    /// Who the finding is about, stably: the department and the person's pseudonym,
    /// or the household number (`-` when the event kept neither).
    pub fn subject_key(&self) -> String {
        let who = self
            .pseudonym
            .as_deref()
            .or(self.household_id.as_deref())
            .unwrap_or("-");
        format!("{}:{who}", self.source)
    }
}

impl UnmatchedSubject {
    /// Why it is a finding, with the numbers.
    pub fn reason(&self) -> String {
        let subject = match (&self.person_masked, &self.household_id) {
            (Some(masked), _) => format!("person {masked}"),
            (None, Some(household)) => format!("household {household}"),
            (None, None) => "a subject".to_string(),
        };
        format!(
            "{subject} is not on the roster; {} sent {} event(s) for it from {} to {}",
            self.source,
            self.events,
            self.first_occurred_at.format("%Y-%m-%d"),
            self.last_occurred_at.format("%Y-%m-%d")
        )
    }
}

/// Subjects and their events, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubjectTally {
    /// Distinct subjects (a subject two departments sent events for counts for each).
    pub subjects: u64,
    /// Their events.
    pub events: u64,
}

impl SubjectTally {
    fn add(&mut self, subject: &UnmatchedSubject) {
        self.subjects += 1;
        self.events += subject.events;
    }
}

/// The unmatched subjects counted by department, by issuing area of the ID and by
/// village (only the events that carried a village are placed in one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UnmatchedCounts {
    /// Every subject.
    pub all: SubjectTally,
    /// By department (wire name).
    pub by_source: BTreeMap<String, SubjectTally>,
    /// By the resident ID's issuing area (first 6 digits).
    pub by_id_area: BTreeMap<String, SubjectTally>,
    /// By village code.
    pub by_village: BTreeMap<String, SubjectTally>,
}

/// Counts `subjects`.
pub fn count_unmatched(subjects: &[UnmatchedSubject]) -> UnmatchedCounts {
    let mut counts = UnmatchedCounts::default();
    for subject in subjects {
        counts.all.add(subject);
        counts
            .by_source
            .entry(subject.source.as_str().to_string())
            .or_default()
            .add(subject);
        if let Some(area) = &subject.id_area {
            counts
                .by_id_area
                .entry(area.clone())
                .or_default()
                .add(subject);
        }
        if let Some(code) = subject.region_code
            && code.level() == RegionLevel::Village
        {
            counts
                .by_village
                .entry(code.to_string())
                .or_default()
                .add(subject);
        }
    }
    counts
}

/// The issuing area of a masked resident ID: its first 6 digits.
pub fn id_area(masked: &str) -> Option<String> {
    let area = masked.get(..6)?;
    area.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| area.to_string())
}

/// One department's reporting delays as the store counts them, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayRow {
    /// The department.
    pub source: Source,
    /// Its events.
    pub events: u64,
    /// Those reported more than the limit after they occurred.
    pub late: u64,
    /// The nearest-rank median delay.
    pub p50_ms: i64,
    /// The nearest-rank 90th percentile.
    pub p90_ms: i64,
    /// The longest.
    pub max_ms: i64,
}

/// The nearest-rank position (0-based) of percentile `p` among `n` sorted values
/// (n ≥ 1): the smallest value with at least p % of the values at or below it.
pub fn nearest_rank(p: u64, n: u64) -> u64 {
    (p * n).div_ceil(100).max(1) - 1
}

/// One department's reporting delay, reported − occurred (录入及时性).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReportingDelay {
    /// The department.
    pub source: Source,
    /// Its events.
    pub events: u64,
    /// Median delay in hours (nearest rank).
    pub p50_hours: f64,
    /// 90th percentile in hours (nearest rank).
    pub p90_hours: f64,
    /// The longest delay in hours.
    pub max_hours: f64,
    /// The limit: a delay beyond this many days is late.
    pub limit_days: u32,
    /// Events reported beyond the limit.
    pub late: u64,
    /// `late / events`.
    pub late_share: f64,
}

impl ReportingDelay {
    /// The figures of `row` under a limit of `limit_days`.
    pub fn new(row: &DelayRow, limit_days: u32) -> ReportingDelay {
        let hours = |ms: i64| ((ms as f64) / 36_000.0).round() / 100.0;
        ReportingDelay {
            source: row.source,
            events: row.events,
            p50_hours: hours(row.p50_ms),
            p90_hours: hours(row.p90_ms),
            max_hours: hours(row.max_ms),
            limit_days,
            late: row.late,
            late_share: if row.events == 0 {
                0.0
            } else {
                row.late as f64 / row.events as f64
            },
        }
    }

    /// Why it is a finding (when `late > 0`), with the numbers.
    pub fn reason(&self) -> String {
        format!(
            "{} of {} events ({:.1} %) reported more than {} days after they occurred; delay median {:.1} h, 90th percentile {:.1} h, longest {:.1} days",
            self.late,
            self.events,
            self.late_share * 100.0,
            self.limit_days,
            self.p50_hours,
            self.p90_hours,
            self.max_hours / 24.0
        )
    }
}

/// The limit in milliseconds: an event is late when reported − occurred exceeds it.
pub fn late_limit_ms(limit_days: u32) -> i64 {
    i64::from(limit_days) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_is_the_published_definition() {
        // n = 10: the median is the 5th value, the 90th percentile the 9th.
        assert_eq!(nearest_rank(50, 10), 4);
        assert_eq!(nearest_rank(90, 10), 8);
        // n = 1: every percentile is the only value.
        assert_eq!(nearest_rank(50, 1), 0);
        assert_eq!(nearest_rank(90, 1), 0);
        // n = 3: ceil(1.5) = 2nd, ceil(2.7) = 3rd.
        assert_eq!(nearest_rank(50, 3), 1);
        assert_eq!(nearest_rank(90, 3), 2);
        assert_eq!(nearest_rank(100, 7), 6);
    }

    #[test]
    fn id_areas_are_six_digits_or_none() {
        assert_eq!(id_area("522425********123X").as_deref(), Some("522425"));
        assert_eq!(id_area("52**"), None);
        assert_eq!(id_area("5224*5********123X"), None);
    }

    #[test]
    fn delays_in_hours_and_share() {
        let row = DelayRow {
            source: Source::MedicalInsurance,
            events: 4,
            late: 1,
            p50_ms: 5_400_000,
            p90_ms: 86_400_000,
            max_ms: 10 * 86_400_000,
        };
        let delay = ReportingDelay::new(&row, 7);
        assert_eq!(delay.p50_hours, 1.5);
        assert_eq!(delay.p90_hours, 24.0);
        assert_eq!(delay.max_hours, 240.0);
        assert_eq!(delay.late_share, 0.25);
        assert!(delay.reason().contains("1 of 4 events (25.0 %)"));
    }
}
