//! What the API answers, as documented types (each one a schema of the OpenAPI
//! document): alerts, tasks, households, regions and their figures, signals, dead
//! letters, audit rows, accounts. Built from the domain types for one caller:
//! resident IDs only ever masked, department detail (amounts, diagnosis groups,
//! evidence payloads) only for county accounts.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::account::{Account, Role};
use crate::domain::alert::{Action, AlertStatus, HouseholdAlert, Level, RiskType};
use crate::domain::event::{Hazard, Source};
use crate::domain::ids::RegionLevel;
use crate::domain::registry::{HouseholdStatus, MonitoringType, Region};
use crate::domain::signal::RegionalSignal;
use crate::domain::task::{
    Decision, HouseholdChange, Move, Outcome, Proposal, ScreeningTask, Stage, TaskKind,
    VisitFindings,
};
use crate::store::api::{AuditRow, DeadLetterRow, EvidenceEvent, HouseholdRecord};

/// The caller's account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    /// Account id.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The root of the scope.
    pub region_code: String,
    /// Its name, when the regions are imported.
    pub region_name: Option<String>,
    /// For a department: its feed.
    pub source: Option<Source>,
    /// Procedure moves the role makes.
    pub moves: Vec<String>,
    /// Whether it sees department detail.
    pub department_detail: bool,
}

impl Me {
    /// The caller's view of itself.
    pub fn of(account: &Account, region_name: Option<String>) -> Me {
        let moves = all_moves()
            .into_iter()
            .filter(|m| m.role() == account.role)
            .map(|m| m.name().to_string())
            .collect();
        Me {
            account_id: account.account_id.clone(),
            name: account.name.clone(),
            role: account.role,
            region_code: account.region.to_string(),
            region_name,
            source: account.source,
            moves,
            department_detail: account
                .role
                .may(crate::domain::account::Right::DepartmentDetail),
        }
    }
}

fn all_moves() -> Vec<Move> {
    vec![
        Move::Accept { version: None },
        Move::RecordVisit {
            version: None,
            visited_on: NaiveDate::MIN,
            per_capita_income_yuan: 0.0,
            risk_types: Vec::new(),
            note: None,
        },
        Move::Propose {
            version: None,
            outcome: Outcome::NoRiskFound,
            monitoring_type: None,
            deliberated_on: None,
            publicity_from: None,
            publicity_to: None,
            note: None,
        },
        Move::Approve {
            version: None,
            note: None,
        },
        Move::Return {
            version: None,
            reason: String::new(),
        },
        Move::Decide {
            version: None,
            decision: Decision::Approved,
            note: None,
        },
    ]
}

/// A region.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegionView {
    /// 12-digit code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Level.
    pub level: RegionLevel,
    /// Parent code.
    pub parent: Option<String>,
    /// Longitude of its centroid.
    pub longitude: Option<f64>,
    /// Latitude of its centroid.
    pub latitude: Option<f64>,
}

impl From<&Region> for RegionView {
    fn from(region: &Region) -> Self {
        RegionView {
            code: region.code.to_string(),
            name: region.name.clone(),
            level: region.level,
            parent: region.parent.map(|p| p.to_string()),
            longitude: region.longitude,
            latitude: region.latitude,
        }
    }
}

/// The regions the caller sees.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegionList {
    /// The caller's region and everything below it, by code.
    pub items: Vec<RegionView>,
}

/// Open alerts of a region.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct AlertFigures {
    /// Open alerts.
    pub total: u64,
    /// By level.
    pub by_level: BTreeMap<String, u64>,
    /// By risk type (an alert counts once under each of its types).
    pub by_risk_type: BTreeMap<String, u64>,
}

/// Open tasks of a region.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct TaskFigures {
    /// Open tasks.
    pub open: u64,
    /// By stage.
    pub by_stage: BTreeMap<String, u64>,
    /// Past their budget.
    pub overdue: u64,
    /// Days left on the open task whose decision is due first (negative: overdue).
    pub oldest_days_left: Option<i64>,
}

/// Active signals of a region.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SignalFigures {
    /// Active (raised or updated, not cleared) signals in the region's subtree.
    pub active: u64,
    /// By severity.
    pub by_severity: BTreeMap<String, u64>,
}

