//! The household rules: one household's risk facts within a look-back window ->
//! findings (rule id, level, risk type, reason, evidence). Every threshold comes
//! from `[rules]` and `[policy]` configuration. Pure and total: it cannot fail, and
//! the same window always gives the same findings, whatever order events arrived in.

use std::collections::BTreeSet;

use crate::config::RuleSettings;
use crate::domain::alert::{Level, RiskType};
use crate::domain::event::{Decision, Hazard, HouseDamage, HousingRating, Program};
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

/// The numbers behind a finding. Kept instead of a ready string so the hot path
/// formats a reason only when an alert shows a new one.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// 低保 / 特困 filed or approved.
    Assistance(Program, Decision),
    /// 低保 / 特困 rejected.
    AssistanceRejected(Program),
    /// 临时救助.
    Temporary(Decision),
    /// Out-of-pocket cost pushes income per capita below the line.
    MedicalBelowLine {
        /// Out-of-pocket cost in the window.
        out_of_pocket: f64,
        /// Income per capita before it.
        before: f64,
        /// ...and after.
        after: f64,
        /// The line.
        line: f64,
    },
    /// Out-of-pocket cost at or above the absolute threshold for the status.
    MedicalOverThreshold {
        /// Out-of-pocket cost in the window.
        out_of_pocket: f64,
        /// The threshold.
        threshold: f64,
        /// The household's status.
        status: HouseholdStatus,
    },
    /// Out-of-pocket cost at or above a share of income.
    MedicalOverShare {
        /// Out-of-pocket cost in the window.
        out_of_pocket: f64,
        /// The share.
        share: f64,
        /// Annual income.
        income: f64,
    },
    /// A serious illness.
    SeriousIllness,
    /// Disability grade 1–2.
    DisabilitySevere,
    /// Disability grade 3–4.
    DisabilityModerate,
    /// The only earner severely disabled.
    OnlyEarnerDisabled,
    /// Job losses.
    JobLoss(usize),
    /// The only earner lost their job.
    OnlyEarnerUnemployed,
    /// Lost wages push income per capita below the line.
    EmploymentBelowLine {
        /// Lost income.
        lost: f64,
        /// Income per capita before it.
        before: f64,
        /// ...and after.
        after: f64,
        /// The line.
        line: f64,
    },
    /// A house collapsed.
    HouseCollapsed,
    /// Disaster loss at or above a share of income.
    HeavyLoss {
        /// Loss in the window.
        loss: f64,
        /// The share.
        share: f64,
        /// Annual income.
        income: f64,
    },
    /// Disaster damage.
    DisasterDamage(f64),
    /// A failed industry project.
    IndustryFailure,
    /// A dropout.
    Dropout,
    /// An unsafe housing rating.
    UnsafeHousing(HousingRating),
    /// Several risk types at once.
    Combined {
        /// The risk types.
        types: Vec<RiskType>,
        /// The level before raising.
        from: Level,
    },
}

fn yuan(value: f64) -> String {
    format!("{value:.0}")
}

