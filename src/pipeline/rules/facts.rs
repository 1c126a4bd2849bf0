//! Risk facts: what one event says about one household, reduced to the numbers and
//! flags the rules need (out-of-pocket cost, lost income, grade, only-earner...).
//! Derived once when the event is resolved — and again, identically, when state is
//! rebuilt from the store — so the household windows stay small.

use chrono::{DateTime, Utc};

use crate::config::RuleSettings;
use crate::domain::event::{
    Decision, Hazard, HouseDamage, HousingRating, Payload, Program, SchoolStage,
};
use crate::domain::ids::EventId;

/// One household-relevant event in a household's window.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskEvent {
    /// The event.
    pub event_id: EventId,
    /// Its event time.
    pub occurred_at: DateTime<Utc>,
    /// What it says.
    pub fact: Fact,
}

/// The rule-relevant content of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// 低保 / 特困 / 临时救助 case.
    Assistance {
        /// Programme.
        program: Program,
        /// Stage.
        decision: Decision,
    },
    /// A medical settlement.
    Medical {
        /// Paid by the household.
        out_of_pocket: f64,
        /// Settled as serious illness.
        serious: bool,
        /// Diagnosis group is an accident group.
        accident: bool,
    },
    /// A serious-illness diagnosis.
    SeriousIllness,
    /// A disability certification.
    Disability {
        /// Grade 1–4.
        grade: u8,
        /// The person was the household's only labour-capable member.
        only_earner: bool,
    },
    /// A job lost.
    Unemployment {
        /// Annual income lost (monthly wage × configured months).
        lost_income: f64,
        /// The person was the household's only labour-capable member.
        only_earner: bool,
    },
    /// Disaster damage to the household.
    DisasterImpact {
        /// Hazard.
        hazard: Hazard,
        /// Loss.
        loss: f64,
        /// House damage.
        house: HouseDamage,
        /// Crop loss share, when known.
        crop_loss_ratio: Option<f64>,
    },
    /// The household took part in a failed industry project.
    IndustryFailure,
    /// A child left compulsory education.
    Dropout {
        /// Stage left.
        stage: SchoolStage,
    },
    /// A housing safety rating.
    Housing {
        /// Rating.
        rating: HousingRating,
    },
}

/// What the registry says of the event's person, for the facts that need it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonFacts {
    /// The person can work and no other member of the household can.
    pub only_earner: bool,
}

impl Fact {
    /// The fact an event establishes for a household, or `None` for kinds that only
    /// matter regionally (declared disasters, water outages).
    pub fn derive(payload: &Payload, person: PersonFacts, rules: &RuleSettings) -> Option<Fact> {
        let fact = match payload {
            Payload::AssistanceApplication(p) => Fact::Assistance {
                program: p.program,
                decision: p.decision,
            },
            Payload::MedicalSettlement(p) => Fact::Medical {
                out_of_pocket: p.out_of_pocket_yuan,
                serious: p.serious_illness,
                accident: p.diagnosis_group.as_deref().is_some_and(|group| {
                    rules
                        .medical
                        .accident_diagnosis_groups
                        .iter()
                        .any(|g| g == group)
                }),
            },
            Payload::SeriousIllness(_) => Fact::SeriousIllness,
            Payload::DisabilityCertified(p) => Fact::Disability {
                grade: p.grade,
                only_earner: person.only_earner,
            },
            Payload::Unemployment(p) => Fact::Unemployment {
                lost_income: p.previous_monthly_income_yuan.unwrap_or(0.0)
                    * rules.unemployment.lost_income_months,
                only_earner: person.only_earner,
            },
            Payload::DisasterImpact(p) => Fact::DisasterImpact {
                hazard: p.hazard,
                loss: p.loss_yuan,
                house: p.house_damage,
                crop_loss_ratio: p.crop_loss_ratio,
            },
            Payload::IndustryProjectFailure(_) => Fact::IndustryFailure,
            Payload::SchoolDropout(p) => Fact::Dropout {
                stage: p.school_stage,
            },
            Payload::HousingSafety(p) => Fact::Housing { rating: p.rating },
            Payload::DisasterDeclared(_) | Payload::WaterOutage(_) => return None,
        };
        Some(fact)
    }
}