/// The figures of one region (its whole subtree).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegionFigures {
    /// The region.
    pub region: RegionView,
    /// Open alerts.
    pub alerts: AlertFigures,
    /// Open tasks.
    pub tasks: TaskFigures,
    /// Active signals.
    pub signals: SignalFigures,
    /// Monitored households whose risk is not eliminated.
    pub monitored_households: u64,
}

/// The per-rule yield of the household alerts in a region (预警成效): what each rule's
/// alerts came to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct YieldView {
    /// The region the figures cover: the caller's, or the `region` asked for.
    pub region_code: String,
    /// Every alert once.
    pub all: crate::domain::rule_yield::YieldFigures,
    /// By rule id, in id order: every alert the rule fired in (an alert on several
    /// rules counts for each).
    pub rules: Vec<crate::domain::rule_yield::RuleYield>,
}

/// A region and each of its children.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// The region itself.
    pub region: RegionFigures,
    /// Its children (townships of a county, villages of a township), by code.
    pub children: Vec<RegionFigures>,
    /// When the figures were computed (they are at most `api.summary_cache_ms` old).
    pub computed_at: DateTime<Utc>,
    /// The first and last day (China Standard Time) with risk events counted in the
    /// region (kind `any_risk`), within ten years of today: the window a chart of
    /// its series opens on. Null when none is counted.
    pub counted_days: Option<CountedDays>,
}

/// A span of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountedDays {
    /// First day.
    pub first: NaiveDate,
    /// Last day.
    pub last: NaiveDate,
}

/// One method's judgement of one day.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Judged {
    /// Method.
    pub method: crate::domain::signal::Method,
    /// Expected count (null where the method has none).
    pub expected: Option<f64>,
    /// Threshold: the day alarms when the count exceeds it (null: no bound).
    pub upper_bound: Option<f64>,
    /// Alarm (null: no judgement possible).
    pub alarm: Option<bool>,
}

/// One day of a count series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesDay {
    /// Day (China Standard Time).
    pub day: NaiveDate,
    /// Risk events counted.
    pub count: u32,
    /// Each detector's judgement.
    pub judgements: Vec<Judged>,
}

/// The daily count series the detectors judge, with their judgements.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Series {
    /// Region.
    pub region_code: String,
    /// Risk kind.
    pub kind: crate::domain::signal::RiskKind,
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Every day from `from` to `to`.
    pub days: Vec<SeriesDay>,
}

/// A rule that fired.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    /// Rule id.
    pub rule_id: String,
    /// Level it asks for.
    pub level: Level,
    /// Risk type (null for combined rules).
    pub risk_type: Option<RiskType>,
    /// Why. For accounts other than county, amounts are left out.
    pub reason: String,
    /// Evidence event ids.
    pub evidence: Vec<String>,
}

/// A household alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    /// Id.
    pub alert_id: String,
    /// Household.
    pub household_id: String,
    /// Village.
    pub region_code: String,
    /// Level.
    pub level: Level,
    /// What to do.
    pub action: Action,
    /// For `identify`: the category proposed.
    pub proposed_monitoring_type: Option<MonitoringType>,
    /// Risk types.
    pub risk_types: Vec<RiskType>,
    /// Hazards.
    pub hazards: Vec<Hazard>,
    /// Rules that fired.
    pub rules: Vec<RuleView>,
    /// Events the alert has rested on (more than its rules list once the list is capped).
    pub evidence_count: u64,
    /// Open, closed (by its task) or expired (below the task level, no new evidence).
    pub status: AlertStatus,
    /// The household's status when last judged.
    pub household_status: HouseholdStatus,
    /// Registry income per member.
    pub per_capita_income_yuan: f64,
    /// Income per member after the shocks in evidence (county accounts only).
    pub adjusted_per_capita_income_yuan: Option<f64>,
    /// The monitoring line applied.
    pub monitoring_line_yuan: f64,
    /// Its task.
    pub task_id: Option<String>,
    /// Raised.
    pub opened_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Earliest evidence.
    pub first_evidence_at: DateTime<Utc>,
    /// Latest evidence.
    pub last_evidence_at: DateTime<Utc>,
    /// Once closed: the outcome.
    pub outcome: Option<Outcome>,
    /// Once closed: the decision.
    pub decision: Option<Decision>,
}