impl Detail {
    /// The human-readable reason.
    pub fn reason(&self) -> String {
        match self {
            Detail::Assistance(program, decision) => {
                format!("{} application {decision}", program_zh(*program))
            }
            Detail::AssistanceRejected(program) => format!(
                "{} application rejected: income close to the assistance bar",
                program_zh(*program)
            ),
            Detail::Temporary(decision) => format!("临时救助 (temporary assistance) {decision}"),
            Detail::MedicalBelowLine {
                out_of_pocket,
                before,
                after,
                line,
            } => format!(
                "out-of-pocket medical cost {} yuan in the window brings income per capita from {} to {} yuan, below the {} yuan line",
                yuan(*out_of_pocket),
                yuan(*before),
                yuan(*after),
                yuan(*line)
            ),
            Detail::MedicalOverThreshold {
                out_of_pocket,
                threshold,
                status,
            } => format!(
                "out-of-pocket medical cost {} yuan in the window, at or above the {} yuan threshold for {status} households",
                yuan(*out_of_pocket),
                yuan(*threshold)
            ),
            Detail::MedicalOverShare {
                out_of_pocket,
                share,
                income,
            } => format!(
                "out-of-pocket medical cost {} yuan in the window, at or above {:.0}% of annual household income ({} yuan)",
                yuan(*out_of_pocket),
                share * 100.0,
                yuan(*income)
            ),
            Detail::SeriousIllness => "serious illness (大病) diagnosed or settled".into(),
            Detail::DisabilitySevere => "disability certified at grade 1-2 (重残)".into(),
            Detail::DisabilityModerate => "disability certified at grade 3-4".into(),
            Detail::OnlyEarnerDisabled => {
                "the household's only labour-capable member is severely disabled".into()
            }
            Detail::JobLoss(count) => format!("{count} unemployment registration(s)"),
            Detail::OnlyEarnerUnemployed => {
                "the household's only labour-capable member lost their job".into()
            }
            Detail::EmploymentBelowLine {
                lost,
                before,
                after,
                line,
            } => format!(
                "lost wages {} yuan bring income per capita from {} to {} yuan, below the {} yuan line",
                yuan(*lost),
                yuan(*before),
                yuan(*after),
                yuan(*line)
            ),
            Detail::HouseCollapsed => "house collapsed in a disaster".into(),
            Detail::HeavyLoss {
                loss,
                share,
                income,
            } => format!(
                "disaster loss {} yuan, at or above {:.0}% of annual household income ({} yuan)",
                yuan(*loss),
                share * 100.0,
                yuan(*income)
            ),
            Detail::DisasterDamage(loss) => format!("disaster damage, loss {} yuan", yuan(*loss)),
            Detail::IndustryFailure => {
                "took part in a failed local industry project (产业项目失败)".into()
            }
            Detail::Dropout => "a child left compulsory education (义务教育阶段辍学)".into(),
            Detail::UnsafeHousing(rating) => format!("housing rated {rating} (危房)"),
            Detail::Combined { types, from } => {
                let names: Vec<&str> = types.iter().map(|t| t.zh()).collect();
                format!(
                    "{} risk types within the window ({}): one level up from {from}",
                    types.len(),
                    names.join(", ")
                )
            }
        }
    }
}

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
    pub detail: Detail,
    /// Indexes (into the judged window) of the events it rests on, ascending.
    pub evidence: Vec<u32>,
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

/// Evidence indexes per category, gathered in one pass over the window. Reused
/// between evaluations (cleared, capacity kept), so judging a window that fires
/// nothing allocates nothing.
#[derive(Debug, Default)]
pub struct Gathered {
    dibao_tekun: Vec<u32>,
    rejected: Vec<u32>,
    temporary: Vec<u32>,
    assistance_program: Option<(Program, Decision)>,
    rejected_program: Option<Program>,
    temporary_decision: Option<Decision>,
    paying: Vec<u32>,
    out_of_pocket: f64,
    accident_cost: f64,
    serious: Vec<u32>,
    severe: Vec<u32>,
    moderate: Vec<u32>,
    disabled_earner: Vec<u32>,
    job_losses: Vec<u32>,
    only_earner_jobless: Vec<u32>,
    lost_income: f64,
    damaging: Vec<u32>,
    collapsed: Vec<u32>,
    disaster_loss: f64,
    first_hazard: Option<Hazard>,
    collapse_hazard: Option<Hazard>,
    failures: Vec<u32>,
    dropouts: Vec<u32>,
    unsafe_c: Vec<u32>,
    unsafe_d: Vec<u32>,
}

