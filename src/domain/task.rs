//! Screening tasks (排查任务) and the identification procedure they follow (识别程序):
//! the village verifies at home and proposes (入户核实, 民主评议, 公示), the township
//! reviews (乡镇审核), the county decides (县级审定). [`ScreeningTask::transition`] is
//! the state machine: who may make which move from which stage, and what a decided
//! outcome changes in the registry. Deadlines ([`Budget`]) count calendar days in
//! China Standard Time. Pure: the store applies a transition atomically, the API
//! turns refusals into 403 / 409 / 422.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::account::Role;
use super::alert::{Action, Level, RiskType};
use super::event::wire_enum;
use super::ids::{HouseholdId, RegionCode};
use super::registry::{Household, HouseholdStatus, MonitoringType};

wire_enum! {
    /// What the visit is for.
    TaskKind {
        /// Verify and identify a new monitoring object (within 15 days).
        Identify = "identify",
        /// Review a monitored household's assistance.
        ReviewAssistance = "review_assistance",
        /// Re-check a risk-eliminated household (回头看).
        Recheck = "recheck",
        /// Screen a village's households after a regional signal.
        Campaign = "campaign",
    }
}

impl From<Action> for TaskKind {
    fn from(action: Action) -> Self {
        match action {
            Action::Identify => TaskKind::Identify,
            Action::ReviewAssistance => TaskKind::ReviewAssistance,
            Action::Recheck => TaskKind::Recheck,
        }
    }
}

wire_enum! {
    /// Where a task is in the procedure.
    Stage {
        /// 待核实: the warning waits for the village (the township passes it on).
        Pending = "pending",
        /// 入户核实: the village has accepted and is verifying.
        Visiting = "visiting",
        /// 乡镇审核: the village proposed an outcome; the township reviews it.
        TownshipReview = "township_review",
        /// 县级审定: the township approved an outcome that changes the registry.
        CountyDecision = "county_decision",
        /// 办结: final.
        Closed = "closed",
    }
}

wire_enum! {
    /// What the village proposes (and, once decided, what the task concluded).
    Outcome {
        /// 纳入监测: identify as a monitoring object (needs a monitoring type).
        Identify = "identify",
        /// 不符合纳入条件: verified, does not qualify.
        NotEligible = "not_eligible",
        /// 已是监测对象: already monitored.
        AlreadyMonitored = "already_monitored",
        /// 风险回退: a risk-eliminated household's risk returned.
        RiskRollback = "risk_rollback",
        /// 核实无风险: no return-to-poverty risk found.
        NoRiskFound = "no_risk_found",
        /// 调整帮扶措施: a monitored household's assistance was adjusted.
        AssistanceAdjusted = "assistance_adjusted",
    }
}

impl Outcome {
    /// Whether deciding it changes the household's registry record (and so needs
    /// the county's decision, the village's deliberation and the publicity).
    pub fn changes_registry(self) -> bool {
        matches!(self, Outcome::Identify | Outcome::RiskRollback)
    }

    /// The outcomes a village may propose for a task of `kind`.
    pub fn allowed_for(kind: TaskKind) -> &'static [Outcome] {
        match kind {
            TaskKind::Identify => &[
                Outcome::Identify,
                Outcome::NotEligible,
                Outcome::AlreadyMonitored,
                Outcome::NoRiskFound,
            ],
            TaskKind::ReviewAssistance => &[Outcome::AssistanceAdjusted, Outcome::NoRiskFound],
            TaskKind::Recheck => &[Outcome::RiskRollback, Outcome::NoRiskFound],
            TaskKind::Campaign => &[Outcome::NoRiskFound],
        }
    }
}

wire_enum! {
    /// The final word on a proposal.
    Decision {
        /// Approved (by the township for outcomes that change nothing, by the county
        /// for the others).
        Approved = "approved",
        /// Rejected by the county: the registry stays as it was.
        Rejected = "rejected",
    }
}

/// What the home visit found (入户核实).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitFindings {
    /// Day of the visit.
    pub visited_on: NaiveDate,
    /// Annual net income per member found at the visit (yuan).
    pub per_capita_income_yuan: f64,
    /// Risk types the visit confirmed.
    #[serde(default)]
    pub risk_types: Vec<RiskType>,
    /// Note by the village.
    #[serde(default)]
    pub note: Option<String>,
    /// The account that recorded it (谁采集谁负责).
    #[serde(default)]
    pub recorded_by: String,
}