/// Amounts in a reason replaced for callers without department detail: every number
/// followed by "yuan", and every number of three digits or more, becomes "…" (counts,
/// grades and shares stay).
pub fn without_amounts(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let end = from
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .unwrap_or(from.len());
        let (number, after) = from.split_at(end);
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        if after.starts_with(" yuan") || digits >= 3 {
            out.push('…');
        } else {
            out.push_str(number);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl AlertView {
    /// The view of `alert` for a caller who does (`detail`) or does not see
    /// department detail.
    pub fn of(alert: &HouseholdAlert, detail: bool) -> AlertView {
        AlertView {
            alert_id: alert.alert_id.clone(),
            household_id: alert.household_id.to_string(),
            region_code: alert.region_code.to_string(),
            level: alert.level,
            action: alert.action,
            proposed_monitoring_type: alert.proposed_monitoring_type,
            risk_types: alert.risk_types.clone(),
            hazards: alert.hazards.clone(),
            rules: alert
                .rules
                .iter()
                .map(|rule| RuleView {
                    rule_id: rule.rule_id.clone(),
                    level: rule.level,
                    risk_type: rule.risk_type,
                    reason: if detail {
                        rule.reason.clone()
                    } else {
                        without_amounts(&rule.reason)
                    },
                    evidence: rule.evidence.iter().map(|e| e.to_string()).collect(),
                })
                .collect(),
            // Stores written before the count was kept have only the list.
            evidence_count: alert.evidence_count.max(alert.evidence.len() as u64),
            status: alert.status,
            household_status: alert.household_status,
            per_capita_income_yuan: alert.per_capita_income_yuan,
            adjusted_per_capita_income_yuan: detail
                .then_some(alert.adjusted_per_capita_income_yuan)
                .filter(|v| v.is_finite()),
            monitoring_line_yuan: alert.monitoring_line_yuan,
            task_id: alert.task_id.clone(),
            opened_at: alert.opened_at,
            updated_at: alert.updated_at,
            closed_at: alert.closed_at,
            first_evidence_at: alert.first_evidence_at,
            last_evidence_at: alert.last_evidence_at,
            outcome: alert.outcome,
            decision: alert.decision,
        }
    }
}

/// An event behind an alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvidenceView {
    /// The department's event id.
    pub event_id: String,
    /// Department.
    pub source: String,
    /// Kind.
    pub kind: String,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// Masked resident ID (first 6 + last 4), for person events.
    pub person_masked: Option<String>,
    /// The department's record (county accounts only).
    pub payload: Option<serde_json::Value>,
}

impl EvidenceView {
    /// The view of `event`, with its payload when `detail`.
    pub fn of(event: &EvidenceEvent, detail: bool) -> EvidenceView {
        EvidenceView {
            event_id: event.event_id.clone(),
            source: event.source.clone(),
            kind: event.kind.clone(),
            occurred_at: event.occurred_at,
            person_masked: event.person_masked.clone(),
            payload: if detail {
                serde_json::from_str(&event.payload).ok()
            } else {
                None
            },
        }
    }
}

/// An alert with its evidence.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertDetail {
    /// The alert.
    pub alert: AlertView,
    /// Its evidence events, oldest first.
    pub evidence: Vec<EvidenceView>,
}

/// A screening task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    /// Id.
    pub task_id: String,
    /// Kind.
    pub kind: TaskKind,
    /// Alert.
    pub alert_id: Option<String>,
    /// Signal (campaigns).
    pub signal_id: Option<String>,
    /// Household.
    pub household_id: Option<String>,
    /// Village.
    pub village_code: String,
    /// Township (where it escalates).
    pub township_code: String,
    /// Priority.
    pub level: Level,
    /// Stage.
    pub stage: Stage,
    /// Version (send it with a transition to refuse acting on a stale view).
    pub version: u32,
    /// Past the budget of its stage.
    pub overdue: bool,
    /// When it became overdue.
    pub overdue_at: Option<DateTime<Utc>>,
    /// The first warning.
    pub budget_from: DateTime<Utc>,
    /// The township passes it on by then.
    pub pass_on_due_at: DateTime<Utc>,
    /// The decision is due by then.
    pub due_at: DateTime<Utc>,
    /// Calendar days left on its stage's deadline (0: the last day; negative: overdue).
    pub days_left: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The village account that accepted it.
    pub assignee: Option<String>,
    /// What the visit found.
    pub findings: Option<VisitFindings>,
    /// The proposal.
    pub proposal: Option<Proposal>,
    /// Final decision.
    pub decision: Option<Decision>,
    /// Outcome decided upon.
    pub outcome: Option<Outcome>,
    /// Last note (a return's reason, a decision's note).
    pub outcome_note: Option<String>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Campaigns: households to visit first.
    pub priority_households: Vec<String>,
    /// The moves the caller may make now.
    pub next_moves: Vec<String>,
}

