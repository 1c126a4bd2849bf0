//! Screening tasks (排查任务): a visit a village owes for an alert (or for a regional
//! campaign), with a due date and a lifecycle. This module holds the task record and
//! its state machine; the rules open tasks, the API moves them, and a resolved task's
//! outcome feeds back into the registry ([`Outcome::registry_change`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{Action, Level};
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
    /// Where a task is in its lifecycle.
    TaskStatus {
        /// Waiting for a village worker.
        Open = "open",
        /// A worker has taken it.
        InProgress = "in_progress",
        /// Done, with an outcome.
        Resolved = "resolved",
        /// Past its due date and not resolved.
        Overdue = "overdue",
    }
}

wire_enum! {
    /// What the visit found.
    Outcome {
        /// Identified as a monitoring object (纳入监测).
        Identified = "identified",
        /// Assistance measures were adjusted (帮扶措施调整).
        AssistanceAdjusted = "assistance_adjusted",
        /// Risk returned after elimination (风险回退).
        RiskRollback = "risk_rollback",
        /// Verified: no return-to-poverty risk (核实无风险).
        NoRisk = "no_risk",
        /// The household could not be reached.
        NotReachable = "not_reachable",
    }
}

/// A change to a task asked for by a user or by the clock.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskChange {
    /// A worker takes the task.
    Start {
        /// Who.
        assignee: String,
    },
    /// The visit is done.
    Resolve {
        /// What it found.
        outcome: Outcome,
        /// Free-text note.
        note: Option<String>,
        /// For `identified`: the category (defaults to the alert's proposal).
        monitoring_type: Option<MonitoringType>,
    },
    /// The due date passed.
    MarkOverdue,
}

/// Why a task change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The lifecycle does not allow this change from this status.
    #[error("a {from} task cannot be {change}")]
    Transition {
        /// Current status.
        from: TaskStatus,
        /// The change asked for.
        change: &'static str,
    },
    /// `identified` needs a category and none was given or proposed.
    #[error("outcome `identified` needs a monitoring type")]
    MissingMonitoringType,
    /// The due date has not passed.
    #[error("task is not past its due date")]
    NotDue,
}

/// A screening task, as stored and exported.
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
    /// Lifecycle status.
    pub status: TaskStatus,
    /// Due date.
    pub due_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Finding, once resolved.
    pub outcome: Option<Outcome>,
    /// Note with the finding.
    pub outcome_note: Option<String>,
    /// The worker who took it.
    pub assignee: Option<String>,
    /// For a campaign: the village's households with risk events in the last
    /// `detect.signals.campaign_recent_days`, to visit first (most risk kinds, then most
    /// recent event first). Empty for household tasks.
    #[serde(default)]
    pub priority_households: Vec<HouseholdId>,
}

impl ScreeningTask {
    /// Applies `change` at `now`, enforcing the lifecycle:
    /// open → in_progress → resolved; open/in_progress → overdue → in_progress or
    /// resolved; resolved is final.
    pub fn apply(&mut self, change: &TaskChange, now: DateTime<Utc>) -> Result<(), TaskError> {
        use TaskStatus::*;
        match (self.status, change) {
            (Open | Overdue, TaskChange::Start { assignee }) => {
                self.status = InProgress;
                self.assignee = Some(assignee.clone());
            }
            (Open | InProgress | Overdue, TaskChange::Resolve { outcome, note, .. }) => {
                self.status = Resolved;
                self.outcome = Some(*outcome);
                self.outcome_note = note.clone();
            }
            (Open | InProgress, TaskChange::MarkOverdue) => {
                if now <= self.due_at {
                    return Err(TaskError::NotDue);
                }
                self.status = Overdue;
            }
            (from, change) => {
                return Err(TaskError::Transition {
                    from,
                    change: match change {
                        TaskChange::Start { .. } => "started",
                        TaskChange::Resolve { .. } => "resolved",
                        TaskChange::MarkOverdue => "marked overdue",
                    },
                });
            }
        }
        self.updated_at = now;
        Ok(())
    }
}

/// How an outcome changes the household's registry record.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryChange {
    /// New status.
    pub status: HouseholdStatus,
    /// New category.
    pub monitoring_type: Option<MonitoringType>,
    /// New identification date.
    pub identified_on: Option<NaiveDate>,
    /// New risk-eliminated date.
    pub risk_eliminated_on: Option<NaiveDate>,
}