/// The village's proposal, with the deliberation and publicity the outcome needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    /// The proposed outcome.
    pub outcome: Outcome,
    /// For `identify`: the category.
    pub monitoring_type: Option<MonitoringType>,
    /// Day of the villagers' deliberation (民主评议).
    pub deliberated_on: Option<NaiveDate>,
    /// First day of the publicity (公示).
    pub publicity_from: Option<NaiveDate>,
    /// Last day of the publicity.
    pub publicity_to: Option<NaiveDate>,
    /// Note.
    pub note: Option<String>,
    /// The account that proposed it.
    pub proposed_by: String,
}

/// The procedure's deadlines for a region: days to pass a warning on and days to the
/// decision, both counted from the first warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The township passes the warning on to the village within this many days.
    pub pass_on_days: i64,
    /// The county decides within this many days.
    pub decision_days: i64,
}

/// China Standard Time, in which the procedure's days are counted.
fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// The calendar day of `at` in China Standard Time.
pub fn cst_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&cst()).date_naive()
}

/// The instant a period of `days` days starting at `start` runs out: the day of
/// `start` is not counted and the last day ends at 24:00 (China Standard Time), as
/// periods in days are counted in Chinese law. A warning at 2024-05-01 23:59 with 15
/// days runs out at 2024-05-17 00:00 +08:00.
pub fn deadline(start: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    let last_day = cst_day(start) + Duration::days(days);
    let midnight = (last_day + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists");
    midnight
        .and_local_timezone(cst())
        .single()
        .expect("a fixed offset has no gaps")
        .with_timezone(&Utc)
}

/// Calendar days left until `due` (China Standard Time): 0 on the last day of the
/// period, negative once it has run out.
pub fn days_left(now: DateTime<Utc>, due: DateTime<Utc>) -> i64 {
    let last_day = cst_day(due - Duration::seconds(1));
    if now >= due {
        // Overdue: -1 from the first day after the period, and so on.
        return -((cst_day(now) - last_day).num_days().max(1));
    }
    (last_day - cst_day(now)).num_days()
}

impl Budget {
    /// (pass-on deadline, decision deadline) of a warning first seen at `start`.
    pub fn deadlines(self, start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            deadline(start, self.pass_on_days),
            deadline(start, self.decision_days),
        )
    }
}

/// Budgets by region prefix; the longest matching prefix wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// The default.
    pub default: Budget,
    /// (prefix, budget) overrides.
    pub by_prefix: Vec<(String, Budget)>,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            default: Budget {
                pass_on_days: 2,
                decision_days: 15,
            },
            by_prefix: Vec::new(),
        }
    }
}

impl Budgets {
    /// The budget of a village.
    pub fn for_region(&self, code: RegionCode) -> Budget {
        let code = code.to_string();
        self.by_prefix
            .iter()
            .filter(|(prefix, _)| code.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default, |(_, budget)| *budget)
    }
}

/// A screening task, as stored, exported and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScreeningTask {
    /// Deterministic id: hash of the alert id (or signal and village).
    pub task_id: String,
    /// What the visit is for.
    pub kind: TaskKind,
    /// The alert, for household tasks.
    pub alert_id: Option<String>,
    /// The regional signal, for campaign tasks.
    pub signal_id: Option<String>,
    /// The household, for household tasks.
    pub household_id: Option<HouseholdId>,
    /// The village that owes the visit.
    pub village_code: RegionCode,
    /// Priority: the alert's (or signal's) level.
    pub level: Level,
    /// Where it is in the procedure.
    pub stage: Stage,
    /// Raised by every transition: a transition made on an older version is refused.
    pub version: u32,
    /// Past the budget of its stage and not closed.
    pub overdue: bool,
    /// When it last became overdue.
    pub overdue_at: Option<DateTime<Utc>>,
    /// The first warning: the budgets count from here.
    pub budget_from: DateTime<Utc>,
    /// The township passes it on (the village accepts) by then.
    pub pass_on_due_at: DateTime<Utc>,
    /// The decision is due by then (办结时限).
    pub due_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The village account that accepted it (责任人).
    pub assignee: Option<String>,
    /// What the visit found.
    pub findings: Option<VisitFindings>,
    /// The village's proposal under review (or decided).
    pub proposal: Option<Proposal>,
    /// The final word, once closed.
    pub decision: Option<Decision>,
    /// The outcome decided upon, once closed.
    pub outcome: Option<Outcome>,
    /// The last note of the procedure (a return's reason, a decision's note).
    pub outcome_note: Option<String>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// For a campaign: the village's households with risk events in the last
    /// `detect.signals.campaign_recent_days`, to visit first (most risk kinds, then most
    /// recent event first). Empty for household tasks.
    #[serde(default)]
    pub priority_households: Vec<HouseholdId>,
}