impl TaskView {
    /// The view of `task` for a caller of `role` at `now`.
    pub fn of(task: &ScreeningTask, role: Role, now: DateTime<Utc>) -> TaskView {
        let next_moves = all_moves()
            .into_iter()
            .filter(|m| m.role() == role && m.from_stages().contains(&task.stage))
            .map(|m| m.name().to_string())
            .collect();
        TaskView {
            task_id: task.task_id.clone(),
            kind: task.kind,
            alert_id: task.alert_id.clone(),
            signal_id: task.signal_id.clone(),
            household_id: task.household_id.as_ref().map(|h| h.to_string()),
            village_code: task.village_code.to_string(),
            township_code: task.village_code.township().to_string(),
            level: task.level,
            stage: task.stage,
            version: task.version,
            overdue: task.overdue,
            overdue_at: task.overdue_at,
            budget_from: task.budget_from,
            pass_on_due_at: task.pass_on_due_at,
            due_at: task.due_at,
            days_left: task.days_left(now),
            created_at: task.created_at,
            updated_at: task.updated_at,
            assignee: task.assignee.clone(),
            findings: task.findings.clone(),
            proposal: task.proposal.clone(),
            decision: task.decision,
            outcome: task.outcome,
            outcome_note: task.outcome_note.clone(),
            closed_at: task.closed_at,
            priority_households: task
                .priority_households
                .iter()
                .map(|h| h.to_string())
                .collect(),
            next_moves,
        }
    }
}

/// One audit row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    /// Row id (append order).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (an account name, `timer`, or `cli:` and the operator).
    pub actor: String,
    /// The actor's role.
    pub actor_role: String,
    /// `task`, `household`, `alert` or `account`.
    pub entity: String,
    /// Its id.
    pub entity_id: String,
    /// What was done.
    pub action: String,
    /// The region concerned.
    pub region_code: String,
    /// State before.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: Option<String>,
    /// Values before.
    pub old_value: Option<serde_json::Value>,
    /// Values after.
    pub new_value: Option<serde_json::Value>,
    /// Note or reason.
    pub detail: String,
}

impl From<&AuditRow> for AuditView {
    fn from(row: &AuditRow) -> Self {
        let e = &row.entry;
        AuditView {
            id: row.id,
            at: e.at,
            actor: e.actor.clone(),
            actor_role: e.actor_role.clone(),
            entity: e.entity.clone(),
            entity_id: e.entity_id.clone(),
            action: e.action.clone(),
            region_code: e.region_code.clone(),
            from_state: e.from_state.clone(),
            to_state: e.to_state.clone(),
            old_value: e.old_value.clone(),
            new_value: e.new_value.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// A task with its whole history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskDetail {
    /// The task.
    pub task: TaskView,
    /// Every step, oldest first, with its actor.
    pub history: Vec<AuditView>,
}

/// A member, masked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// Masked resident ID (first 6 + last 4).
    pub person_masked: String,
    /// Relation to the head.
    pub relation: String,
    /// Able to work.
    pub labour_capable: bool,
}

/// One registry change of a household.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegistryChangeView {
    /// Position in the change log.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who decided.
    pub actor: String,
    /// The record after it (null: a task closed without changing it).
    pub change: Option<HouseholdChange>,
}