impl Outcome {
    /// The registry change this outcome makes to `household` on `day`, if any.
    /// `identified` makes it a monitoring object of `monitoring_type`;
    /// `risk_rollback` clears its risk-eliminated date (风险回退).
    pub fn registry_change(
        self,
        household: &Household,
        monitoring_type: Option<MonitoringType>,
        day: NaiveDate,
    ) -> Result<Option<RegistryChange>, TaskError> {
        match self {
            Outcome::Identified => {
                let monitoring_type = monitoring_type.ok_or(TaskError::MissingMonitoringType)?;
                Ok(Some(RegistryChange {
                    status: HouseholdStatus::Monitored,
                    monitoring_type: Some(monitoring_type),
                    identified_on: Some(day),
                    risk_eliminated_on: None,
                }))
            }
            Outcome::RiskRollback => Ok(Some(RegistryChange {
                status: HouseholdStatus::Monitored,
                monitoring_type: household.monitoring_type.or(monitoring_type),
                identified_on: household.identified_on.or(Some(day)),
                risk_eliminated_on: None,
            })),
            Outcome::AssistanceAdjusted | Outcome::NoRisk | Outcome::NotReachable => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn task(status: TaskStatus) -> ScreeningTask {
        let t0 = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
        ScreeningTask {
            task_id: "t".into(),
            kind: TaskKind::Identify,
            alert_id: Some("a".into()),
            signal_id: None,
            household_id: Some(HouseholdId::parse("H1").unwrap()),
            village_code: RegionCode::parse("522425101201").unwrap(),
            level: Level::Orange,
            status,
            due_at: t0 + chrono::Duration::days(15),
            created_at: t0,
            updated_at: t0,
            outcome: None,
            outcome_note: None,
            assignee: None,
            priority_households: Vec::new(),
        }
    }

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn lifecycle_happy_path() {
        let mut t = task(TaskStatus::Open);
        t.apply(
            &TaskChange::Start {
                assignee: "worker-1".into(),
            },
            at(2),
        )
        .unwrap();
        assert_eq!(t.status, TaskStatus::InProgress);
        t.apply(
            &TaskChange::Resolve {
                outcome: Outcome::NoRisk,
                note: None,
                monitoring_type: None,
            },
            at(3),
        )
        .unwrap();
        assert_eq!(t.status, TaskStatus::Resolved);
        assert_eq!(t.outcome, Some(Outcome::NoRisk));
        assert_eq!(t.updated_at, at(3));
    }

    #[test]
    fn resolved_is_final() {
        let mut t = task(TaskStatus::Resolved);
        for change in [
            TaskChange::Start {
                assignee: "w".into(),
            },
            TaskChange::MarkOverdue,
            TaskChange::Resolve {
                outcome: Outcome::NoRisk,
                note: None,
                monitoring_type: None,
            },
        ] {
            assert!(matches!(
                t.apply(&change, at(20)),
                Err(TaskError::Transition { .. })
            ));
        }
    }

    #[test]
    fn overdue_only_after_the_due_date() {
        let mut t = task(TaskStatus::Open);
        assert_eq!(
            t.apply(&TaskChange::MarkOverdue, at(15)),
            Err(TaskError::NotDue)
        );
        t.apply(&TaskChange::MarkOverdue, at(17)).unwrap();
        assert_eq!(t.status, TaskStatus::Overdue);
        // An overdue task can still be taken and resolved.
        t.apply(
            &TaskChange::Start {
                assignee: "w".into(),
            },
            at(18),
        )
        .unwrap();
        assert_eq!(t.status, TaskStatus::InProgress);
    }

    #[test]
    fn in_progress_cannot_be_started_again() {
        let mut t = task(TaskStatus::InProgress);
        assert!(
            t.apply(
                &TaskChange::Start {
                    assignee: "w".into()
                },
                at(2)
            )
            .is_err()
        );
    }

    #[test]
    fn outcomes_feed_back_into_the_registry() {
        let household = Household {
            household_id: HouseholdId::parse("H1").unwrap(),
            region_code: RegionCode::parse("522425101201").unwrap(),
            members: 3,
            labour_capable: 1,
            annual_net_income_yuan: 20000.0,
            status: HouseholdStatus::Monitored,
            monitoring_type: Some(MonitoringType::Marginal),
            identified_on: NaiveDate::from_ymd_opt(2022, 1, 1),
            risk_eliminated_on: NaiveDate::from_ymd_opt(2023, 6, 1),
            safety_net: false,
            dibao: false,
            tekun: false,
        };
        let day = NaiveDate::from_ymd_opt(2024, 5, 3).unwrap();
        let rollback = Outcome::RiskRollback
            .registry_change(&household, None, day)
            .unwrap()
            .unwrap();
        assert_eq!(rollback.risk_eliminated_on, None);
        assert_eq!(rollback.monitoring_type, Some(MonitoringType::Marginal));
        assert_eq!(rollback.identified_on, household.identified_on);

        let identified = Outcome::Identified
            .registry_change(&household, Some(MonitoringType::SuddenHardship), day)
            .unwrap()
            .unwrap();
        assert_eq!(identified.status, HouseholdStatus::Monitored);
        assert_eq!(identified.identified_on, Some(day));
        assert_eq!(
            Outcome::Identified.registry_change(&household, None, day),
            Err(TaskError::MissingMonitoringType)
        );
        assert_eq!(
            Outcome::NoRisk.registry_change(&household, None, day),
            Ok(None)
        );
    }
}