/// A new task's identity: everything but its procedure state.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Id.
    pub task_id: String,
    /// Kind.
    pub kind: TaskKind,
    /// Alert.
    pub alert_id: Option<String>,
    /// Signal.
    pub signal_id: Option<String>,
    /// Household.
    pub household_id: Option<HouseholdId>,
    /// Village.
    pub village_code: RegionCode,
    /// Level.
    pub level: Level,
    /// Campaign priority list.
    pub priority_households: Vec<HouseholdId>,
}

/// Declares [`Move`] (tagged by `action`, the wire form) and [`MoveByName`] (the same
/// moves keyed by name) from one list, so the two cannot drift apart.
macro_rules! moves {
    ($($variants:tt)*) => {
        /// A move of the procedure, as a user asks for it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
        pub enum Move {
            $($variants)*
        }

        /// The moves keyed by name (`{"record_visit": {...}}`): read only to name the
        /// field at fault when a [`Move`] does not read (serde cannot tell it through
        /// a tagged enum).
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        #[allow(dead_code)]
        pub enum MoveByName {
            $($variants)*
        }
    };
}

moves! {
    /// Village: the visit begins (the village takes the task).
    Accept {
        /// The version the caller saw (optional; a stale one is 409).
        #[serde(default)]
        version: Option<u32>,
    },
    /// Village: what the home visit found.
    RecordVisit {
        /// Version seen.
        #[serde(default)]
        version: Option<u32>,
        /// Day of the visit.
        visited_on: NaiveDate,
        /// Annual net income per member (yuan).
        per_capita_income_yuan: f64,
        /// Risk types confirmed.
        #[serde(default)]
        risk_types: Vec<RiskType>,
        /// Note.
        #[serde(default)]
        note: Option<String>,
    },
    /// Village: proposes an outcome to the township.
    Propose {
        /// Version seen.
        #[serde(default)]
        version: Option<u32>,
        /// The outcome.
        outcome: Outcome,
        /// For `identify`: 脱贫不稳定户 / 边缘易致贫户 / 突发严重困难户.
        #[serde(default)]
        monitoring_type: Option<MonitoringType>,
        /// Deliberation day (民主评议), for outcomes that change the registry.
        #[serde(default)]
        deliberated_on: Option<NaiveDate>,
        /// First day of publicity (公示).
        #[serde(default)]
        publicity_from: Option<NaiveDate>,
        /// Last day of publicity.
        #[serde(default)]
        publicity_to: Option<NaiveDate>,
        /// Note.
        #[serde(default)]
        note: Option<String>,
    },
    /// Township: approves the proposal (final for outcomes that change nothing; else
    /// passed to the county).
    Approve {
        /// Version seen.
        #[serde(default)]
        version: Option<u32>,
        /// Note.
        #[serde(default)]
        note: Option<String>,
    },
    /// Township: sends it back to the village, with the reason.
    Return {
        /// Version seen.
        #[serde(default)]
        version: Option<u32>,
        /// Why.
        reason: String,
    },
    /// County: the final decision on an outcome that changes the registry.
    Decide {
        /// Version seen.
        #[serde(default)]
        version: Option<u32>,
        /// Approved or rejected.
        decision: Decision,
        /// Note.
        #[serde(default)]
        note: Option<String>,
    },
}

impl Move {
    /// The move's name.
    pub fn name(&self) -> &'static str {
        match self {
            Move::Accept { .. } => "accept",
            Move::RecordVisit { .. } => "record_visit",
            Move::Propose { .. } => "propose",
            Move::Approve { .. } => "approve",
            Move::Return { .. } => "return",
            Move::Decide { .. } => "decide",
        }
    }

    /// The version the caller saw, if given.
    pub fn version(&self) -> Option<u32> {
        match self {
            Move::Accept { version }
            | Move::RecordVisit { version, .. }
            | Move::Propose { version, .. }
            | Move::Approve { version, .. }
            | Move::Return { version, .. }
            | Move::Decide { version, .. } => *version,
        }
    }

    /// The one role that makes this move.
    pub fn role(&self) -> Role {
        match self {
            Move::Accept { .. } | Move::RecordVisit { .. } | Move::Propose { .. } => Role::Village,
            Move::Approve { .. } | Move::Return { .. } => Role::Township,
            Move::Decide { .. } => Role::County,
        }
    }

    /// The stages it may be made from.
    pub fn from_stages(&self) -> &'static [Stage] {
        match self {
            Move::Accept { .. } => &[Stage::Pending],
            Move::RecordVisit { .. } | Move::Propose { .. } => &[Stage::Visiting],
            Move::Approve { .. } | Move::Return { .. } => &[Stage::TownshipReview],
            Move::Decide { .. } => &[Stage::CountyDecision],
        }
    }
}