/// A household.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HouseholdView {
    /// Id.
    pub household_id: String,
    /// Village.
    pub region_code: String,
    /// Members.
    pub member_count: u32,
    /// Labour-capable members.
    pub labour_capable: u32,
    /// Annual net income (registry).
    pub annual_net_income_yuan: f64,
    /// Status.
    pub status: HouseholdStatus,
    /// Category.
    pub monitoring_type: Option<MonitoringType>,
    /// Identified on.
    pub identified_on: Option<NaiveDate>,
    /// Risk eliminated on.
    pub risk_eliminated_on: Option<NaiveDate>,
    /// 兜底保障.
    pub safety_net: bool,
    /// 低保.
    pub dibao: bool,
    /// 特困.
    pub tekun: bool,
    /// Members, masked.
    pub members: Vec<MemberView>,
    /// Its registry changes (the monitoring history), oldest first.
    pub monitoring_history: Vec<RegistryChangeView>,
    /// Its alerts, newest first.
    pub alerts: Vec<AlertView>,
    /// Its tasks, newest first.
    pub tasks: Vec<TaskView>,
}

impl HouseholdView {
    /// The view of a stored household.
    pub fn of(record: &HouseholdRecord, alerts: Vec<AlertView>, tasks: Vec<TaskView>) -> Self {
        let h = &record.household;
        HouseholdView {
            household_id: h.household_id.to_string(),
            region_code: h.region_code.to_string(),
            member_count: h.members,
            labour_capable: h.labour_capable,
            annual_net_income_yuan: h.annual_net_income_yuan,
            status: h.status,
            monitoring_type: h.monitoring_type,
            identified_on: h.identified_on,
            risk_eliminated_on: h.risk_eliminated_on,
            safety_net: h.safety_net,
            dibao: h.dibao,
            tekun: h.tekun,
            members: record
                .members
                .iter()
                .map(|(masked, relation, labour)| MemberView {
                    person_masked: masked.clone(),
                    relation: relation.clone(),
                    labour_capable: *labour,
                })
                .collect(),
            monitoring_history: record
                .changes
                .iter()
                .map(|(id, change, actor, at)| RegistryChangeView {
                    id: *id,
                    at: *at,
                    actor: actor.clone(),
                    change: change.clone(),
                })
                .collect(),
            alerts,
            tasks,
        }
    }
}

/// A dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Id.
    pub dead_letter_id: String,
    /// Where it came from.
    pub origin: String,
    /// Stage that refused it.
    pub stage: String,
    /// Rule.
    pub rule: String,
    /// Field.
    pub field: Option<String>,
    /// Reason.
    pub reason: String,
    /// The record as kept, resident IDs masked.
    pub raw_text: String,
    /// Longer than kept.
    pub raw_truncated: bool,
    /// Original length.
    pub raw_bytes: i64,
    /// Salvaged event id.
    pub event_id: Option<String>,
    /// Salvaged source.
    pub source: Option<String>,
    /// Salvaged kind.
    pub kind: Option<String>,
    /// Received.
    pub received_at: DateTime<Utc>,
}

impl From<DeadLetterRow> for DeadLetterView {
    fn from(row: DeadLetterRow) -> Self {
        DeadLetterView {
            dead_letter_id: row.dead_letter_id,
            origin: row.origin,
            stage: row.stage,
            rule: row.rule,
            field: row.field,
            reason: row.reason,
            raw_text: row.raw_text,
            raw_truncated: row.raw_truncated,
            raw_bytes: row.raw_bytes,
            event_id: row.event_id,
            source: row.source,
            kind: row.kind,
            received_at: row.received_at,
        }
    }
}

/// An account (never its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// Id.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Region.
    pub region_code: String,
    /// Department feed.
    pub source: Option<Source>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView {
            account_id: a.account_id.clone(),
            name: a.name.clone(),
            role: a.role,
            region_code: a.region.to_string(),
            source: a.source,
            created_at: a.created_at,
            created_by: a.created_by.clone(),
            revoked_at: a.revoked_at,
        }
    }
}

/// A new account and its token (shown once, never again).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedAccount {
    /// The account.
    pub account: AccountView,
    /// Its bearer token.
    pub token: String,
}

/// Accounts in the caller's region.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountList {
    /// By name.
    pub items: Vec<AccountView>,
}

/// What a new account asks for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountRequest {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Role, no higher than the caller's.
    pub role: Role,
    /// Region inside the caller's.
    pub region_code: String,
    /// For a department account: its feed.
    #[serde(default)]
    pub source: Option<Source>,
}

macro_rules! page {
    ($name:ident, $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            /// This page, newest first.
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last.
            pub next: Option<String>,
        }
    };
}