impl Gathered {
    fn fill(&mut self, events: &[RiskEvent]) {
        for list in [
            &mut self.dibao_tekun,
            &mut self.rejected,
            &mut self.temporary,
            &mut self.paying,
            &mut self.serious,
            &mut self.severe,
            &mut self.moderate,
            &mut self.disabled_earner,
            &mut self.job_losses,
            &mut self.only_earner_jobless,
            &mut self.damaging,
            &mut self.collapsed,
            &mut self.failures,
            &mut self.dropouts,
            &mut self.unsafe_c,
            &mut self.unsafe_d,
        ] {
            list.clear();
        }
        self.assistance_program = None;
        self.rejected_program = None;
        self.temporary_decision = None;
        self.out_of_pocket = 0.0;
        self.accident_cost = 0.0;
        self.lost_income = 0.0;
        self.disaster_loss = 0.0;
        self.first_hazard = None;
        self.collapse_hazard = None;
        let g = self;
        for (i, event) in events.iter().enumerate() {
            let i = i as u32;
            match event.fact {
                Fact::Assistance { program, decision } => match (program, decision) {
                    (Program::Dibao | Program::Tekun, Decision::Applied | Decision::Approved) => {
                        g.dibao_tekun.push(i);
                        g.assistance_program = Some((program, decision));
                    }
                    (Program::Dibao | Program::Tekun, Decision::Rejected) => {
                        g.rejected.push(i);
                        g.rejected_program = Some(program);
                    }
                    (Program::Temporary, Decision::Applied | Decision::Approved) => {
                        g.temporary.push(i);
                        g.temporary_decision = Some(decision);
                    }
                    (Program::Temporary, Decision::Rejected) => {}
                },
                Fact::Medical {
                    out_of_pocket,
                    serious,
                    accident,
                } => {
                    if out_of_pocket > 0.0 {
                        g.paying.push(i);
                        g.out_of_pocket += out_of_pocket;
                        if accident {
                            g.accident_cost += out_of_pocket;
                        }
                    }
                    if serious {
                        g.serious.push(i);
                    }
                }
                Fact::SeriousIllness => g.serious.push(i),
                Fact::Disability { grade, only_earner } => {
                    if grade <= 2 {
                        g.severe.push(i);
                        if only_earner {
                            g.disabled_earner.push(i);
                        }
                    } else {
                        g.moderate.push(i);
                    }
                }
                Fact::Unemployment {
                    lost_income,
                    only_earner,
                } => {
                    g.job_losses.push(i);
                    g.lost_income += lost_income;
                    if only_earner {
                        g.only_earner_jobless.push(i);
                    }
                }
                Fact::DisasterImpact {
                    hazard,
                    loss,
                    house,
                    crop_loss_ratio,
                } => {
                    g.disaster_loss += loss;
                    if loss > 0.0
                        || house != HouseDamage::None
                        || crop_loss_ratio.is_some_and(|r| r > 0.0)
                    {
                        g.damaging.push(i);
                        g.first_hazard.get_or_insert(hazard);
                    }
                    if house == HouseDamage::Collapsed {
                        g.collapsed.push(i);
                        g.collapse_hazard.get_or_insert(hazard);
                    }
                }
                Fact::IndustryFailure => g.failures.push(i),
                Fact::Dropout { .. } => g.dropouts.push(i),
                Fact::Housing { rating } => match rating {
                    HousingRating::C => g.unsafe_c.push(i),
                    HousingRating::D => g.unsafe_d.push(i),
                    HousingRating::A | HousingRating::B => {}
                },
            }
        }
    }
}

/// Judges the window `events` (all within the look-back window, in time order) for
/// one household.
pub fn evaluate(
    context: HouseholdContext<'_>,
    events: &[RiskEvent],
    rules: &RuleSettings,
) -> Evaluation {
    evaluate_with(&mut Gathered::default(), context, events, rules)
}