/// Why a move was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcedureError {
    /// The caller's role never makes this move (403).
    #[error("a {role} account cannot {action}: that is the {needed}'s step")]
    Forbidden {
        /// Caller's role.
        role: Role,
        /// The move.
        action: &'static str,
        /// The role that makes it.
        needed: Role,
    },
    /// Not from this stage (409).
    #[error("cannot {action} a task in stage {stage}")]
    IllegalMove {
        /// The move.
        action: &'static str,
        /// The task's stage.
        stage: Stage,
    },
    /// The caller saw an older version (409).
    #[error("the task changed meanwhile: version {current}, the request was made on {seen}")]
    Stale {
        /// Current.
        current: u32,
        /// Seen.
        seen: u32,
    },
    /// A field is missing or wrong (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ProcedureError {
    ProcedureError::Invalid {
        field,
        message: message.into(),
    }
}

/// The household record a decided outcome leaves: absolute values, so applying it
/// twice is applying it once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HouseholdChange {
    /// What was decided (`identify`, `risk_rollback`).
    pub outcome: Outcome,
    /// New status.
    pub status: HouseholdStatus,
    /// New category.
    pub monitoring_type: Option<MonitoringType>,
    /// New identification date.
    pub identified_on: Option<NaiveDate>,
    /// New risk-eliminated date.
    pub risk_eliminated_on: Option<NaiveDate>,
}

impl HouseholdChange {
    /// The change a decided `outcome` makes to `household` on `day` (None: it
    /// changes nothing). `identify` makes a monitoring object of the proposed type;
    /// `risk_rollback` clears the risk-eliminated date (风险回退).
    pub fn of(
        outcome: Outcome,
        household: &Household,
        monitoring_type: Option<MonitoringType>,
        day: NaiveDate,
    ) -> Option<HouseholdChange> {
        match outcome {
            Outcome::Identify => Some(HouseholdChange {
                outcome,
                status: HouseholdStatus::Monitored,
                monitoring_type: monitoring_type.or(household.monitoring_type),
                identified_on: Some(day),
                risk_eliminated_on: None,
            }),
            Outcome::RiskRollback => Some(HouseholdChange {
                outcome,
                status: HouseholdStatus::Monitored,
                monitoring_type: household.monitoring_type.or(monitoring_type),
                identified_on: household.identified_on.or(Some(day)),
                risk_eliminated_on: None,
            }),
            _ => None,
        }
    }

    /// Applies it to a household record.
    pub fn apply_to(&self, household: &mut Household) {
        household.status = self.status;
        household.monitoring_type = self.monitoring_type;
        household.identified_on = self.identified_on;
        household.risk_eliminated_on = self.risk_eliminated_on;
    }
}

