//! Household alerts (预警): what the rules conclude about one household — the
//! warning level, the national risk types, the rules that fired with their evidence,
//! and the action the household's status calls for. Produced by `pipeline::rules`,
//! persisted by the store, exported as `schemas/outputs/household_alert.json`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Hazard, wire_enum};
use super::ids::{EventId, HouseholdId, RegionCode};
use super::registry::{HouseholdStatus, MonitoringType};

wire_enum! {
    /// The four warning colours, in increasing severity (蓝 黄 橙 红).
    Level {
        /// 蓝色: informational.
        Blue = "blue",
        /// 黄色
        Yellow = "yellow",
        /// 橙色
        Orange = "orange",
        /// 红色: the most severe.
        Red = "red",
    }
}

impl Level {
    /// One step more severe (red stays red).
    pub fn raised(self) -> Level {
        match self {
            Level::Blue => Level::Yellow,
            Level::Yellow => Level::Orange,
            Level::Orange | Level::Red => Level::Red,
        }
    }

    /// The Chinese name.
    pub fn zh(self) -> &'static str {
        match self {
            Level::Blue => "蓝色",
            Level::Yellow => "黄色",
            Level::Orange => "橙色",
            Level::Red => "红色",
        }
    }
}

wire_enum! {
    /// Risk types, in the national vocabulary of the monitoring system (风险类型).
    RiskType {
        /// 因病
        Illness = "illness",
        /// 因残
        Disability = "disability",
        /// 因学
        Education = "education",
        /// 因自然灾害
        NaturalDisaster = "natural_disaster",
        /// 因意外事故
        Accident = "accident",
        /// 因产业项目失败
        IndustryFailure = "industry_failure",
        /// 因务工就业不稳
        UnstableEmployment = "unstable_employment",
        /// 缺劳动力
        LackOfLabour = "lack_of_labour",
        /// 住房安全
        Housing = "housing",
        /// 饮水安全
        DrinkingWater = "drinking_water",
        /// 其他 (e.g. a 低保 application with no stated cause)
        Other = "other",
    }
}

impl RiskType {
    /// The Chinese name.
    pub fn zh(self) -> &'static str {
        match self {
            RiskType::Illness => "因病",
            RiskType::Disability => "因残",
            RiskType::Education => "因学",
            RiskType::NaturalDisaster => "因自然灾害",
            RiskType::Accident => "因意外事故",
            RiskType::IndustryFailure => "因产业项目失败",
            RiskType::UnstableEmployment => "因务工就业不稳",
            RiskType::LackOfLabour => "缺劳动力",
            RiskType::Housing => "住房安全",
            RiskType::DrinkingWater => "饮水安全",
            RiskType::Other => "其他",
        }
    }
}

wire_enum! {
    /// What the household's status calls for.
    Action {
        /// Not monitored: identify as a new monitoring object (应纳尽纳).
        Identify = "identify",
        /// Monitored, risk not eliminated: review the assistance (帮扶措施排查).
        ReviewAssistance = "review_assistance",
        /// Monitored, risk eliminated: re-check for rollback (回头看, 风险回退).
        Recheck = "recheck",
    }
}

wire_enum! {
    /// Whether an alert is still being worked.
    AlertStatus {
        /// Open: new evidence updates it.
        Open = "open",
        /// Closed by its task's outcome.
        Closed = "closed",
        /// Below the level that opens a task, and `rules.expiry_days` of event time
        /// after its latest evidence passed without new evidence: no one will visit
        /// for it, so it leaves the open lists (its evidence does not raise it again;
        /// no cool-down follows).
        Expired = "expired",
    }
}

/// One rule that fired, with why and on which events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFinding {
    /// Stable rule id, e.g. `medical.income_below_line`.
    pub rule_id: String,
    /// The level this rule alone asks for.
    pub level: Level,
    /// The risk type it evidences; `None` for `combined.*` rules, which raise the
    /// level because several risk types occur together.
    pub risk_type: Option<RiskType>,
    /// Human-readable reason, with the numbers that decided it.
    pub reason: String,
    /// The events it rests on.
    pub evidence: Vec<EventId>,
}

/// Which judgement each part of an alert was taken from, so that the alert kept is
/// the same whatever order events arrived in (and across restarts). Internal: stored
/// beside the alert document, not exported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertJudgements {
    /// Per rule id: the level and window time its reason was taken at.
    pub reasons: std::collections::BTreeMap<String, (Level, DateTime<Utc>)>,
    /// The window time the income figures were taken at.
    pub income_at: Option<DateTime<Utc>>,
    /// The event time of each entry of `evidence`, in its order (which entries are
    /// the oldest when the list is capped).
    #[serde(default)]
    pub evidence_at: Vec<DateTime<Utc>>,
}

/// A household alert, as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseholdAlert {
    /// Deterministic id: hash of (household, episode).
    pub alert_id: String,
    /// The household's alert number (0 for its first): with the household id, what
    /// the id is derived from. Stored beside the document, not in it.
    #[serde(skip)]
    pub episode: u32,
    /// Where its parts were judged (stored, not exported).
    #[serde(skip)]
    pub judgements: AlertJudgements,
    /// Household.
    pub household_id: HouseholdId,
    /// Its village.
    pub region_code: RegionCode,
    /// Warning level.
    pub level: Level,
    /// What to do.
    pub action: Action,
    /// For `identify`: the category the household would be identified as.
    pub proposed_monitoring_type: Option<MonitoringType>,
    /// Distinct risk types, sorted.
    pub risk_types: Vec<RiskType>,
    /// Hazards, for natural-disaster risk.
    pub hazards: Vec<Hazard>,
    /// Rules that fired (one entry per rule id, latest reason).
    pub rules: Vec<RuleFinding>,
    /// The events the alert rests on, sorted: every one, up to
    /// `rules.max_evidence_per_alert`; beyond that the oldest no judgement can cite
    /// again leave the list (`evidence_count` still counts them).
    pub evidence: Vec<EventId>,
    /// How many events the alert has rested on.
    #[serde(default)]
    pub evidence_count: u64,
    /// Open, closed (by its task) or expired (below the task level, no new evidence).
    pub status: AlertStatus,
    /// The household's status when last updated.
    pub household_status: HouseholdStatus,
    /// Registry income per member.
    pub per_capita_income_yuan: f64,
    /// Income per member after the shocks in evidence (medical cost, lost wages,
    /// disaster loss).
    pub adjusted_per_capita_income_yuan: f64,
    /// The monitoring line that applied.
    pub monitoring_line_yuan: f64,
    /// The screening task, once one is opened.
    pub task_id: Option<String>,
    /// Processing time the alert was raised.
    pub opened_at: DateTime<Utc>,
    /// Processing time of the last change.
    pub updated_at: DateTime<Utc>,
    /// Processing time it was closed or expired.
    pub closed_at: Option<DateTime<Utc>>,
    /// Earliest event time in evidence.
    pub first_evidence_at: DateTime<Utc>,
    /// Latest event time in evidence.
    pub last_evidence_at: DateTime<Utc>,
    /// Once closed by its task: the outcome decided upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::domain::task::Outcome>,
    /// Once closed by its task: approved or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::domain::task::Decision>,
}
