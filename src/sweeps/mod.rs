//! Standing sweeps and data-quality (三一致) checks over the in-memory [`Registry`]:
//! registry household -> the [`Finding`]s it qualifies for today, each naming its rule
//! by a stable id and saying, with the numbers, why. Pure and per household, so that
//! a change re-evaluates one household ([`evaluate_household`]) and a full pass is a
//! loop ([`full_pass`]). "Today" is a China Standard Time calendar day the caller
//! gives (event time); nothing here reads a clock. Nothing fails: a household either
//! qualifies or not.
//!
//! The sweeps follow the county work plan's (二) assistance review of households
//! monitored 2 years or more and developmental assistance for labour-capable ones,
//! (三) the 回头看 of risk-eliminated households, (四) the 整户无劳动能力兜底保障户, and
//! the guide's 风险消除 readiness; [`quality`] holds (六)'s consistency rules.

pub mod quality;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate};
use serde::Serialize;

use crate::config::Settings;
use crate::domain::ids::{HouseholdId, RegionCode};
use crate::domain::registry::{Household, HouseholdIdx, HouseholdStatus, Registry};

/// What a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A standing sweep: the household is owed a piece of work.
    Sweep,
    /// A consistency rule: the registry contradicts itself or the calendar.
    Quality,
}

/// A named rule. The id is stable: it is what findings, counts and (later) tasks
/// are keyed by.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// `sweep.*` or `quality.*`.
    pub id: &'static str,
    /// Sweep or consistency rule.
    pub kind: RuleKind,
    /// What it finds, in the work plan's words.
    pub title: &'static str,
    /// The outcomes the work it asks for ends with (empty: not yet defined).
    pub outcomes: &'static [&'static str],
    /// The registry columns (or event fields) it judges: what a correction touches.
    pub fields: &'static [&'static str],
}

/// Monitored, not risk-eliminated, identified `sweeps.long_monitored_years` ago or
/// earlier: review its assistance (识别2年以上未消除风险).
pub const LONG_MONITORED: Rule = Rule {
    id: "sweep.long_monitored",
    kind: RuleKind::Sweep,
    title: "assistance review: monitored for years, risk not eliminated (帮扶措施排查)",
    outcomes: &[],
    fields: &["status", "identified_on", "risk_eliminated_on"],
};

/// Monitored, not risk-eliminated, with labour-capable members and no developmental
/// assistance marked: make a developmental assistance plan (开发式帮扶, not
/// "一兜了之").
pub const DEVELOPMENTAL_ASSISTANCE: Rule = Rule {
    id: "sweep.developmental_assistance",
    kind: RuleKind::Sweep,
    title: "developmental assistance plan: labour-capable, none recorded (开发式帮扶)",
    outcomes: &[],
    fields: &["status", "labour_capable", "developmental_assistance"],
};

/// Risk-eliminated, income per capita within `sweeps.recheck_income_margin_share`
/// of the line (or below it): re-check (回头看). The village closes it with
/// `risk_rollback` (the elimination was wrong or a new risk arose: 风险回退) or
/// `stable` (the elimination holds).
pub const RECHECK: Rule = Rule {
    id: "sweep.recheck",
    kind: RuleKind::Sweep,
    title: "回头看: risk eliminated, income near or below the line",
    outcomes: &["risk_rollback", "stable"],
    fields: &["risk_eliminated_on", "annual_net_income_yuan", "members"],
};

/// Monitored, not risk-eliminated, no labour-capable member, on 特困 or 低保, not
/// yet marked: a candidate 整户无劳动能力兜底保障户 for township and village to confirm.
/// The registry knows no 低保 tier, so any 低保 counts.
pub const SAFETY_NET: Rule = Rule {
    id: "sweep.safety_net_candidate",
    kind: RuleKind::Sweep,
    title: "整户无劳动能力兜底保障户 candidate",
    outcomes: &[],
    fields: &["labour_capable", "dibao", "tekun", "safety_net"],
};

