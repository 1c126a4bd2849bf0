//! Regional systemic-risk signals (规模性返贫风险信号): what the regional stage concludes
//! about one region of the hierarchy and one risk kind — the methods that fired, the
//! day, observed against expected and the upper bound, severity, households affected,
//! and the raised → updated → cleared lifecycle. Produced by `pipeline::detect`,
//! persisted by the store, exported as `schemas/outputs/regional_signal.json`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::alert::Level;
use super::event::wire_enum;
use super::ids::{RegionCode, RegionLevel, stable_id};

wire_enum! {
    /// What a regional count series (and a signal) is about. Every kind but
    /// `industry_failure` has a daily series per region, counting *distinct
    /// households* per day; `industry_failure` comes only from its systemic rule.
    RiskKind {
        /// 因务工就业不稳: unemployment registered (人社 `unemployment`).
        Unemployment = "unemployment",
        /// 低保 / 特困 applied (民政 `assistance_application`, program dibao or tekun,
        /// decision applied): the low-income surge series.
        LowIncome = "low_income",
        /// 因病: serious illness diagnosed (卫健 `serious_illness`) or settled under
        /// serious-illness insurance (医保 settlement with `serious_illness`).
        Illness = "illness",
        /// 因残: severe disability certified (grade 1–2, 重残).
        Disability = "disability",
        /// 因自然灾害: a household's disaster impact with a loss or house damage; also the
        /// kind of `disaster_declared` signals.
        Disaster = "disaster",
        /// 住房安全: dwelling rated C or D.
        Housing = "housing",
        /// 因学: compulsory-education dropout.
        Dropout = "dropout",
        /// 因产业项目失败: a failed industry project (systemic rule only, no series).
        IndustryFailure = "industry_failure",
        /// Any of the above for a household (the union; the village-share rule's kind).
        AnyRisk = "any_risk",
    }
}

impl RiskKind {
    /// The kinds with a daily count series (and detectors), in declaration order.
    pub const SERIES: &'static [RiskKind] = &[
        RiskKind::Unemployment,
        RiskKind::LowIncome,
        RiskKind::Illness,
        RiskKind::Disability,
        RiskKind::Disaster,
        RiskKind::Housing,
        RiskKind::Dropout,
        RiskKind::AnyRisk,
    ];

    /// Whether this kind has a count series.
    pub fn has_series(self) -> bool {
        self != RiskKind::IndustryFailure
    }

    /// The Chinese name.
    pub fn zh(self) -> &'static str {
        match self {
            RiskKind::Unemployment => "失业",
            RiskKind::LowIncome => "低保特困申请",
            RiskKind::Illness => "大病",
            RiskKind::Disability => "重度残疾",
            RiskKind::Disaster => "灾害",
            RiskKind::Housing => "危房",
            RiskKind::Dropout => "辍学",
            RiskKind::IndustryFailure => "产业项目失败",
            RiskKind::AnyRisk => "各类风险",
        }
    }
}

wire_enum! {
    /// The method behind a finding: a detector on a count series, the space–time scan
    /// over a kind's villages, or a systemic rule.
    Method {
        /// EARS C1 as R `surveillance::earsC` (baseline t−7…t−1).
        EarsC1 = "ears_c1",
        /// EARS C2 as R `surveillance::earsC` (2-day guard band).
        EarsC2 = "ears_c2",
        /// EARS C3 as R `surveillance::earsC` computes it (flags a spike one and two
        /// days late; see `pipeline::detect::ears::EarsMethod::C3`).
        EarsC3 = "ears_c3",
        /// EARS C3 as published (Fricker et al. 2008): flags the spike day too.
        EarsC3Textbook = "ears_c3_textbook",
        /// Poisson / negative-binomial likelihood-ratio CUSUM on a seasonal in-control
        /// mean (Höhle & Paul 2008), threshold calibrated from the false-alarm budget.
        Cusum = "cusum",
        /// Farrington Flexible (Noufaily et al. 2013) on weekly sums, as R
        /// `surveillance::farringtonFlexible`: judged at the end of each week (Sunday).
        FarringtonFlexible = "farrington_flexible",
        /// Kulldorff's prospective space–time permutation scan over a kind's villages:
        /// a cluster whose recurrence interval exceeds the configured one.
        Scan = "scan",
        /// N unemployment registrations sharing an employer within D days.
        MassLayoff = "mass_layoff",
        /// An industry project failure involving at least N households.
        IndustryProjectFailure = "industry_project_failure",
        /// A disaster declared for the region.
        DisasterDeclared = "disaster_declared",
        /// A share of a village's households with new risk events within D days.
        VillageShare = "village_share",
    }
}

