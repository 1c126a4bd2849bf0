//! The household rules: one household's risk facts within a look-back window ->
//! findings (rule id, level, risk type, reason, evidence). Every threshold comes
//! from `[rules]` and `[policy]` configuration. Pure and total: it cannot fail, and
//! the same window always gives the same findings, whatever order events arrived in.

use std::collections::BTreeSet;

use crate::config::RuleSettings;
use crate::domain::alert::{Level, RiskType};
use crate::domain::event::{Decision, Hazard, HouseDamage, HousingRating, Program};
use crate::domain::ids::EventId;
use crate::domain::registry::{Household, HouseholdStatus};

use super::facts::{Fact, RiskEvent};

/// Stable rule ids, as alerts cite them.
pub mod rule_ids {
    /// A 低保 / 特困 application filed or approved.
    pub const ASSISTANCE_DIBAO_TEKUN: &str = "assistance.dibao_tekun";
    /// A 低保 / 特困 application rejected.
    pub const ASSISTANCE_REJECTED: &str = "assistance.rejected";
    /// Temporary assistance (临时救助).
    pub const ASSISTANCE_TEMPORARY: &str = "assistance.temporary";
    /// Out-of-pocket medical cost pushes income per capita below the line.
    pub const MEDICAL_INCOME_BELOW_LINE: &str = "medical.income_below_line";
    /// Out-of-pocket medical cost at or above the absolute or relative threshold.
    pub const MEDICAL_HIGH_OUT_OF_POCKET: &str = "medical.high_out_of_pocket";
    /// A serious-illness diagnosis or settlement.
    pub const MEDICAL_SERIOUS_ILLNESS: &str = "medical.serious_illness";
    /// Disability grade 1–2.
    pub const DISABILITY_SEVERE: &str = "disability.severe";
    /// Disability grade 3–4 (informational).
    pub const DISABILITY_MODERATE: &str = "disability.moderate";
    /// The only labour-capable member is severely disabled.
    pub const LABOUR_ONLY_EARNER_DISABLED: &str = "labour.only_earner_disabled";
    /// A job lost.
    pub const EMPLOYMENT_JOB_LOSS: &str = "employment.job_loss";
    /// The only labour-capable member lost their job.
    pub const EMPLOYMENT_ONLY_EARNER: &str = "employment.only_earner";
    /// Lost wages push income per capita below the line.
    pub const EMPLOYMENT_INCOME_BELOW_LINE: &str = "employment.income_below_line";
    /// A house collapsed in a disaster.
    pub const DISASTER_HOUSE_COLLAPSED: &str = "disaster.house_collapsed";
    /// Disaster loss at or above the configured share of income.
    pub const DISASTER_HEAVY_LOSS: &str = "disaster.heavy_loss";
    /// Any other disaster damage.
    pub const DISASTER_IMPACT: &str = "disaster.impact";
    /// Took part in a failed industry project.
    pub const INDUSTRY_PROJECT_FAILURE: &str = "industry.project_failure";
    /// A child left compulsory education.
    pub const EDUCATION_DROPOUT: &str = "education.dropout";
    /// Housing rated C.
    pub const HOUSING_UNSAFE_C: &str = "housing.unsafe_c";
    /// Housing rated D.
    pub const HOUSING_UNSAFE_D: &str = "housing.unsafe_d";
    /// Several distinct risk types within the window: one level up.
    pub const COMBINED_MULTIPLE_RISKS: &str = "combined.multiple_risks";
}

use rule_ids::*;

/// One rule that fired in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Rule id.
    pub rule_id: &'static str,
    /// Level it asks for.
    pub level: Level,
    /// Risk type (`None` for combined rules).
    pub risk_type: Option<RiskType>,
    /// Hazard, for disaster rules.
    pub hazard: Option<Hazard>,
    /// Why, with the deciding numbers.
    pub reason: String,
    /// Events it rests on.
    pub evidence: Vec<EventId>,
}

/// The result of judging one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Findings, in rule order.
    pub findings: Vec<Finding>,
    /// Income per capita after every shock in the window.
    pub adjusted_per_capita_income: f64,
}

impl Evaluation {
    /// The level the findings ask for (the combined rule included).
    pub fn level(&self) -> Option<Level> {
        self.findings.iter().map(|f| f.level).max()
    }
}

/// What the rules know of the household besides its window.
#[derive(Debug, Clone, Copy)]
pub struct HouseholdContext<'a> {
    /// Registry record.
    pub household: &'a Household,
    /// The monitoring line in force.
    pub monitoring_line: f64,
}

fn yuan(value: f64) -> String {
    format!("{value:.0}")
}