/// Monitored `sweeps.elimination_min_monitored_months` or more, not risk-eliminated,
/// income per capita above the line, someone able to work: a candidate for 风险消除.
/// Not yet checked (the registry does not hold them): at least one assistance
/// measure, income above the line over months, no open 三保障 or water problem.
pub const ELIMINATION_READY: Rule = Rule {
    id: "sweep.elimination_ready",
    kind: RuleKind::Sweep,
    title: "风险消除 candidate: monitored long enough, income above the line",
    outcomes: &[],
    fields: &[
        "identified_on",
        "annual_net_income_yuan",
        "members",
        "labour_capable",
    ],
};

/// Every sweep, in report order.
pub const SWEEPS: &[&Rule] = &[
    &LONG_MONITORED,
    &DEVELOPMENTAL_ASSISTANCE,
    &RECHECK,
    &SAFETY_NET,
    &ELIMINATION_READY,
];

/// Every rule, sweeps then consistency rules.
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    SWEEPS.iter().chain(quality::RULES.iter()).copied()
}

/// One household qualifying for one rule, today.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static Rule,
    /// The household.
    pub household: HouseholdIdx,
    /// Why, with the numbers that decided it.
    pub reason: String,
}

/// A finding as it is printed and exported (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRecord {
    /// Rule id.
    pub rule: &'static str,
    /// Sweep or consistency rule.
    pub kind: RuleKind,
    /// Household number.
    pub household_id: HouseholdId,
    /// Its village.
    pub region_code: RegionCode,
    /// Why.
    pub reason: String,
    /// The outcomes the work ends with (omitted when not yet defined).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub outcomes: &'static [&'static str],
    /// The registry columns the rule judges.
    pub fields: &'static [&'static str],
}

impl Finding {
    /// The finding with its household's identity, for output.
    pub fn record(&self, registry: &Registry) -> FindingRecord {
        let household = registry.household(self.household);
        FindingRecord {
            rule: self.rule.id,
            kind: self.rule.kind,
            household_id: household.household_id.clone(),
            region_code: household.region_code,
            reason: self.reason.clone(),
            outcomes: self.rule.outcomes,
            fields: self.rule.fields,
        }
    }
}

/// Everything household `idx` qualifies for on `today`: sweeps, then consistency rules.
pub fn evaluate_household(
    registry: &Registry,
    idx: HouseholdIdx,
    today: NaiveDate,
    settings: &Settings,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    evaluate_household_into(registry, idx, today, settings, &mut findings);
    findings
}

/// [`evaluate_household`], appending to `out` (the full pass reuses one vector).
pub fn evaluate_household_into(
    registry: &Registry,
    idx: HouseholdIdx,
    today: NaiveDate,
    settings: &Settings,
    out: &mut Vec<Finding>,
) {
    sweeps(registry, idx, today, settings, out);
    quality::check(registry, idx, today, out);
}

/// Every household of the registry, in index order.
pub fn full_pass(registry: &Registry, today: NaiveDate, settings: &Settings) -> Vec<Finding> {
    let mut findings = Vec::new();
    for idx in 0..registry.household_count() as HouseholdIdx {
        evaluate_household_into(registry, idx, today, settings, &mut findings);
    }
    findings
}

/// Findings counted by rule and by village.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Findings per rule id (every rule listed, zeros included).
    pub by_rule: BTreeMap<&'static str, u64>,
    /// Findings per village, per rule id (only villages and rules with findings).
    pub by_village: BTreeMap<RegionCode, BTreeMap<&'static str, u64>>,
}

/// Counts `findings` by rule and by village.
pub fn count(registry: &Registry, findings: &[Finding]) -> Counts {
    let mut counts = Counts {
        by_rule: rules().map(|rule| (rule.id, 0)).collect(),
        ..Counts::default()
    };
    for finding in findings {
        *counts.by_rule.entry(finding.rule.id).or_default() += 1;
        let village = registry.household(finding.household).region_code;
        *counts
            .by_village
            .entry(village)
            .or_default()
            .entry(finding.rule.id)
            .or_default() += 1;
    }
    counts
}

/// Labour-capable members: from the member roster when the household has member
/// rows (the people themselves), else the household row's declared count. Where
/// the two disagree, `quality.labour_count_mismatch` says so.
pub(crate) fn labour_capable(registry: &Registry, idx: HouseholdIdx) -> (u32, &'static str) {
    if registry.member_rows(idx) > 0 {
        (registry.labour_capable_members(idx), "on the member roster")
    } else {
        (
            registry.household(idx).labour_capable,
            "declared (no member rows)",
        )
    }
}

