//! The procedure's state machine: every move from every stage by every role, and the
//! budget arithmetic at its edges.

use chrono::{NaiveDate, TimeZone, Utc};

use super::*;
use crate::domain::account::Role;

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    // Times are given in China Standard Time.
    Utc.with_ymd_and_hms(2024, 5, day, hour, minute, 0).unwrap() - Duration::hours(8)
}

fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, day).unwrap()
}

fn task(kind: TaskKind, stage: Stage) -> ScreeningTask {
    let mut task = ScreeningTask::open(
        NewTask {
            task_id: "t".into(),
            kind,
            alert_id: Some("a".into()),
            signal_id: None,
            household_id: Some(HouseholdId::parse("H1").unwrap()),
            village_code: RegionCode::parse("522425101201").unwrap(),
            level: Level::Orange,
            priority_households: Vec::new(),
        },
        Budgets::default().default,
        at(1, 9, 0),
        at(1, 9, 0),
    );
    task.stage = stage;
    if matches!(
        stage,
        Stage::Visiting | Stage::TownshipReview | Stage::CountyDecision
    ) {
        task.findings = Some(findings());
    }
    if matches!(stage, Stage::TownshipReview | Stage::CountyDecision) {
        task.proposal = Some(identify_proposal());
    }
    task
}

fn findings() -> VisitFindings {
    VisitFindings {
        visited_on: date(2),
        per_capita_income_yuan: 5000.0,
        risk_types: vec![RiskType::Illness],
        note: None,
        recorded_by: "v".into(),
    }
}

fn identify_proposal() -> Proposal {
    Proposal {
        outcome: Outcome::Identify,
        monitoring_type: Some(MonitoringType::Marginal),
        deliberated_on: Some(date(3)),
        publicity_from: Some(date(4)),
        publicity_to: Some(date(8)),
        note: None,
        proposed_by: "v".into(),
    }
}

fn actor(role: Role) -> Actor {
    Actor {
        name: format!("{role}-1"),
        role,
    }
}

fn every_move() -> Vec<Move> {
    vec![
        Move::Accept { version: None },
        Move::RecordVisit {
            version: None,
            visited_on: date(2),
            per_capita_income_yuan: 5000.0,
            risk_types: vec![RiskType::Illness],
            note: None,
        },
        propose_identify(),
        Move::Approve {
            version: None,
            note: None,
        },
        Move::Return {
            version: None,
            reason: "income not verified".into(),
        },
        Move::Decide {
            version: None,
            decision: Decision::Approved,
            note: None,
        },
    ]
}

fn propose_identify() -> Move {
    Move::Propose {
        version: None,
        outcome: Outcome::Identify,
        monitoring_type: Some(MonitoringType::Marginal),
        deliberated_on: Some(date(3)),
        publicity_from: Some(date(4)),
        publicity_to: Some(date(8)),
        note: None,
    }
}

const NOW_DAY: u32 = 10;

