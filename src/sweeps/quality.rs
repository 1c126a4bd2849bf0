//! The data-quality (三一致) rules computable from the registry alone: the household
//! row against its member rows, and the status dates against each other and today.
//! Household in, findings appended; each rule has a stable `quality.*` id.
//!
//! Two rules look at the department feeds instead, over the store's events:
//! [`UNMATCHED_PERSONS`] and [`LATE_REPORTING`] (figures in
//! [`crate::domain::department_quality`]).
//!
//! Not here, because the registry cannot hold them: a person in two households (the
//! import refuses a second row of one person, and the registry keys members by
//! person); a deceased member still counted (no death is recorded); a risk-eliminated
//! household without its date (the date is what marks it). Rules over other data
//! (civil affairs' decisions) come with the stored findings.

use chrono::NaiveDate;

use super::{Finding, Rule, RuleKind};
use crate::domain::registry::{HouseholdIdx, HouseholdStatus, Registry};

/// The household row's member count differs from its member rows.
pub const MEMBER_COUNT_MISMATCH: Rule = Rule {
    id: "quality.member_count_mismatch",
    kind: RuleKind::Quality,
    title: "member count differs from the member rows",
    outcomes: &[],
    fields: &["members"],
};

/// The household row's labour-capable count differs from the members flagged.
pub const LABOUR_COUNT_MISMATCH: Rule = Rule {
    id: "quality.labour_count_mismatch",
    kind: RuleKind::Quality,
    title: "labour-capable count differs from the members flagged",
    outcomes: &[],
    fields: &["labour_capable"],
};

/// Identified after its risk was eliminated.
pub const DATES_OUT_OF_ORDER: Rule = Rule {
    id: "quality.dates_out_of_order",
    kind: RuleKind::Quality,
    title: "identified after the risk was eliminated",
    outcomes: &[],
    fields: &["identified_on", "risk_eliminated_on"],
};

/// A risk-elimination date without an identification date.
pub const ELIMINATED_WITHOUT_IDENTIFIED: Rule = Rule {
    id: "quality.eliminated_without_identified",
    kind: RuleKind::Quality,
    title: "risk eliminated but never identified",
    outcomes: &[],
    fields: &["identified_on", "risk_eliminated_on"],
};

/// A risk-elimination date on a household that is not a monitoring object.
pub const ELIMINATED_NOT_MONITORED: Rule = Rule {
    id: "quality.eliminated_not_monitored",
    kind: RuleKind::Quality,
    title: "risk-elimination date on a household not monitored",
    outcomes: &[],
    fields: &["status", "risk_eliminated_on"],
};

/// A status date after today.
pub const DATE_IN_FUTURE: Rule = Rule {
    id: "quality.date_in_future",
    kind: RuleKind::Quality,
    title: "status date after today",
    outcomes: &[],
    fields: &["identified_on", "risk_eliminated_on"],
};

/// Monitored without a monitoring type (监测对象类型).
pub const MONITORED_WITHOUT_TYPE: Rule = Rule {
    id: "quality.monitored_without_type",
    kind: RuleKind::Quality,
    title: "monitored without a monitoring type",
    outcomes: &[],
    fields: &["status", "monitoring_type"],
};

/// Monitored without an identification date.
pub const MONITORED_WITHOUT_IDENTIFIED: Rule = Rule {
    id: "quality.monitored_without_identified",
    kind: RuleKind::Quality,
    title: "monitored without an identification date",
    outcomes: &[],
    fields: &["status", "identified_on"],
};

/// Every consistency rule, in report order.
pub const RULES: &[&Rule] = &[
    &MEMBER_COUNT_MISMATCH,
    &LABOUR_COUNT_MISMATCH,
    &DATES_OUT_OF_ORDER,
    &ELIMINATED_WITHOUT_IDENTIFIED,
    &ELIMINATED_NOT_MONITORED,
    &DATE_IN_FUTURE,
    &MONITORED_WITHOUT_TYPE,
    &MONITORED_WITHOUT_IDENTIFIED,
];

/// A department sent events for a person (or household) the roster does not hold:
/// someone perhaps owed a place on it (应纳未纳 risk). One finding per department and
/// subject.
pub const UNMATCHED_PERSONS: Rule = Rule {
    id: "quality.unmatched_persons",
    kind: RuleKind::Quality,
    title: "department events for persons not on the roster (应纳未纳 risk)",
    outcomes: &[],
    fields: &["person_id", "household_id"],
};

/// A department reports events more than `sweeps.late_report_days` after they
/// occurred (录入不及时). One finding per department with late events.
pub const LATE_REPORTING: Rule = Rule {
    id: "quality.late_reporting",
    kind: RuleKind::Quality,
    title: "department events reported late (录入不及时)",
    outcomes: &[],
    fields: &["occurred_at", "reported_at"],
};

/// The rules over the department feeds, in report order.
pub const DEPARTMENT_RULES: &[&Rule] = &[&UNMATCHED_PERSONS, &LATE_REPORTING];

/// Appends household `idx`'s consistency findings on `today` to `out`.
pub fn check(registry: &Registry, idx: HouseholdIdx, today: NaiveDate, out: &mut Vec<Finding>) {
    let household = registry.household(idx);
    let mut push = |rule: &'static Rule, reason: String| {
        out.push(Finding {
            rule,
            household: idx,
            reason,
        })
    };
    let rows = registry.member_rows(idx);
    if household.members != rows {
        push(
            &MEMBER_COUNT_MISMATCH,
            format!(
                "household row says {} members, the member roster has {rows}",
                household.members
            ),
        );
    }
    let flagged = registry.labour_capable_members(idx);
    if household.labour_capable != flagged {
        push(
            &LABOUR_COUNT_MISMATCH,
            format!(
                "household row says {} labour-capable, {flagged} members are flagged labour-capable",
                household.labour_capable
            ),
        );
    }
    let (identified, eliminated) = (household.identified_on, household.risk_eliminated_on);
    if let (Some(identified), Some(eliminated)) = (identified, eliminated)
        && identified > eliminated
    {
        push(
            &DATES_OUT_OF_ORDER,
            format!("identified on {identified}, after its risk was eliminated on {eliminated}"),
        );
    }
    if let (None, Some(eliminated)) = (identified, eliminated) {
        push(
            &ELIMINATED_WITHOUT_IDENTIFIED,
            format!("risk eliminated on {eliminated}, no identification date"),
        );
    }
    if let Some(eliminated) = eliminated
        && household.status != HouseholdStatus::Monitored
    {
        push(
            &ELIMINATED_NOT_MONITORED,
            format!(
                "risk eliminated on {eliminated}, but the household is {}, not monitored",
                household.status
            ),
        );
    }
    let future: Vec<String> = [
        ("identified_on", identified),
        ("risk_eliminated_on", eliminated),
    ]
    .into_iter()
    .filter_map(|(name, date)| date.filter(|d| *d > today).map(|d| format!("{name} {d}")))
    .collect();
    if !future.is_empty() {
        push(
            &DATE_IN_FUTURE,
            format!("{} after today ({today})", future.join(" and ")),
        );
    }
    if household.status == HouseholdStatus::Monitored {
        if household.monitoring_type.is_none() {
            push(
                &MONITORED_WITHOUT_TYPE,
                "monitored, no monitoring type (unstable_lifted, marginal or sudden_hardship)"
                    .to_string(),
            );
        }
        if identified.is_none() {
            push(
                &MONITORED_WITHOUT_IDENTIFIED,
                "monitored, no identification date".to_string(),
            );
        }
    }
}