/// [`evaluate`] with a reusable scratch area.
pub fn evaluate_with(
    g: &mut Gathered,
    context: HouseholdContext<'_>,
    events: &[RiskEvent],
    rules: &RuleSettings,
) -> Evaluation {
    let household = context.household;
    let line = context.monitoring_line;
    let members = f64::from(household.members.max(1));
    let income = household.annual_net_income_yuan;
    let per_capita = income / members;
    g.fill(events);
    let g = &*g;
    let mut findings = Vec::new();
    let mut push = |rule_id, level, risk_type, hazard, detail, evidence: &[u32]| {
        if !evidence.is_empty() {
            findings.push(Finding {
                rule_id,
                level,
                risk_type,
                hazard,
                detail,
                evidence: evidence.to_vec(),
            });
        }
    };
    let other = Some(RiskType::Other);

    // Assistance applications: never suppressed because the household already
    // receives an allowance — a new application is new evidence of hardship.
    if let Some((program, decision)) = g.assistance_program {
        push(
            ASSISTANCE_DIBAO_TEKUN,
            rules.assistance.dibao_tekun_level,
            other,
            None,
            Detail::Assistance(program, decision),
            &g.dibao_tekun,
        );
    }
    if let Some(program) = g.rejected_program {
        push(
            ASSISTANCE_REJECTED,
            rules.assistance.rejected_level,
            other,
            None,
            Detail::AssistanceRejected(program),
            &g.rejected,
        );
    }
    if let Some(decision) = g.temporary_decision {
        push(
            ASSISTANCE_TEMPORARY,
            rules.assistance.temporary_level,
            other,
            None,
            Detail::Temporary(decision),
            &g.temporary,
        );
    }

    // Medical cost; from accidental injury it is 因意外事故 when it is most of it.
    let out_of_pocket = g.out_of_pocket;
    if out_of_pocket > 0.0 {
        let risk = Some(if g.accident_cost * 2.0 > out_of_pocket {
            RiskType::Accident
        } else {
            RiskType::Illness
        });
        let after = (income - out_of_pocket) / members;
        if per_capita >= line && after < line {
            push(
                MEDICAL_INCOME_BELOW_LINE,
                Level::Red,
                risk,
                None,
                Detail::MedicalBelowLine {
                    out_of_pocket,
                    before: per_capita,
                    after,
                    line,
                },
                &g.paying,
            );
        }
        let threshold = match household.status {
            HouseholdStatus::Lifted => rules.medical.oop_threshold_yuan_lifted,
            HouseholdStatus::Monitored => rules.medical.oop_threshold_yuan_monitored,
            HouseholdStatus::Ordinary => rules.medical.oop_threshold_yuan_ordinary,
        };
        let share = rules.medical.oop_income_share;
        let detail = if out_of_pocket >= threshold {
            Some(Detail::MedicalOverThreshold {
                out_of_pocket,
                threshold,
                status: household.status,
            })
        } else if income > 0.0 && out_of_pocket >= share * income {
            Some(Detail::MedicalOverShare {
                out_of_pocket,
                share,
                income,
            })
        } else {
            None
        };
        if let Some(detail) = detail {
            push(
                MEDICAL_HIGH_OUT_OF_POCKET,
                Level::Orange,
                risk,
                None,
                detail,
                &g.paying,
            );
        }
    }
    let illness = Some(RiskType::Illness);
    push(
        MEDICAL_SERIOUS_ILLNESS,
        Level::Orange,
        illness,
        None,
        Detail::SeriousIllness,
        &g.serious,
    );

    // Disability.
    let disability = Some(RiskType::Disability);
    push(
        DISABILITY_SEVERE,
        Level::Orange,
        disability,
        None,
        Detail::DisabilitySevere,
        &g.severe,
    );
    push(
        DISABILITY_MODERATE,
        Level::Blue,
        disability,
        None,
        Detail::DisabilityModerate,
        &g.moderate,
    );
    push(
        LABOUR_ONLY_EARNER_DISABLED,
        Level::Orange,
        Some(RiskType::LackOfLabour),
        None,
        Detail::OnlyEarnerDisabled,
        &g.disabled_earner,
    );

    // Employment.
    let employment = Some(RiskType::UnstableEmployment);
    let lost = g.lost_income;
    let after = (income - lost) / members;
    if lost > 0.0 && per_capita >= line && after < line {
        push(
            EMPLOYMENT_INCOME_BELOW_LINE,
            Level::Orange,
            employment,
            None,
            Detail::EmploymentBelowLine {
                lost,
                before: per_capita,
                after,
                line,
            },
            &g.job_losses,
        );
    }
    push(
        EMPLOYMENT_ONLY_EARNER,
        Level::Orange,
        employment,
        None,
        Detail::OnlyEarnerUnemployed,
        &g.only_earner_jobless,
    );
    push(
        EMPLOYMENT_JOB_LOSS,
        Level::Yellow,
        employment,
        None,
        Detail::JobLoss(g.job_losses.len()),
        &g.job_losses,
    );

    // Disasters. Monotone on purpose: more evidence never removes a finding, so the
    // union of findings does not depend on the order events arrive in.
    let disaster = Some(RiskType::NaturalDisaster);
    push(
        DISASTER_HOUSE_COLLAPSED,
        Level::Red,
        disaster,
        g.collapse_hazard,
        Detail::HouseCollapsed,
        &g.collapsed,
    );
    let loss = g.disaster_loss;
    let heavy_share = rules.disaster.heavy_loss_income_share;
    if loss > 0.0 && (income <= 0.0 || loss >= heavy_share * income) {
        push(
            DISASTER_HEAVY_LOSS,
            Level::Orange,
            disaster,
            g.first_hazard,
            Detail::HeavyLoss {
                loss,
                share: heavy_share,
                income,
            },
            &g.damaging,
        );
    }
    push(
        DISASTER_IMPACT,
        Level::Yellow,
        disaster,
        g.first_hazard,
        Detail::DisasterDamage(loss),
        &g.damaging,
    );

    // Industry, education, housing. Every C or D rating counts, even if a later one
    // is better: findings stay monotone, and a rating a visit already handled is
    // filtered out when the alert is merged.
    push(
        INDUSTRY_PROJECT_FAILURE,
        Level::Orange,
        Some(RiskType::IndustryFailure),
        None,
        Detail::IndustryFailure,
        &g.failures,
    );
    push(
        EDUCATION_DROPOUT,
        Level::Orange,
        Some(RiskType::Education),
        None,
        Detail::Dropout,
        &g.dropouts,
    );
    let housing = Some(RiskType::Housing);
    push(
        HOUSING_UNSAFE_C,
        Level::Orange,
        housing,
        None,
        Detail::UnsafeHousing(HousingRating::C),
        &g.unsafe_c,
    );
    push(
        HOUSING_UNSAFE_D,
        Level::Red,
        housing,
        None,
        Detail::UnsafeHousing(HousingRating::D),
        &g.unsafe_d,
    );

    // Several distinct risk types at once: one level up.
    let types: BTreeSet<RiskType> = findings.iter().filter_map(|f| f.risk_type).collect();
    if types.len() >= rules.escalation_distinct_risk_types
        && let Some(top) = findings.iter().map(|f| f.level).max()
    {
        let evidence: BTreeSet<u32> = findings
            .iter()
            .flat_map(|f| f.evidence.iter().copied())
            .collect();
        findings.push(Finding {
            rule_id: COMBINED_MULTIPLE_RISKS,
            level: top.raised(),
            risk_type: None,
            hazard: None,
            detail: Detail::Combined {
                types: types.into_iter().collect(),
                from: top,
            },
            evidence: evidence.into_iter().collect(),
        });
    }

    Evaluation {
        findings,
        adjusted_per_capita_income: (income - out_of_pocket - lost - loss) / members,
    }
}

fn program_zh(program: Program) -> &'static str {
    match program {
        Program::Dibao => "低保 (minimum living allowance)",
        Program::Tekun => "特困 (extreme-poverty support)",
        Program::Temporary => "临时救助 (temporary assistance)",
    }
}