/// `months` calendar months after `date` (the end of a shorter month when the day
/// does not exist: 2022-02-28 for 2020-02-29 plus 24).
fn after_months(date: NaiveDate, months: u32) -> NaiveDate {
    date.checked_add_months(Months::new(months))
        .unwrap_or(NaiveDate::MAX)
}

/// Yuan in whole fen, so that "at most the line times 1.1" is not decided by a
/// floating-point rounding of 1.1.
fn fen(yuan: f64) -> i64 {
    (yuan * 100.0).round() as i64
}

fn yuan(value: f64) -> String {
    format!("{value:.2}")
}

fn sweeps(
    registry: &Registry,
    idx: HouseholdIdx,
    today: NaiveDate,
    settings: &Settings,
    out: &mut Vec<Finding>,
) {
    let household = registry.household(idx);
    if household.status != HouseholdStatus::Monitored {
        return;
    }
    let config = &settings.sweeps;
    let (labour, labour_source) = labour_capable(registry, idx);
    let year = today.year();
    let line = || {
        settings
            .policy
            .line_in_force(&household.region_code.to_string(), year)
    };
    let mut push = |rule: &'static Rule, reason: String| {
        out.push(Finding {
            rule,
            household: idx,
            reason,
        })
    };
    if let Some(eliminated) = household.risk_eliminated_on {
        if let Some(reason) = recheck(
            household,
            eliminated,
            line(),
            config.recheck_income_margin_share,
        ) {
            push(&RECHECK, reason);
        }
        return;
    }
    if let Some(identified) = household.identified_on {
        let due = after_months(identified, config.long_monitored_years.saturating_mul(12));
        if due <= today {
            push(
                &LONG_MONITORED,
                format!(
                    "identified on {identified}, {} year(s) on {due}, risk not eliminated",
                    config.long_monitored_years
                ),
            );
        }
    }
    if labour > 0 && !household.developmental_assistance {
        push(
            &DEVELOPMENTAL_ASSISTANCE,
            format!(
                "{labour} of {} members labour-capable ({labour_source}); no developmental assistance (已实施开发式帮扶) recorded{}",
                household.members,
                if household.dibao || household.tekun {
                    "; lives on 低保/特困 (一兜了之?)"
                } else {
                    ""
                }
            ),
        );
    }
    if labour == 0 && (household.tekun || household.dibao) && !household.safety_net {
        push(
            &SAFETY_NET,
            format!(
                "no labour-capable member among {} ({labour_source}); receives {}; not marked 兜底保障",
                household.members,
                match (household.tekun, household.dibao) {
                    (true, true) => "特困 support and 低保",
                    (true, false) => "特困 support",
                    _ => "低保 (tier not in the registry)",
                }
            ),
        );
    }
    if let Some(identified) = household.identified_on {
        let months = config.elimination_min_monitored_months;
        let ready_from = after_months(identified, months);
        let line = line();
        let per_capita = household.per_capita_income();
        if labour > 0 && ready_from <= today && fen(per_capita) > fen(line) {
            push(
                &ELIMINATION_READY,
                format!(
                    "monitored since {identified} ({months} months on {ready_from}); income per capita {} above the {year} line {}; {labour} labour-capable ({labour_source}); assistance measures, income over months and 三保障 not checked here",
                    yuan(per_capita),
                    yuan(line)
                ),
            );
        }
    }
}

/// The 回头看 reason when a risk-eliminated household's income per capita is at most
/// `line × (1 + margin)`.
fn recheck(household: &Household, eliminated: NaiveDate, line: f64, margin: f64) -> Option<String> {
    let per_capita = household.per_capita_income();
    let bound = line * (1.0 + margin);
    if fen(per_capita) > fen(bound) {
        return None;
    }
    let position = if fen(per_capita) < fen(line) {
        "below".to_string()
    } else {
        format!("within {:.0} % of", margin * 100.0)
    };
    Some(format!(
        "risk eliminated on {eliminated}; income per capita {} is {position} the line {} (at most {} re-checks)",
        yuan(per_capita),
        yuan(line),
        yuan(bound)
    ))
}