impl Method {
    /// Whether the method is a detector on a count series (not a systemic rule).
    pub fn is_detector(self) -> bool {
        matches!(
            self,
            Method::EarsC1
                | Method::EarsC2
                | Method::EarsC3
                | Method::EarsC3Textbook
                | Method::Cusum
                | Method::FarringtonFlexible
                | Method::Scan
        )
    }

    /// The detectors of one series, in the order `yujing detect` reports them (the scan
    /// sees every village of a kind at once and is not among them).
    pub const DETECTORS: &'static [Method] = &[
        Method::EarsC1,
        Method::EarsC2,
        Method::EarsC3,
        Method::EarsC3Textbook,
        Method::Cusum,
        Method::FarringtonFlexible,
    ];
}

wire_enum! {
    /// Where a signal is in its lifecycle.
    SignalStatus {
        /// New: the first evidence of an episode.
        Raised = "raised",
        /// New evidence was folded into the active signal.
        Updated = "updated",
        /// No new evidence for `detect.signals.clear_after_days` judged days.
        Cleared = "cleared",
    }
}

/// A regional signal, as stored, exported and published (key: region code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegionalSignal {
    /// Deterministic id: hash of (region, risk kind, episode).
    pub signal_id: String,
    /// The (region, kind)'s episode number (0 for its first signal): with the region
    /// and kind, what the id is derived from. Stored beside the document, not in it.
    #[serde(skip)]
    pub episode: u32,
    /// The region (12-digit code).
    #[schema(value_type = String, pattern = "^[0-9]{12}$")]
    pub region_code: RegionCode,
    /// Its level in the hierarchy: `village`, `township` or `county`.
    pub region_level: RegionLevel,
    /// What the signal is about.
    pub risk_kind: RiskKind,
    /// Every method that contributed evidence to this episode, sorted.
    pub methods: Vec<Method>,
    /// 红橙黄蓝: how far above the bound and how many levels agree (see
    /// `pipeline::detect::signals`); never lowered while the signal is active.
    pub severity: Level,
    /// Lifecycle status.
    pub status: SignalStatus,
    /// First day (China Standard Time) with evidence in this episode.
    pub onset_day: NaiveDate,
    /// The latest day with evidence; `observed`, `expected` and `upper_bound` are that
    /// day's (of the strongest finding that day).
    pub day: NaiveDate,
    /// The last day the evidence covers: `day`, or a declared disaster's end when later.
    /// The signal clears `clear_after_days` judged days after it.
    pub evidence_until: NaiveDate,
    /// What was counted: distinct households that day (detectors), or the rule's count.
    pub observed: f64,
    /// What the method expected (baseline mean, μ0,t); null for rules.
    pub expected: Option<f64>,
    /// The detector's bound (alarm iff observed > bound), or the rule's threshold (fires
    /// at observed ≥ threshold); null where the method has no finite bound.
    pub upper_bound: Option<f64>,
    /// How many levels of the hierarchy (1–3) alarmed for this kind on `day` along this
    /// region's chain (its ancestors and descendants).
    pub levels_agreeing: u8,
    /// Distinct registry households of the region with this risk during the episode (for
    /// rules: the households the rule counted, or a declared region's households).
    pub households_affected: u64,
    /// Human-readable reason with the numbers that decided it.
    pub reason: String,
    /// A screening campaign (one task per village) was opened for this signal.
    pub campaign: bool,
    /// Processing time it was raised.
    pub raised_at: DateTime<Utc>,
    /// Processing time of the last change.
    pub updated_at: DateTime<Utc>,
    /// Processing time it was cleared.
    pub cleared_at: Option<DateTime<Utc>>,
}

impl RegionalSignal {
    /// The deterministic id of episode `episode` of (`region`, `kind`).
    pub fn id_for(region: RegionCode, kind: RiskKind, episode: u32) -> String {
        stable_id(
            "signal",
            &[
                region.to_string().as_bytes(),
                kind.as_str().as_bytes(),
                &episode.to_le_bytes(),
            ],
        )
    }

    /// Whether new evidence would update it (not yet cleared).
    pub fn is_active(&self) -> bool {
        self.status != SignalStatus::Cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let region = RegionCode::parse("522425101000").expect("valid");
        let a = RegionalSignal::id_for(region, RiskKind::Unemployment, 0);
        assert_eq!(a, RegionalSignal::id_for(region, RiskKind::Unemployment, 0));
        assert_ne!(a, RegionalSignal::id_for(region, RiskKind::Unemployment, 1));
        assert_ne!(a, RegionalSignal::id_for(region, RiskKind::LowIncome, 0));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn only_detectors_are_detectors() {
        assert!(Method::Cusum.is_detector());
        assert!(!Method::MassLayoff.is_detector());
        assert_eq!(
            RiskKind::SERIES.len() + 1,
            RiskKind::ALL.len(),
            "every kind but industry_failure has a series"
        );
    }
}