/// Who makes a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Account name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl ScreeningTask {
    /// A fresh task at the start of the procedure, its budget counted from
    /// `budget_from` (the first warning).
    pub fn open(
        new: NewTask,
        budget: Budget,
        budget_from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> ScreeningTask {
        let (pass_on_due_at, due_at) = budget.deadlines(budget_from);
        ScreeningTask {
            task_id: new.task_id,
            kind: new.kind,
            alert_id: new.alert_id,
            signal_id: new.signal_id,
            household_id: new.household_id,
            village_code: new.village_code,
            level: new.level,
            stage: Stage::Pending,
            version: 0,
            overdue: false,
            overdue_at: None,
            budget_from,
            pass_on_due_at,
            due_at,
            created_at: now,
            updated_at: now,
            assignee: None,
            findings: None,
            proposal: None,
            decision: None,
            outcome: None,
            outcome_note: None,
            closed_at: None,
            priority_households: new.priority_households,
        }
    }

    /// The deadline that applies to its stage: the pass-on deadline while pending,
    /// the decision deadline after; none once closed.
    pub fn current_deadline(&self) -> Option<DateTime<Utc>> {
        match self.stage {
            Stage::Closed => None,
            Stage::Pending => Some(self.pass_on_due_at.min(self.due_at)),
            _ => Some(self.due_at),
        }
    }

    /// Whether it is past the deadline of its stage at `now`.
    pub fn is_overdue_at(&self, now: DateTime<Utc>) -> bool {
        self.current_deadline().is_some_and(|due| now >= due)
    }

    /// Calendar days left on the deadline of its stage (none once closed).
    pub fn days_left(&self, now: DateTime<Utc>) -> Option<i64> {
        self.current_deadline().map(|due| days_left(now, due))
    }

    /// Makes `request` as `actor` at `now`: checks the role, the stage, the version
    /// and the fields, and returns the task after the move (version raised). A decided
    /// outcome that changes the registry is then [`ScreeningTask::household_change`].
    pub fn transition(
        &self,
        actor: &Actor,
        request: &Move,
        now: DateTime<Utc>,
        publicity_min_days: i64,
    ) -> Result<ScreeningTask, ProcedureError> {
        let action = request.name();
        if actor.role != request.role() {
            return Err(ProcedureError::Forbidden {
                role: actor.role,
                action,
                needed: request.role(),
            });
        }
        if let Some(seen) = request.version()
            && seen != self.version
        {
            return Err(ProcedureError::Stale {
                current: self.version,
                seen,
            });
        }
        if !request.from_stages().contains(&self.stage) {
            return Err(ProcedureError::IllegalMove {
                action,
                stage: self.stage,
            });
        }
        let today = cst_day(now);
        let mut next = self.clone();
        match request {
            Move::Accept { .. } => {
                next.stage = Stage::Visiting;
                next.assignee = Some(actor.name.clone());
            }
            Move::RecordVisit {
                visited_on,
                per_capita_income_yuan,
                risk_types,
                note,
                ..
            } => {
                if *visited_on > today {
                    return Err(invalid("visited_on", "the visit cannot be in the future"));
                }
                if !per_capita_income_yuan.is_finite() || *per_capita_income_yuan < 0.0 {
                    return Err(invalid(
                        "per_capita_income_yuan",
                        "must be a number, zero or more",
                    ));
                }
                check_note("note", note.as_deref())?;
                let mut risk_types = risk_types.clone();
                risk_types.sort();
                risk_types.dedup();
                next.findings = Some(VisitFindings {
                    visited_on: *visited_on,
                    per_capita_income_yuan: *per_capita_income_yuan,
                    risk_types,
                    note: note.clone(),
                    recorded_by: actor.name.clone(),
                });
            }
            Move::Propose {
                outcome,
                monitoring_type,
                deliberated_on,
                publicity_from,
                publicity_to,
                note,
                ..
            } => {
                if !Outcome::allowed_for(self.kind).contains(outcome) {
                    let allowed: Vec<&str> = Outcome::allowed_for(self.kind)
                        .iter()
                        .map(|o| o.as_str())
                        .collect();
                    return Err(invalid(
                        "outcome",
                        format!(
                            "a {} task may propose {}, not {outcome}",
                            self.kind,
                            allowed.join(", ")
                        ),
                    ));
                }
                if self.kind != TaskKind::Campaign && self.findings.is_none() {
                    return Err(invalid(
                        "findings",
                        "record the visit (record_visit) before proposing",
                    ));
                }
                check_note("note", note.as_deref())?;
                match (outcome, monitoring_type) {
                    (Outcome::Identify, None) => {
                        return Err(invalid(
                            "monitoring_type",
                            "identify needs a monitoring type (unstable_lifted, marginal, sudden_hardship)",
                        ));
                    }
                    (Outcome::Identify, Some(_)) => {}
                    (_, Some(_)) => {
                        return Err(invalid(
                            "monitoring_type",
                            "only identify takes a monitoring type",
                        ));
                    }
                    _ => {}
                }
                if outcome.changes_registry() {
                    check_publicity(
                        *deliberated_on,
                        *publicity_from,
                        *publicity_to,
                        today,
                        publicity_min_days,
                    )?;
                }
                next.stage = Stage::TownshipReview;
                next.proposal = Some(Proposal {
                    outcome: *outcome,
                    monitoring_type: *monitoring_type,
                    deliberated_on: *deliberated_on,
                    publicity_from: *publicity_from,
                    publicity_to: *publicity_to,
                    note: note.clone(),
                    proposed_by: actor.name.clone(),
                });
            }
            Move::Approve { note, .. } => {
                check_note("note", note.as_deref())?;
                let outcome = self.proposal.as_ref().map(|p| p.outcome);
                if outcome.is_some_and(Outcome::changes_registry) {
                    next.stage = Stage::CountyDecision;
                } else {
                    next.close(Decision::Approved, outcome, now);
                }
                next.outcome_note = note.clone();
            }
            Move::Return { reason, .. } => {
                if reason.trim().is_empty() {
                    return Err(invalid("reason", "say why the task goes back"));
                }
                check_note("reason", Some(reason))?;
                next.stage = Stage::Visiting;
                next.proposal = None;
                next.outcome_note = Some(reason.clone());
            }
            Move::Decide { decision, note, .. } => {
                check_note("note", note.as_deref())?;
                let outcome = self.proposal.as_ref().map(|p| p.outcome);
                next.close(*decision, outcome, now);
                next.outcome_note = note.clone();
            }
        }
        next.version = self.version + 1;
        next.updated_at = now;
        // The new stage's deadline decides whether it is overdue now.
        next.overdue = next.is_overdue_at(now);
        if !next.overdue {
            next.overdue_at = None;
        }
        Ok(next)
    }

    fn close(&mut self, decision: Decision, outcome: Option<Outcome>, now: DateTime<Utc>) {
        self.stage = Stage::Closed;
        self.decision = Some(decision);
        self.outcome = outcome;
        self.closed_at = Some(now);
    }

    /// What the move that produced this task changes in `household` (None: nothing):
    /// a closed, approved proposal whose outcome changes the registry.
    pub fn household_change(
        &self,
        household: &Household,
        now: DateTime<Utc>,
    ) -> Option<HouseholdChange> {
        if self.stage != Stage::Closed || self.decision != Some(Decision::Approved) {
            return None;
        }
        let proposal = self.proposal.as_ref()?;
        HouseholdChange::of(
            proposal.outcome,
            household,
            proposal.monitoring_type,
            cst_day(now),
        )
    }

    /// The timer's move: marks it overdue once the deadline of its stage has run
    /// out. `None` when it is not due (or already marked).
    pub fn mark_overdue(&self, now: DateTime<Utc>) -> Option<ScreeningTask> {
        if self.overdue || !self.is_overdue_at(now) {
            return None;
        }
        let mut next = self.clone();
        next.overdue = true;
        next.overdue_at = Some(now);
        next.version += 1;
        next.updated_at = now;
        Some(next)
    }
}

