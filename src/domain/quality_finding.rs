//! Data-quality findings as the store records them: one per (rule, subject), open
//! from the judged day it was first found until a pass no longer finds it (the data
//! was corrected). What `yujing data-quality --record` hands the store and reads back.

use chrono::NaiveDate;
use serde::Serialize;

use super::event::Source;
use super::ids::RegionCode;

/// A consistency finding of one pass, ready to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityFinding {
    /// Rule id (`quality.*`).
    pub rule: String,
    /// What it is about: a household number, `source:` and a person's pseudonym (hex)
    /// or household, or a department. Never a clear resident ID.
    pub subject: String,
    /// The household's village, when it has one.
    pub region_code: Option<RegionCode>,
    /// The department, for the department rules.
    pub source: Option<Source>,
    /// The fields the rule judges.
    pub fields: Vec<String>,
    /// Why, with the numbers of this pass.
    pub reason: String,
}

impl QualityFinding {
    /// The stable key: rule and subject.
    pub fn key(&self) -> String {
        format!("{}|{}", self.rule, self.subject)
    }
}

/// A finding as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedFinding {
    /// The finding as last seen.
    #[serde(flatten)]
    pub finding: QualityFinding,
    /// The judged day it was (last) first found.
    pub since: NaiveDate,
    /// The judged day of the last pass that found it.
    pub last_seen: NaiveDate,
    /// The judged day of the first pass that no longer found it.
    pub resolved_on: Option<NaiveDate>,
}

/// What recording one pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// Findings new (or found again after being resolved).
    pub opened: u64,
    /// Findings open before and found again.
    pub kept: u64,
    /// Open findings this pass no longer found: resolved.
    pub resolved: u64,
}