page!(AlertPage, AlertView, "A page of alerts.");
page!(TaskPage, TaskView, "A page of tasks.");
page!(SignalPage, RegionalSignal, "A page of regional signals.");
page!(DeadLetterPage, DeadLetterView, "A page of dead letters.");
page!(AuditPage, AuditView, "A page of the audit.");

/// Health.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Each check: `ok`, `unavailable`, `stopped` or `none`.
    pub checks: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_are_left_out_of_reasons() {
        assert_eq!(
            super::without_amounts(
                "out-of-pocket medical cost 23000 yuan in the window brings income per capita from 9000 to 1334 yuan, below the 8300 yuan line"
            ),
            "out-of-pocket medical cost … yuan in the window brings income per capita from … to … yuan, below the … yuan line"
        );
        assert_eq!(
            super::without_amounts("2 unemployment registration(s)"),
            "2 unemployment registration(s)"
        );
    }
}

/// One rule's count in a region's data quality.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataQualityRuleCount {
    /// Rule id (`sweep.*`, `quality.*`).
    pub rule: String,
    /// `sweep` or `quality`.
    pub kind: String,
    /// What it finds.
    pub title: String,
    /// Findings: households for the registry rules, subjects (per department) for
    /// `quality.unmatched_persons`, departments with late events for
    /// `quality.late_reporting`.
    pub count: u64,
    /// What `count` counts: `households`, `subjects` or `departments`.
    pub unit: String,
}

/// One village's data-quality counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataQualityVillage {
    /// Village code.
    pub region_code: String,
    /// Its name, when known.
    pub name: Option<String>,
    /// Households found per registry rule id (rules with none left out).
    pub by_rule: BTreeMap<String, u64>,
    /// Events reported late, per department (departments with none left out).
    pub late_events: BTreeMap<String, u64>,
}

/// One department's data-quality figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataQualityDepartment {
    /// The department.
    pub source: Source,
    /// Subjects not on the roster it sent events for, and those events.
    pub unmatched: crate::domain::department_quality::SubjectTally,
    /// Its reporting delay (absent when it sent no event in the region).
    pub delay: Option<crate::domain::department_quality::ReportingDelay>,
}

/// One data-quality finding: a household's (registry rules), a subject's not on the
/// roster (`quality.unmatched_persons`) or a department's (`quality.late_reporting`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataQualityFinding {
    /// Rule id.
    pub rule: String,
    /// `sweep` or `quality`.
    pub kind: String,
    /// The household (registry rules; an unmatched household subject).
    pub household_id: Option<String>,
    /// The household's village (registry rules).
    pub region_code: Option<String>,
    /// The department (department rules).
    pub source: Option<Source>,
    /// The person not on the roster, masked.
    pub person_masked: Option<String>,
    /// The events behind it (department rules).
    pub events: Option<u64>,
    /// The fields the rule judges.
    pub fields: Vec<String>,
    /// Recorded open since this judged day (`yujing data-quality --record`); absent
    /// when no recorded pass found it (sweeps are not recorded).
    pub since: Option<NaiveDate>,
    /// Why, with the numbers.
    pub reason: String,
}

/// The data quality (三一致) of a region: counts by rule, by village and by
/// department, and a page of the findings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataQualityView {
    /// The region the figures cover: the caller's, or the `region` asked for.
    pub region_code: String,
    /// The China Standard Time day judged.
    pub today: NaiveDate,
    /// Registry households of the region evaluated.
    pub households: u64,
    /// `sweeps.late_report_days`: a delay beyond this many days is late.
    pub late_report_days: u32,
    /// Every rule with its count, registry rules first.
    pub by_rule: Vec<DataQualityRuleCount>,
    /// Villages with findings or late events, by code.
    pub by_village: Vec<DataQualityVillage>,
    /// Departments with events or subjects not on the roster, by name.
    pub by_department: Vec<DataQualityDepartment>,
    /// Subjects not on the roster by the resident ID's issuing area (first 6 digits).
    pub unmatched_by_id_area: BTreeMap<String, crate::domain::department_quality::SubjectTally>,
    /// Findings in report order: households by registry order, then subjects not on
    /// the roster, then late departments.
    pub items: Vec<DataQualityFinding>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next: Option<String>,
}