fn check_note(field: &'static str, note: Option<&str>) -> Result<(), ProcedureError> {
    match note {
        Some(text) if text.chars().count() > 2000 => Err(invalid(field, "at most 2000 characters")),
        _ => Ok(()),
    }
}

/// 民主评议 then at least `min_days` days of 公示, all finished by `today`.
fn check_publicity(
    deliberated_on: Option<NaiveDate>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
    min_days: i64,
) -> Result<(), ProcedureError> {
    let deliberated_on = deliberated_on.ok_or_else(|| {
        invalid(
            "deliberated_on",
            "this outcome needs the day of the villagers' deliberation (民主评议)",
        )
    })?;
    let from = from.ok_or_else(|| {
        invalid(
            "publicity_from",
            "this outcome needs its publicity (公示): first day",
        )
    })?;
    let to = to.ok_or_else(|| {
        invalid(
            "publicity_to",
            "this outcome needs its publicity (公示): last day",
        )
    })?;
    if from < deliberated_on {
        return Err(invalid(
            "publicity_from",
            "the publicity follows the deliberation",
        ));
    }
    if to < from {
        return Err(invalid("publicity_to", "the last day precedes the first"));
    }
    let days = (to - from).num_days() + 1;
    if days < min_days {
        return Err(invalid(
            "publicity_to",
            format!("the publicity lasts {days} day(s); at least {min_days} are required"),
        ));
    }
    if to >= today {
        return Err(invalid(
            "publicity_to",
            "propose once the publicity is over (its last day is before today)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// One row of the registry change log, in the order the core applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedChange {
    /// Position in the log (increasing in commit order).
    pub id: i64,
    /// The household (none for a campaign task).
    pub household_id: Option<HouseholdId>,
    /// Its record after the change (none: the task closed without changing it).
    pub change: Option<HouseholdChange>,
    /// The alert the decision closes, if any.
    pub alert_id: Option<String>,
}