/// Judges the window `events` (all within the look-back window) for one household.
pub fn evaluate(
    context: HouseholdContext<'_>,
    events: &[&RiskEvent],
    rules: &RuleSettings,
) -> Evaluation {
    let household = context.household;
    let line = context.monitoring_line;
    let members = f64::from(household.members.max(1));
    let income = household.annual_net_income_yuan;
    let per_capita = income / members;
    let mut findings = Vec::new();
    let ids = |filter: &dyn Fn(&Fact) -> bool| -> Vec<EventId> {
        events
            .iter()
            .filter(|e| filter(&e.fact))
            .map(|e| e.event_id.clone())
            .collect()
    };

    // Assistance applications: never suppressed because the household already
    // receives an allowance — a new application is new evidence of hardship.
    for event in events {
        let Fact::Assistance { program, decision } = event.fact else {
            continue;
        };
        let (rule_id, level, reason) = match (program, decision) {
            (Program::Dibao | Program::Tekun, Decision::Applied | Decision::Approved) => (
                ASSISTANCE_DIBAO_TEKUN,
                rules.assistance.dibao_tekun_level,
                format!("{} application {}", program_zh(program), decision),
            ),
            (Program::Dibao | Program::Tekun, Decision::Rejected) => (
                ASSISTANCE_REJECTED,
                rules.assistance.rejected_level,
                format!(
                    "{} application rejected: income close to the assistance bar",
                    program_zh(program)
                ),
            ),
            (Program::Temporary, Decision::Applied | Decision::Approved) => (
                ASSISTANCE_TEMPORARY,
                rules.assistance.temporary_level,
                format!("临时救助 (temporary assistance) {decision}"),
            ),
            (Program::Temporary, Decision::Rejected) => continue,
        };
        push_merged(
            &mut findings,
            Finding {
                rule_id,
                level,
                risk_type: Some(RiskType::Other),
                hazard: None,
                reason,
                evidence: vec![event.event_id.clone()],
            },
        );
    }

    // Medical cost.
    let medical: Vec<&RiskEvent> = events
        .iter()
        .copied()
        .filter(|e| matches!(e.fact, Fact::Medical { .. }))
        .collect();
    let out_of_pocket: f64 = medical
        .iter()
        .map(|e| match e.fact {
            Fact::Medical { out_of_pocket, .. } => out_of_pocket,
            _ => 0.0,
        })
        .sum();
    if out_of_pocket > 0.0 {
        // Cost from accidental injury is 因意外事故 when it is most of the cost.
        let accident_cost: f64 = medical
            .iter()
            .map(|e| match e.fact {
                Fact::Medical {
                    accident: true,
                    out_of_pocket,
                    ..
                } => out_of_pocket,
                _ => 0.0,
            })
            .sum();
        let risk = if accident_cost * 2.0 > out_of_pocket {
            RiskType::Accident
        } else {
            RiskType::Illness
        };
        let paying =
            ids(&|f| matches!(f, Fact::Medical { out_of_pocket, .. } if *out_of_pocket > 0.0));
        let after = (income - out_of_pocket) / members;
        if per_capita >= line && after < line {
            findings.push(Finding {
                rule_id: MEDICAL_INCOME_BELOW_LINE,
                level: Level::Red,
                risk_type: Some(risk),
                hazard: None,
                reason: format!(
                    "out-of-pocket medical cost {} yuan in the window brings income per capita from {} to {} yuan, below the {} yuan line",
                    yuan(out_of_pocket),
                    yuan(per_capita),
                    yuan(after),
                    yuan(line)
                ),
                evidence: paying.clone(),
            });
        }
        let threshold = match household.status {
            HouseholdStatus::Lifted => rules.medical.oop_threshold_yuan_lifted,
            HouseholdStatus::Monitored => rules.medical.oop_threshold_yuan_monitored,
            HouseholdStatus::Ordinary => rules.medical.oop_threshold_yuan_ordinary,
        };
        let share_bar = rules.medical.oop_income_share * income;
        let over_share = income > 0.0 && out_of_pocket >= share_bar;
        if out_of_pocket >= threshold || over_share {
            let why = if out_of_pocket >= threshold {
                format!(
                    "at or above the {} yuan threshold for {} households",
                    yuan(threshold),
                    household.status
                )
            } else {
                format!(
                    "at or above {:.0}% of annual household income ({} yuan)",
                    rules.medical.oop_income_share * 100.0,
                    yuan(income)
                )
            };
            findings.push(Finding {
                rule_id: MEDICAL_HIGH_OUT_OF_POCKET,
                level: Level::Orange,
                risk_type: Some(risk),
                hazard: None,
                reason: format!(
                    "out-of-pocket medical cost {} yuan in the window, {why}",
                    yuan(out_of_pocket)
                ),
                evidence: paying,
            });
        }
    }
    let serious = ids(&|f| {
        matches!(
            f,
            Fact::SeriousIllness | Fact::Medical { serious: true, .. }
        )
    });
    if !serious.is_empty() {
        findings.push(Finding {
            rule_id: MEDICAL_SERIOUS_ILLNESS,
            level: Level::Orange,
            risk_type: Some(RiskType::Illness),
            hazard: None,
            reason: "serious illness (大病) diagnosed or settled".to_string(),
            evidence: serious,
        });
    }

    // Disability.
    let severe = ids(&|f| matches!(f, Fact::Disability { grade: 1 | 2, .. }));
    if !severe.is_empty() {
        findings.push(Finding {
            rule_id: DISABILITY_SEVERE,
            level: Level::Orange,
            risk_type: Some(RiskType::Disability),
            hazard: None,
            reason: "disability certified at grade 1-2 (重残)".to_string(),
            evidence: severe,
        });
    }
    let moderate = ids(&|f| matches!(f, Fact::Disability { grade: 3 | 4, .. }));
    if !moderate.is_empty() {
        findings.push(Finding {
            rule_id: DISABILITY_MODERATE,
            level: Level::Blue,
            risk_type: Some(RiskType::Disability),
            hazard: None,
            reason: "disability certified at grade 3-4".to_string(),
            evidence: moderate,
        });
    }
    let disabled_earner = ids(&|f| {
        matches!(
            f,
            Fact::Disability {
                grade: 1 | 2,
                only_earner: true
            }
        )
    });
    if !disabled_earner.is_empty() {
        findings.push(Finding {
            rule_id: LABOUR_ONLY_EARNER_DISABLED,
            level: Level::Orange,
            risk_type: Some(RiskType::LackOfLabour),
            hazard: None,
            reason: "the household's only labour-capable member is severely disabled".to_string(),
            evidence: disabled_earner,
        });
    }

    // Employment.
    let job_losses = ids(&|f| matches!(f, Fact::Unemployment { .. }));
    let lost_income: f64 = events
        .iter()
        .map(|e| match e.fact {
            Fact::Unemployment { lost_income, .. } => lost_income,
            _ => 0.0,
        })
        .sum();
    if !job_losses.is_empty() {
        findings.push(Finding {
            rule_id: EMPLOYMENT_JOB_LOSS,
            level: Level::Yellow,
            risk_type: Some(RiskType::UnstableEmployment),
            hazard: None,
            reason: format!("{} unemployment registration(s)", job_losses.len()),
            evidence: job_losses.clone(),
        });
        let only = ids(&|f| {
            matches!(
                f,
                Fact::Unemployment {
                    only_earner: true,
                    ..
                }
            )
        });
        if !only.is_empty() {
            findings.push(Finding {
                rule_id: EMPLOYMENT_ONLY_EARNER,
                level: Level::Orange,
                risk_type: Some(RiskType::UnstableEmployment),
                hazard: None,
                reason: "the household's only labour-capable member lost their job".to_string(),
                evidence: only,
            });
        }
        let after = (income - lost_income) / members;
        if lost_income > 0.0 && per_capita >= line && after < line {
            findings.push(Finding {
                rule_id: EMPLOYMENT_INCOME_BELOW_LINE,
                level: Level::Orange,
                risk_type: Some(RiskType::UnstableEmployment),
                hazard: None,
                reason: format!(
                    "lost wages {} yuan bring income per capita from {} to {} yuan, below the {} yuan line",
                    yuan(lost_income),
                    yuan(per_capita),
                    yuan(after),
                    yuan(line)
                ),
                evidence: job_losses,
            });
        }
    }

    // Disasters.
    let mut disaster_loss = 0.0;
    for event in events {
        if let Fact::DisasterImpact { loss, .. } = event.fact {
            disaster_loss += loss;
        }
    }
    let damaging: Vec<&RiskEvent> = events
        .iter()
        .copied()
        .filter(|e| {
            matches!(e.fact, Fact::DisasterImpact { loss, house, crop_loss_ratio, .. }
                if loss > 0.0 || house != HouseDamage::None || crop_loss_ratio.is_some_and(|r| r > 0.0))
        })
        .collect();
    let hazard_of = |e: &RiskEvent| match e.fact {
        Fact::DisasterImpact { hazard, .. } => Some(hazard),
        _ => None,
    };
    let collapsed: Vec<&RiskEvent> = damaging
        .iter()
        .copied()
        .filter(|e| {
            matches!(
                e.fact,
                Fact::DisasterImpact {
                    house: HouseDamage::Collapsed,
                    ..
                }
            )
        })
        .collect();
    let heavy_bar = rules.disaster.heavy_loss_income_share * income;
    let heavy = disaster_loss > 0.0 && (income <= 0.0 || disaster_loss >= heavy_bar);
    if !collapsed.is_empty() {
        findings.push(Finding {
            rule_id: DISASTER_HOUSE_COLLAPSED,
            level: Level::Red,
            risk_type: Some(RiskType::NaturalDisaster),
            hazard: collapsed.first().and_then(|e| hazard_of(e)),
            reason: "house collapsed in a disaster".to_string(),
            evidence: collapsed.iter().map(|e| e.event_id.clone()).collect(),
        });
    }
    if heavy {
        findings.push(Finding {
            rule_id: DISASTER_HEAVY_LOSS,
            level: Level::Orange,
            risk_type: Some(RiskType::NaturalDisaster),
            hazard: damaging.first().and_then(|e| hazard_of(e)),
            reason: format!(
                "disaster loss {} yuan, at or above {:.0}% of annual household income ({} yuan)",
                yuan(disaster_loss),
                rules.disaster.heavy_loss_income_share * 100.0,
                yuan(income)
            ),
            evidence: damaging.iter().map(|e| e.event_id.clone()).collect(),
        });
    }
    // Monotone on purpose: more evidence never removes a finding, so the union of
    // findings does not depend on the order events arrive in.
    if !damaging.is_empty() {
        findings.push(Finding {
            rule_id: DISASTER_IMPACT,
            level: Level::Yellow,
            risk_type: Some(RiskType::NaturalDisaster),
            hazard: damaging.first().and_then(|e| hazard_of(e)),
            reason: format!("disaster damage, loss {} yuan", yuan(disaster_loss)),
            evidence: damaging.iter().map(|e| e.event_id.clone()).collect(),
        });
    }

    // Industry, education, housing.
    let failures = ids(&|f| matches!(f, Fact::IndustryFailure));
    if !failures.is_empty() {
        findings.push(Finding {
            rule_id: INDUSTRY_PROJECT_FAILURE,
            level: Level::Orange,
            risk_type: Some(RiskType::IndustryFailure),
            hazard: None,
            reason: "took part in a failed local industry project (产业项目失败)".to_string(),
            evidence: failures,
        });
    }
    let dropouts = ids(&|f| matches!(f, Fact::Dropout { .. }));
    if !dropouts.is_empty() {
        findings.push(Finding {
            rule_id: EDUCATION_DROPOUT,
            level: Level::Orange,
            risk_type: Some(RiskType::Education),
            hazard: None,
            reason: "a child left compulsory education (义务教育阶段辍学)".to_string(),
            evidence: dropouts,
        });
    }
    // Every C or D rating counts, even if a later one is better: findings stay
    // monotone, and a rating already handled by a visit is filtered out upstream.
    for (rating, rule_id, level) in [
        (HousingRating::C, HOUSING_UNSAFE_C, Level::Orange),
        (HousingRating::D, HOUSING_UNSAFE_D, Level::Red),
    ] {
        let rated = ids(&|f| matches!(f, Fact::Housing { rating: r } if *r == rating));
        if !rated.is_empty() {
            findings.push(Finding {
                rule_id,
                level,
                risk_type: Some(RiskType::Housing),
                hazard: None,
                reason: format!("housing rated {rating} (危房)"),
                evidence: rated,
            });
        }
    }

    // Several distinct risk types at once: one level up.
    let types: BTreeSet<RiskType> = findings.iter().filter_map(|f| f.risk_type).collect();
    if types.len() >= rules.escalation_distinct_risk_types
        && let Some(top) = findings.iter().map(|f| f.level).max()
    {
        let evidence: BTreeSet<EventId> = findings
            .iter()
            .flat_map(|f| f.evidence.iter().cloned())
            .collect();
        let names: Vec<&str> = types.iter().map(|t| t.zh()).collect();
        findings.push(Finding {
            rule_id: COMBINED_MULTIPLE_RISKS,
            level: top.raised(),
            risk_type: None,
            hazard: None,
            reason: format!(
                "{} risk types within the window ({}): one level up from {}",
                types.len(),
                names.join(", "),
                top
            ),
            evidence: evidence.into_iter().collect(),
        });
    }

    Evaluation {
        findings,
        adjusted_per_capita_income: (income - out_of_pocket - lost_income - disaster_loss)
            / members,
    }
}

/// Adds `finding`, merging it into an earlier finding of the same rule (keeping the
/// higher level and both evidences).
fn push_merged(findings: &mut Vec<Finding>, finding: Finding) {
    if let Some(existing) = findings.iter_mut().find(|f| f.rule_id == finding.rule_id) {
        existing.evidence.extend(finding.evidence);
        if finding.level > existing.level {
            existing.level = finding.level;
            existing.reason = finding.reason;
        }
    } else {
        findings.push(finding);
    }
}

fn program_zh(program: Program) -> &'static str {
    match program {
        Program::Dibao => "低保 (minimum living allowance)",
        Program::Tekun => "特困 (extreme-poverty support)",
        Program::Temporary => "临时救助 (temporary assistance)",
    }
}