/// Every (stage, move, role): allowed exactly when the role is the move's and the
/// stage is one it is made from; a wrong role is Forbidden whatever the stage; a
/// right role at a wrong stage is an IllegalMove.
#[test]
fn every_move_from_every_stage_by_every_role() {
    let now = at(NOW_DAY, 10, 0);
    let legal: &[(Stage, &str, Role)] = &[
        (Stage::Pending, "accept", Role::Village),
        (Stage::Visiting, "record_visit", Role::Village),
        (Stage::Visiting, "propose", Role::Village),
        (Stage::TownshipReview, "approve", Role::Township),
        (Stage::TownshipReview, "return", Role::Township),
        (Stage::CountyDecision, "decide", Role::County),
    ];
    let mut checked = 0;
    for stage in Stage::ALL {
        for request in every_move() {
            for role in Role::ALL {
                let task = task(TaskKind::Identify, *stage);
                let result = task.transition(&actor(*role), &request, now, 5);
                let is_legal = legal.contains(&(*stage, request.name(), *role));
                match result {
                    Ok(next) => {
                        assert!(
                            is_legal,
                            "{role} {} from {stage} was allowed",
                            request.name()
                        );
                        assert_eq!(next.version, task.version + 1);
                        assert_eq!(next.updated_at, now);
                    }
                    Err(ProcedureError::Forbidden { needed, .. }) => {
                        assert_ne!(*role, request.role());
                        assert_eq!(needed, request.role());
                    }
                    Err(ProcedureError::IllegalMove { stage: s, .. }) => {
                        assert_eq!(s, *stage);
                        assert_eq!(*role, request.role());
                        assert!(!request.from_stages().contains(stage));
                    }
                    Err(other) => panic!("{role} {} from {stage}: {other}", request.name()),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, Stage::ALL.len() * 6 * Role::ALL.len());
}

#[test]
fn the_whole_path_of_an_identification() {
    let village = actor(Role::Village);
    let mut task = task(TaskKind::Identify, Stage::Pending);
    let now = at(NOW_DAY, 10, 0);
    task = task
        .transition(&village, &Move::Accept { version: Some(0) }, now, 5)
        .unwrap();
    assert_eq!(
        (task.stage, task.assignee.as_deref()),
        (Stage::Visiting, Some("village-1"))
    );
    let propose_early = task.transition(&village, &propose_identify(), now, 5);
    assert!(
        matches!(
            propose_early,
            Err(ProcedureError::Invalid {
                field: "findings",
                ..
            })
        ),
        "{propose_early:?}"
    );
    task = task.transition(&village, &every_move()[1], now, 5).unwrap();
    assert_eq!(task.findings.as_ref().unwrap().recorded_by, "village-1");
    task = task
        .transition(&village, &propose_identify(), now, 5)
        .unwrap();
    assert_eq!(task.stage, Stage::TownshipReview);
    let approve = Move::Approve {
        version: None,
        note: None,
    };
    task = task
        .transition(&actor(Role::Township), &approve, now, 5)
        .unwrap();
    assert_eq!(
        task.stage,
        Stage::CountyDecision,
        "identify needs the county"
    );
    let decide = Move::Decide {
        version: Some(4),
        decision: Decision::Approved,
        note: None,
    };
    task = task
        .transition(&actor(Role::County), &decide, now, 5)
        .unwrap();
    assert_eq!(task.stage, Stage::Closed);
    assert_eq!(task.outcome, Some(Outcome::Identify));
    assert_eq!(task.decision, Some(Decision::Approved));
    assert_eq!(task.closed_at, Some(now));
    assert_eq!(task.version, 5);
}

#[test]
fn outcomes_that_change_nothing_end_at_the_township() {
    let mut task = task(TaskKind::Identify, Stage::Visiting);
    let propose = Move::Propose {
        version: None,
        outcome: Outcome::NotEligible,
        monitoring_type: None,
        deliberated_on: None,
        publicity_from: None,
        publicity_to: None,
        note: Some("income above the line".into()),
    };
    let now = at(NOW_DAY, 10, 0);
    task = task
        .transition(&actor(Role::Village), &propose, now, 5)
        .unwrap();
    let approve = Move::Approve {
        version: None,
        note: None,
    };
    task = task
        .transition(&actor(Role::Township), &approve, now, 5)
        .unwrap();
    assert_eq!(task.stage, Stage::Closed);
    assert_eq!(task.outcome, Some(Outcome::NotEligible));
    let household = household();
    assert_eq!(task.household_change(&household, now), None);
}

#[test]
fn a_return_goes_back_to_the_village_without_the_proposal() {
    let task = task(TaskKind::Identify, Stage::TownshipReview);
    let returned = task
        .transition(
            &actor(Role::Township),
            &Move::Return {
                version: None,
                reason: "publicity missing".into(),
            },
            at(NOW_DAY, 10, 0),
            5,
        )
        .unwrap();
    assert_eq!(returned.stage, Stage::Visiting);
    assert_eq!(returned.proposal, None);
    assert!(returned.findings.is_some(), "the findings stay");
    let empty = task.transition(
        &actor(Role::Township),
        &Move::Return {
            version: None,
            reason: " ".into(),
        },
        at(NOW_DAY, 10, 0),
        5,
    );
    assert!(matches!(
        empty,
        Err(ProcedureError::Invalid {
            field: "reason",
            ..
        })
    ));
}

#[test]
fn a_stale_version_is_refused() {
    let mut task = task(TaskKind::Identify, Stage::Pending);
    task.version = 3;
    let result = task.transition(
        &actor(Role::Village),
        &Move::Accept { version: Some(2) },
        at(NOW_DAY, 1, 0),
        5,
    );
    assert_eq!(
        result,
        Err(ProcedureError::Stale {
            current: 3,
            seen: 2
        })
    );
}

#[test]
fn proposals_are_checked_field_by_field() {
    let task = task(TaskKind::Identify, Stage::Visiting);
    let now = at(NOW_DAY, 10, 0);
    let propose = |outcome, monitoring_type, from: Option<u32>, to: Option<u32>| Move::Propose {
        version: None,
        outcome,
        monitoring_type,
        deliberated_on: Some(date(1)),
        publicity_from: from.map(date),
        publicity_to: to.map(date),
        note: None,
    };
    let field = |request: Move| match task.transition(&actor(Role::Village), &request, now, 5) {
        Err(ProcedureError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(propose(Outcome::Identify, None, Some(2), Some(6))),
        "monitoring_type"
    );
    assert_eq!(
        field(propose(
            Outcome::Identify,
            Some(MonitoringType::Marginal),
            None,
            Some(6)
        )),
        "publicity_from"
    );
    // Four days of publicity are too few; five (2..=6) are enough.
    assert_eq!(
        field(propose(
            Outcome::Identify,
            Some(MonitoringType::Marginal),
            Some(2),
            Some(5)
        )),
        "publicity_to"
    );
    assert!(
        task.transition(
            &actor(Role::Village),
            &propose(
                Outcome::Identify,
                Some(MonitoringType::Marginal),
                Some(2),
                Some(6)
            ),
            now,
            5
        )
        .is_ok()
    );
    // The publicity must be over: its last day is before today.
    assert_eq!(
        field(propose(
            Outcome::Identify,
            Some(MonitoringType::Marginal),
            Some(5),
            Some(NOW_DAY)
        )),
        "publicity_to"
    );
    assert_eq!(
        field(propose(Outcome::RiskRollback, None, Some(2), Some(6))),
        "outcome"
    );
    assert_eq!(
        field(propose(
            Outcome::NoRiskFound,
            Some(MonitoringType::Marginal),
            None,
            None
        )),
        "monitoring_type"
    );
    let recheck = super::tests::task(TaskKind::Recheck, Stage::Visiting);
    assert!(
        recheck
            .transition(
                &actor(Role::Village),
                &propose(Outcome::RiskRollback, None, Some(2), Some(6)),
                now,
                5
            )
            .is_ok()
    );
}

fn household() -> Household {
    Household {
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
        developmental_assistance: false,
    }
}

#[test]
fn decided_outcomes_change_the_registry() {
    let household = household();
    let day = date(3);
    let rollback = HouseholdChange::of(Outcome::RiskRollback, &household, None, day).unwrap();
    assert_eq!(rollback.risk_eliminated_on, None);
    assert_eq!(rollback.monitoring_type, Some(MonitoringType::Marginal));
    assert_eq!(rollback.identified_on, household.identified_on);
    let identified = HouseholdChange::of(
        Outcome::Identify,
        &household,
        Some(MonitoringType::SuddenHardship),
        day,
    )
    .unwrap();
    assert_eq!(identified.status, HouseholdStatus::Monitored);
    assert_eq!(identified.identified_on, Some(day));
    assert_eq!(
        identified.monitoring_type,
        Some(MonitoringType::SuddenHardship)
    );
    assert_eq!(
        HouseholdChange::of(Outcome::NoRiskFound, &household, None, day),
        None
    );

    let decided = task(TaskKind::Identify, Stage::CountyDecision);
    let reject = Move::Decide {
        version: None,
        decision: Decision::Rejected,
        note: None,
    };
    let rejected = decided
        .transition(&actor(Role::County), &reject, at(NOW_DAY, 1, 0), 5)
        .unwrap();
    assert_eq!(rejected.stage, Stage::Closed);
    assert_eq!(
        rejected.household_change(&household, at(NOW_DAY, 1, 0)),
        None,
        "rejected changes nothing"
    );
    let approve = Move::Decide {
        version: None,
        decision: Decision::Approved,
        note: None,
    };
    let approved = decided
        .transition(&actor(Role::County), &approve, at(NOW_DAY, 1, 0), 5)
        .unwrap();
    let change = approved
        .household_change(&household, at(NOW_DAY, 1, 0))
        .unwrap();
    assert_eq!(change.identified_on, Some(date(NOW_DAY)));
}

#[test]
fn budgets_count_whole_days_after_the_warning_in_china_time() {
    // Opened at 23:59: that day does not count; 15 days end at 24:00 of 16 May.
    let late = at(1, 23, 59);
    assert_eq!(deadline(late, 15), at(17, 0, 0));
    // Opened at 00:00 of the same day: the same deadline.
    assert_eq!(deadline(at(1, 0, 0), 15), at(17, 0, 0));
    // A minute later, the next day's warning: a day later.
    assert_eq!(deadline(at(2, 0, 0), 15), at(18, 0, 0));
    assert_eq!(deadline(late, 2), at(4, 0, 0));
    // 23:59 CST is 15:59 UTC: the UTC date alone would give the same answer, but a
    // warning at 00:30 CST (16:30 UTC the day before) must count from its CST day.
    assert_eq!(deadline(at(2, 0, 30), 2), at(5, 0, 0));
}

#[test]
fn days_left_and_overdue_at_the_day_boundary() {
    let due = at(17, 0, 0);
    assert_eq!(days_left(at(16, 23, 59), due), 0, "the last day");
    assert_eq!(days_left(at(16, 0, 0), due), 0);
    assert_eq!(days_left(at(15, 23, 59), due), 1);
    assert_eq!(days_left(due, due), -1, "run out at midnight");
    assert_eq!(days_left(at(18, 12, 0), due), -2);
    let mut task = task(TaskKind::Identify, Stage::Pending);
    task.due_at = due;
    task.pass_on_due_at = at(4, 0, 0);
    assert!(!task.is_overdue_at(at(3, 23, 59)));
    assert!(
        task.is_overdue_at(at(4, 0, 0)),
        "pending past the pass-on budget"
    );
    let marked = task.mark_overdue(at(4, 0, 0)).unwrap();
    assert!(marked.overdue);
    assert_eq!(marked.version, task.version + 1);
    assert_eq!(marked.mark_overdue(at(5, 0, 0)), None, "marked once");
    // Accepted late: the decision budget applies again, not overdue.
    let accepted = marked
        .transition(
            &actor(Role::Village),
            &Move::Accept { version: None },
            at(5, 9, 0),
            5,
        )
        .unwrap();
    assert!(!accepted.overdue);
    assert!(accepted.is_overdue_at(due));
    assert!(!accepted.is_overdue_at(at(16, 23, 59)));
}

#[test]
fn budgets_by_region_prefix() {
    let budgets = Budgets {
        default: Budget {
            pass_on_days: 2,
            decision_days: 15,
        },
        by_prefix: vec![
            (
                "52".into(),
                Budget {
                    pass_on_days: 3,
                    decision_days: 20,
                },
            ),
            (
                "522425".into(),
                Budget {
                    pass_on_days: 1,
                    decision_days: 10,
                },
            ),
        ],
    };
    let code = |c| RegionCode::parse(c).unwrap();
    assert_eq!(budgets.for_region(code("522425101201")).decision_days, 10);
    assert_eq!(budgets.for_region(code("522426101201")).decision_days, 20);
    assert_eq!(budgets.for_region(code("320101001001")).decision_days, 15);
}
