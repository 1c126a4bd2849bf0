//! Table-driven tests of the household rules: each threshold just below and just
//! above, the status → action mapping, escalation, order independence, cool-down.

use chrono::TimeZone;

use super::evaluate::evaluate;
use super::evaluate::rule_ids::*;
use super::facts::Fact;
use super::*;
use crate::config::Settings;
use crate::domain::alert::RiskType;
use crate::domain::event::{Decision, Hazard, HouseDamage, HousingRating, Program, SchoolStage};
use crate::domain::ids::{HouseholdId, RegionCode};

fn settings() -> Settings {
    Settings::defaults()
}

fn household(status: HouseholdStatus, members: u32, income: f64) -> Household {
    Household {
        household_id: HouseholdId::parse("H1").unwrap(),
        region_code: RegionCode::parse("522425101201").unwrap(),
        members,
        labour_capable: 1,
        annual_net_income_yuan: income,
        status,
        monitoring_type: (status == HouseholdStatus::Monitored).then_some(MonitoringType::Marginal),
        identified_on: None,
        risk_eliminated_on: None,
        safety_net: false,
        dibao: false,
        tekun: false,
        developmental_assistance: false,
    }
}

fn day(d: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap() + Duration::days(d)
}

fn event(id: &str, d: i64, fact: Fact) -> RiskEvent {
    RiskEvent {
        event_id: EventId::parse(id).unwrap(),
        occurred_at: day(d),
        fact,
    }
}

fn medical(id: &str, d: i64, out_of_pocket: f64) -> RiskEvent {
    event(
        id,
        d,
        Fact::Medical {
            out_of_pocket,
            serious: false,
            accident: false,
        },
    )
}

/// The rule ids and the overall level of judging `events` for `household`.
fn judge(household: &Household, events: &[RiskEvent]) -> (Vec<&'static str>, Option<Level>) {
    let settings = settings();
    let evaluation = evaluate(
        HouseholdContext {
            household,
            monitoring_line: 8300.0,
        },
        events,
        &settings.rules,
    );
    let level = evaluation.level();
    (
        evaluation.findings.iter().map(|f| f.rule_id).collect(),
        level,
    )
}

#[test]
fn medical_income_below_line_boundary() {
    // 3 members, 27 000 yuan: 9 000 per capita. The line is 8 300: out-of-pocket
    // 2 100 leaves exactly 8 300 (not below); 2 100.03 leaves 8 299.99.
    let h = household(HouseholdStatus::Ordinary, 3, 27_000.0);
    let cases = [
        (2_100.0, false),
        (2_100.03, true),
        (1_000.0, false),
        (5_000.0, true),
    ];
    for (oop, red) in cases {
        let (rules, level) = judge(&h, &[medical("M1", 0, oop)]);
        assert_eq!(rules.contains(&MEDICAL_INCOME_BELOW_LINE), red, "oop {oop}");
        assert_eq!(level == Some(Level::Red), red, "oop {oop}");
    }
}

#[test]
fn medical_income_already_below_the_line_is_not_a_fall() {
    let h = household(HouseholdStatus::Ordinary, 3, 20_000.0);
    let (rules, _) = judge(&h, &[medical("M1", 0, 500.0)]);
    assert!(!rules.contains(&MEDICAL_INCOME_BELOW_LINE));
}

#[test]
fn medical_out_of_pocket_thresholds_by_status() {
    // Incomes high enough that neither the line nor the income share decides.
    let cases = [
        (HouseholdStatus::Lifted, 4_999.99, false),
        (HouseholdStatus::Lifted, 5_000.0, true),
        (HouseholdStatus::Monitored, 5_000.0, true),
        (HouseholdStatus::Ordinary, 19_999.99, false),
        (HouseholdStatus::Ordinary, 20_000.0, true),
    ];
    for (status, oop, fires) in cases {
        let h = household(status, 3, 300_000.0);
        // Two settlements summing to `oop`: the window sums them.
        let (rules, level) = judge(
            &h,
            &[medical("M1", 0, oop / 2.0), medical("M2", 30, oop / 2.0)],
        );
        assert_eq!(
            rules.contains(&MEDICAL_HIGH_OUT_OF_POCKET),
            fires,
            "{status} {oop}"
        );
        if fires {
            assert_eq!(level, Some(Level::Orange));
        }
    }
}

#[test]
fn medical_out_of_pocket_relative_to_income() {
    // 60 000 yuan income, share 0.5: 30 000 is the bar (ordinary threshold 20 000
    // would fire first, so use a lifted household with a raised absolute bar).
    let mut settings = settings();
    settings.rules.medical.oop_threshold_yuan_lifted = 1e9;
    let h = household(HouseholdStatus::Lifted, 1, 60_000.0);
    for (oop, fires) in [(29_999.0, false), (30_000.0, true)] {
        let events = [medical("M1", 0, oop)];
        let evaluation = evaluate(
            HouseholdContext {
                household: &h,
                monitoring_line: 8300.0,
            },
            &events,
            &settings.rules,
        );
        assert_eq!(
            evaluation
                .findings
                .iter()
                .any(|f| f.rule_id == MEDICAL_HIGH_OUT_OF_POCKET),
            fires,
            "{oop}"
        );
    }
}

#[test]
fn accident_cost_is_accident_risk() {
    let h = household(HouseholdStatus::Ordinary, 3, 27_000.0);
    let events = [event(
        "M1",
        0,
        Fact::Medical {
            out_of_pocket: 3_000.0,
            serious: false,
            accident: true,
        },
    )];
    let evaluation = evaluate(
        HouseholdContext {
            household: &h,
            monitoring_line: 8300.0,
        },
        &events,
        &settings().rules,
    );
    assert_eq!(evaluation.findings[0].risk_type, Some(RiskType::Accident));
}

#[test]
fn single_event_rules() {
    let h = household(HouseholdStatus::Ordinary, 4, 200_000.0);
    let cases: Vec<(Fact, Option<&str>, Option<Level>)> = vec![
        (
            Fact::Assistance {
                program: Program::Dibao,
                decision: Decision::Applied,
            },
            Some(ASSISTANCE_DIBAO_TEKUN),
            Some(Level::Orange),
        ),
        (
            Fact::Assistance {
                program: Program::Tekun,
                decision: Decision::Approved,
            },
            Some(ASSISTANCE_DIBAO_TEKUN),
            Some(Level::Orange),
        ),
        (
            Fact::Assistance {
                program: Program::Dibao,
                decision: Decision::Rejected,
            },
            Some(ASSISTANCE_REJECTED),
            Some(Level::Yellow),
        ),
        (
            Fact::Assistance {
                program: Program::Temporary,
                decision: Decision::Applied,
            },
            Some(ASSISTANCE_TEMPORARY),
            Some(Level::Yellow),
        ),
        (
            Fact::Assistance {
                program: Program::Temporary,
                decision: Decision::Rejected,
            },
            None,
            None,
        ),
        (
            Fact::SeriousIllness,
            Some(MEDICAL_SERIOUS_ILLNESS),
            Some(Level::Orange),
        ),
        (
            Fact::Disability {
                grade: 1,
                only_earner: false,
            },
            Some(DISABILITY_SEVERE),
            Some(Level::Orange),
        ),
        (
            Fact::Disability {
                grade: 2,
                only_earner: false,
            },
            Some(DISABILITY_SEVERE),
            Some(Level::Orange),
        ),
        (
            Fact::Disability {
                grade: 3,
                only_earner: false,
            },
            Some(DISABILITY_MODERATE),
            Some(Level::Blue),
        ),
        (
            Fact::Disability {
                grade: 4,
                only_earner: true,
            },
            Some(DISABILITY_MODERATE),
            Some(Level::Blue),
        ),
        (
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
            Some(EMPLOYMENT_JOB_LOSS),
            Some(Level::Yellow),
        ),
        (
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: true,
            },
            Some(EMPLOYMENT_ONLY_EARNER),
            Some(Level::Orange),
        ),
        (
            Fact::DisasterImpact {
                hazard: Hazard::Flood,
                loss: 0.0,
                house: HouseDamage::None,
                crop_loss_ratio: None,
            },
            None,
            None,
        ),
        (
            Fact::DisasterImpact {
                hazard: Hazard::Flood,
                loss: 100.0,
                house: HouseDamage::None,
                crop_loss_ratio: None,
            },
            Some(DISASTER_IMPACT),
            Some(Level::Yellow),
        ),
        (
            Fact::DisasterImpact {
                hazard: Hazard::Landslide,
                loss: 0.0,
                house: HouseDamage::Collapsed,
                crop_loss_ratio: None,
            },
            Some(DISASTER_HOUSE_COLLAPSED),
            Some(Level::Red),
        ),
        (
            Fact::IndustryFailure,
            Some(INDUSTRY_PROJECT_FAILURE),
            Some(Level::Orange),
        ),
        (
            Fact::Dropout {
                stage: SchoolStage::Primary,
            },
            Some(EDUCATION_DROPOUT),
            Some(Level::Orange),
        ),
        (
            Fact::Housing {
                rating: HousingRating::B,
            },
            None,
            None,
        ),
        (
            Fact::Housing {
                rating: HousingRating::C,
            },
            Some(HOUSING_UNSAFE_C),
            Some(Level::Orange),
        ),
        (
            Fact::Housing {
                rating: HousingRating::D,
            },
            Some(HOUSING_UNSAFE_D),
            Some(Level::Red),
        ),
    ];
    for (fact, rule, level) in cases {
        let (rules, got) = judge(&h, &[event("E1", 0, fact.clone())]);
        if let Some(rule) = rule {
            assert!(rules.contains(&rule), "{fact:?}: {rules:?}");
        } else {
            assert!(rules.is_empty(), "{fact:?}: {rules:?}");
        }
        assert_eq!(got, level, "{fact:?}");
    }
}

#[test]
fn only_earner_disabled_adds_lack_of_labour() {
    let h = household(HouseholdStatus::Ordinary, 3, 60_000.0);
    let (rules, _) = judge(
        &h,
        &[event(
            "D1",
            0,
            Fact::Disability {
                grade: 2,
                only_earner: true,
            },
        )],
    );
    assert!(rules.contains(&LABOUR_ONLY_EARNER_DISABLED));
    // Lack of labour is a second risk type: escalation to red.
    assert!(rules.contains(&COMBINED_MULTIPLE_RISKS));
}

#[test]
fn unemployment_income_below_line_boundary() {
    // 4 members, 36 000 yuan: 9 000 per capita; the line is 8 300. Lost income
    // 2 800 leaves exactly 8 300; 2 800.04 leaves just below.
    let h = household(HouseholdStatus::Ordinary, 4, 36_000.0);
    for (lost, fires) in [(2_800.0, false), (2_800.04, true)] {
        let (rules, level) = judge(
            &h,
            &[event(
                "U1",
                0,
                Fact::Unemployment {
                    lost_income: lost,
                    only_earner: false,
                },
            )],
        );
        assert_eq!(
            rules.contains(&EMPLOYMENT_INCOME_BELOW_LINE),
            fires,
            "{lost}"
        );
        assert_eq!(
            level,
            Some(if fires { Level::Orange } else { Level::Yellow })
        );
    }
}

#[test]
fn disaster_heavy_loss_boundary() {
    // 50 000 yuan income, share 0.3: the bar is 15 000.
    let h = household(HouseholdStatus::Ordinary, 2, 50_000.0);
    for (loss, fires) in [(14_999.0, false), (15_000.0, true)] {
        let (rules, level) = judge(
            &h,
            &[event(
                "X1",
                0,
                Fact::DisasterImpact {
                    hazard: Hazard::Hail,
                    loss,
                    house: HouseDamage::Damaged,
                    crop_loss_ratio: None,
                },
            )],
        );
        assert_eq!(rules.contains(&DISASTER_HEAVY_LOSS), fires, "{loss}");
        assert_eq!(
            level,
            Some(if fires { Level::Orange } else { Level::Yellow })
        );
    }
}

#[test]
fn two_risk_types_raise_one_level() {
    let h = household(HouseholdStatus::Ordinary, 4, 200_000.0);
    let events = [
        event("S1", 0, Fact::SeriousIllness),
        event(
            "U1",
            10,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
    ];
    let (rules, level) = judge(&h, &events);
    assert!(rules.contains(&COMBINED_MULTIPLE_RISKS));
    assert_eq!(level, Some(Level::Red));
    // One risk type twice is not two risk types.
    let (rules, level) = judge(
        &h,
        &[
            event("S1", 0, Fact::SeriousIllness),
            event("S2", 5, Fact::SeriousIllness),
        ],
    );
    assert!(!rules.contains(&COMBINED_MULTIPLE_RISKS));
    assert_eq!(level, Some(Level::Orange));
}

#[test]
fn status_decides_the_action() {
    let mut h = household(HouseholdStatus::Ordinary, 3, 30_000.0);
    // 2 000 per capita after shocks is below 1.5 × line: marginal.
    assert_eq!(
        action_for(&h, 2_000.0, 8300.0, 1.5),
        (Action::Identify, Some(MonitoringType::Marginal))
    );
    // 12 450 = 1.5 × 8 300 is not above; 12 451 is: sudden hardship.
    assert_eq!(
        action_for(&h, 12_450.0, 8300.0, 1.5).1,
        Some(MonitoringType::Marginal)
    );
    assert_eq!(
        action_for(&h, 12_451.0, 8300.0, 1.5).1,
        Some(MonitoringType::SuddenHardship)
    );
    h.status = HouseholdStatus::Lifted;
    assert_eq!(
        action_for(&h, 9_000.0, 8300.0, 1.5),
        (Action::Identify, Some(MonitoringType::UnstableLifted))
    );
    h.status = HouseholdStatus::Monitored;
    assert_eq!(
        action_for(&h, 9_000.0, 8300.0, 1.5),
        (Action::ReviewAssistance, None)
    );
    h.risk_eliminated_on = chrono::NaiveDate::from_ymd_opt(2023, 1, 1);
    assert_eq!(
        action_for(&h, 9_000.0, 8300.0, 1.5),
        (Action::Recheck, None)
    );
}

fn registry_with(household: Household) -> Registry {
    Registry::build(vec![household], Vec::new(), Vec::new()).0
}

fn stage() -> HouseholdRules {
    let settings = settings();
    HouseholdRules::new(settings.rules, settings.policy)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
}

#[test]
fn one_open_alert_per_household_updated_and_raised() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    rules.apply(
        &registry,
        0,
        event(
            "U1",
            0,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        now(),
        now(),
    );
    let first = rules.drain();
    assert_eq!(first.alerts.len(), 1);
    assert_eq!(first.alerts[0].level, Level::Yellow);
    assert_eq!(
        first.tasks.len(),
        1,
        "yellow reaches the default task level"
    );
    let alert_id = first.alerts[0].alert_id.clone();
    rules.apply(
        &registry,
        0,
        event("S1", 3, Fact::SeriousIllness),
        now(),
        now(),
    );
    let second = rules.drain();
    assert_eq!(second.alerts.len(), 1);
    let alert = &second.alerts[0];
    assert_eq!(alert.alert_id, alert_id, "same alert, updated");
    assert_eq!(alert.level, Level::Red, "orange + second risk type");
    assert_eq!(alert.evidence.len(), 2);
    assert_eq!(
        second.tasks[0].level,
        Level::Red,
        "the task follows the level"
    );
    // Nothing new: nothing to write.
    rules.apply(
        &registry,
        0,
        event("S1", 3, Fact::SeriousIllness),
        now(),
        now(),
    );
    assert!(rules.drain().alerts.is_empty());
}

#[test]
fn blue_alerts_open_no_task() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    rules.apply(
        &registry,
        0,
        event(
            "D1",
            0,
            Fact::Disability {
                grade: 4,
                only_earner: false,
            },
        ),
        now(),
        now(),
    );
    let out = rules.drain();
    assert_eq!(out.alerts[0].level, Level::Blue);
    assert!(out.tasks.is_empty());
    assert_eq!(out.alerts[0].task_id, None);
}

#[test]
fn alert_ids_are_deterministic_and_order_independent() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 3, 27_000.0));
    let events = [
        medical("M1", 0, 1_200.0),
        medical("M2", 40, 1_000.0),
        event(
            "U1",
            20,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        event(
            "H1",
            60,
            Fact::Housing {
                rating: HousingRating::C,
            },
        ),
    ];
    let run = |order: &[usize]| {
        let mut rules = stage();
        for &i in order {
            rules.apply(&registry, 0, events[i].clone(), now(), now());
        }
        let alert = rules.open_alert(0).unwrap().clone();
        (
            alert.alert_id,
            alert.level,
            alert.evidence,
            alert
                .rules
                .iter()
                .map(|r| (r.rule_id.clone(), r.reason.clone()))
                .collect::<Vec<_>>(),
            alert.adjusted_per_capita_income_yuan,
        )
    };
    let in_order = run(&[0, 2, 1, 3]);
    for order in [[3, 1, 2, 0], [1, 0, 3, 2], [2, 3, 0, 1]] {
        assert_eq!(run(&order), in_order, "{order:?}");
    }
    // M1 + M2 = 2 200 out of pocket: 27 000 − 2 200 = 24 800 / 3 < 8 300.
    assert!(
        in_order
            .3
            .iter()
            .any(|(rule, _)| rule == MEDICAL_INCOME_BELOW_LINE)
    );
}

#[test]
fn events_outside_the_window_do_not_combine() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    rules.apply(
        &registry,
        0,
        event("S1", 0, Fact::SeriousIllness),
        now(),
        now(),
    );
    rules.apply(
        &registry,
        0,
        event(
            "U1",
            400,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        now(),
        now(),
    );
    let alert = rules.open_alert(0).unwrap();
    assert_eq!(alert.level, Level::Orange, "no escalation across 400 days");
    assert!(
        !alert
            .rules
            .iter()
            .any(|r| r.rule_id == COMBINED_MULTIPLE_RISKS)
    );
}

#[test]
fn cooldown_suppresses_the_same_risk_and_lets_worse_through() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    let closed_at = now();
    rules.apply(
        &registry,
        0,
        event(
            "U1",
            0,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        closed_at,
        closed_at,
    );
    rules.drain();
    let closed = rules.close_alert(0, closed_at, closed_at).unwrap();
    assert_eq!(closed.status, AlertStatus::Closed);
    // The same risk again within the cool-down (events dated before the close):
    // suppressed.
    rules.apply(
        &registry,
        0,
        event(
            "U2",
            5,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        closed_at,
        closed_at,
    );
    let out = rules.drain();
    assert!(out.alerts.is_empty());
    assert_eq!(out.suppressed, 1);
    // A different risk is not cooling down: a new alert with a new id.
    rules.apply(
        &registry,
        0,
        event("S1", 6, Fact::SeriousIllness),
        closed_at,
        closed_at,
    );
    let out = rules.drain();
    assert_eq!(out.alerts.len(), 1);
    assert_ne!(out.alerts[0].alert_id, closed.alert_id);
    assert_eq!(out.alerts[0].episode, 1);
}

#[test]
fn handled_evidence_does_not_reopen_after_the_cooldown() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    rules.apply(
        &registry,
        0,
        event(
            "H1",
            0,
            Fact::Housing {
                rating: HousingRating::D,
            },
        ),
        now(),
        now(),
    );
    rules.drain();
    rules.close_alert(0, day(1), day(1)).unwrap();
    // Long after the cool-down, an unrelated small event: the old D rating was
    // handled by the visit and must not raise a new alert by itself.
    rules.apply(&registry, 0, medical("M1", 200, 10.0), now(), now());
    assert!(rules.drain().alerts.is_empty());
}

#[test]
fn late_events_rejudge_later_windows() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 3, 27_000.0));
    let mut rules = stage();
    // A settlement on day 50 alone leaves income above the line...
    rules.apply(&registry, 0, medical("M2", 50, 1_000.0), now(), now());
    assert!(rules.open_alert(0).is_none());
    // ...an earlier one arriving late pushes the day-50 window below it.
    rules.apply(&registry, 0, medical("M1", 10, 1_200.0), now(), now());
    let alert = rules.open_alert(0).unwrap();
    assert_eq!(alert.level, Level::Red);
    assert_eq!(alert.evidence.len(), 2);
}

/// The defaults plus a 2024 line of 9 000 yuan for province 52.
fn settings_with_a_guizhou_line() -> Settings {
    let mut settings = settings();
    settings
        .policy
        .monitoring_lines
        .push(crate::config::MonitoringLine {
            region_prefix: "52".into(),
            from_year: 2024,
            yuan_per_capita: 9_000.0,
        });
    settings
}

#[test]
fn monitoring_line_follows_year_and_province() {
    let settings = settings_with_a_guizhou_line();
    let rules = HouseholdRules::new(settings.rules, settings.policy);
    let h = household(HouseholdStatus::Ordinary, 3, 27_000.0);
    assert_eq!(rules.monitoring_line(&h, day(10)), 9_000.0);
    let h2023 = Utc.with_ymd_and_hms(2023, 6, 1, 0, 0, 0).unwrap();
    assert_eq!(rules.monitoring_line(&h, h2023), 7_100.0);
}

#[test]
fn events_later_than_the_lateness_bound_are_dropped() {
    // Default look-back 365 days and lateness 90: after an event on day 600, the
    // household keeps events from day 145 on.
    let settings = settings();
    assert_eq!(
        (
            settings.rules.lookback_days,
            settings.rules.max_lateness_days
        ),
        (365, 90)
    );
    let registry = registry_with(household(HouseholdStatus::Ordinary, 3, 27_000.0));
    // 5 000 yuan out of pocket alone takes 9 000 per capita below the line.
    let mut rules = stage();
    rules.apply(&registry, 0, medical("M2", 600, 10.0), now(), now());
    rules.apply(&registry, 0, medical("M1", 144, 5_000.0), now(), now());
    assert!(rules.open_alert(0).is_none(), "too late: dropped");
    assert_eq!(rules.windows[0].len(), 1);
    let mut rules = stage();
    rules.apply(&registry, 0, medical("M2", 600, 10.0), now(), now());
    rules.apply(&registry, 0, medical("M1", 145, 5_000.0), now(), now());
    assert_eq!(
        rules.open_alert(0).map(|a| a.level),
        Some(Level::Red),
        "late within the bound: judged at its own time"
    );
}

#[test]
fn a_window_in_time_order_stays_within_twice_what_it_keeps() {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 3, 1_000_000.0));
    let mut rules = stage();
    let kept = (365 + 90 + 1) as usize;
    let mut longest = 0;
    for d in 0..3_000 {
        rules.apply(
            &registry,
            0,
            medical(&format!("M{d}"), d, 1.0),
            now(),
            now(),
        );
        longest = longest.max(rules.windows[0].len());
    }
    assert!(longest >= kept, "it keeps what a late event can reach");
    assert!(longest <= 2 * kept, "longest window {longest}");
    // A late event within the bound still finds everything it needs.
    rules.apply(&registry, 0, medical("late", 2_990, 1.0), now(), now());
    assert!(rules.windows[0].len() <= kept + 1);
}

#[test]
fn the_monitoring_line_changes_at_midnight_china_standard_time() {
    let settings = settings_with_a_guizhou_line();
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = HouseholdRules::new(settings.rules, settings.policy);
    let illness = |id: &str, at: DateTime<Utc>| RiskEvent {
        event_id: EventId::parse(id).unwrap(),
        occurred_at: at,
        fact: Fact::SeriousIllness,
    };
    // 23:59:59 on 31 December 2023 in Beijing: the 2023 line.
    let before = Utc.with_ymd_and_hms(2023, 12, 31, 15, 59, 59).unwrap();
    rules.apply(&registry, 0, illness("S1", before), now(), now());
    assert_eq!(rules.open_alert(0).unwrap().monitoring_line_yuan, 7_100.0);
    // One second later it is 2024 there.
    rules.apply(
        &registry,
        0,
        illness("S2", before + Duration::seconds(1)),
        now(),
        now(),
    );
    assert_eq!(rules.open_alert(0).unwrap().monitoring_line_yuan, 9_000.0);
    // Back to a 2023 time (a late event) and forward again: each judged with its own
    // year's line; the alert keeps the latest judgement's.
    rules.apply(
        &registry,
        0,
        illness("S0", before - Duration::days(3)),
        now(),
        now(),
    );
    assert_eq!(rules.open_alert(0).unwrap().monitoring_line_yuan, 9_000.0);
    assert_eq!(
        rules
            .lines
            .get(&rules.policy, registry.household(0), before),
        7_100.0
    );
}

/// An alert that grows for years lists at most `rules.max_evidence_per_alert` events
/// beyond those a judgement can still cite (the look-back and the lateness before
/// the household's latest event); `evidence_count` counts every event it rested on,
/// and the list keeps the newest.
#[test]
fn evidence_is_capped_to_the_newest_and_counted_whole() {
    let mut settings = settings();
    settings.rules.max_evidence_per_alert = 5;
    let mut rules = HouseholdRules::new(settings.rules.clone(), settings.policy);
    let registry = registry_with(household(HouseholdStatus::Ordinary, 3, 27_000.0));
    let spacing = 30;
    let count = 60;
    let mut longest = 0;
    for k in 0..count {
        rules.apply(
            &registry,
            0,
            event(&format!("S{k:03}"), k * spacing, Fact::SeriousIllness),
            now(),
            now(),
        );
        let alert = rules.open_alert(0).expect("an open alert");
        longest = longest.max(alert.evidence.len());
    }
    let alert = rules.open_alert(0).unwrap();
    assert_eq!(alert.evidence_count, count as u64);
    // Citable: events within 365 + 90 days before the latest (day 1770).
    let reach = settings.rules.lookback_days + settings.rules.max_lateness_days;
    let citable = (0..count)
        .filter(|k| (count - 1 - k) * spacing <= reach)
        .count();
    assert!(citable > 5);
    assert_eq!(
        alert.evidence.len(),
        citable,
        "only citable events beyond the cap"
    );
    assert!(longest <= citable + 1, "the list never grew past {longest}");
    let newest: Vec<String> = (count - citable as i64..count)
        .map(|k| format!("S{k:03}"))
        .collect();
    let listed: Vec<&str> = alert.evidence.iter().map(|e| e.as_str()).collect();
    assert_eq!(listed, newest);
    assert_eq!(alert.first_evidence_at, day(0), "the earliest stays known");
    for rule in &alert.rules {
        assert!(!rule.evidence.is_empty());
        assert!(rule.evidence.iter().all(|e| alert.evidence.contains(e)));
    }
}

fn moderate_disability(id: &str, d: i64) -> RiskEvent {
    event(
        id,
        d,
        Fact::Disability {
            grade: 4,
            only_earner: false,
        },
    )
}

/// A blue alert (below the task level) on day 0, drained.
fn blue_alert_stage() -> (Registry, HouseholdRules, String) {
    let registry = registry_with(household(HouseholdStatus::Ordinary, 4, 200_000.0));
    let mut rules = stage();
    rules.apply(&registry, 0, moderate_disability("D1", 0), now(), now());
    let out = rules.drain();
    assert_eq!(out.alerts[0].level, Level::Blue);
    assert!(out.tasks.is_empty());
    (registry, rules, out.alerts[0].alert_id.clone())
}

#[test]
fn new_evidence_exactly_the_configured_days_later_finds_the_alert_expired() {
    let days = settings().rules.expiry_days;
    // One day less: the same alert, with the new evidence.
    let (registry, mut rules, alert_id) = blue_alert_stage();
    rules.apply(
        &registry,
        0,
        moderate_disability("D2", days - 1),
        now(),
        now(),
    );
    let out = rules.drain();
    assert!(out.expired.is_empty());
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].alert_id, alert_id);
    assert_eq!(out.alerts[0].evidence_count, 2);
    // Exactly the configured days: the alert expired at that event time, and the
    // event opens a new alert.
    let (registry, mut rules, alert_id) = blue_alert_stage();
    rules.apply(&registry, 0, moderate_disability("D2", days), now(), now());
    let out = rules.drain();
    assert_eq!(out.expired.len(), 1);
    let (expired, at) = &out.expired[0];
    assert_eq!(expired.alert_id, alert_id);
    assert_eq!(expired.status, AlertStatus::Expired);
    assert_eq!(expired.closed_at, Some(now()));
    assert_eq!(expired.evidence_count, 1);
    assert_eq!(*at, day(days));
    assert_eq!(out.alerts.len(), 1);
    assert_ne!(out.alerts[0].alert_id, alert_id, "a new alert");
    assert_eq!(out.alerts[0].status, AlertStatus::Open);
}

#[test]
fn the_stream_marks_an_alert_expired_once_the_lateness_has_passed_too() {
    let rule_settings = settings().rules;
    let (days, late) = (rule_settings.expiry_days, rule_settings.max_lateness_days);
    let (_, mut rules, alert_id) = blue_alert_stage();
    // Events up to max_lateness_days late may still be its evidence: open.
    rules.advance(day(days + late - 1), now());
    assert!(rules.drain().expired.is_empty());
    assert!(rules.open_alert(0).is_some());
    rules.advance(day(days + late) - Duration::seconds(1), now());
    assert!(rules.drain().expired.is_empty());
    // Exactly then: expired, at the event time it was due.
    rules.advance(day(days + late), now());
    let out = rules.drain();
    assert_eq!(out.expired.len(), 1);
    assert_eq!(out.expired[0].0.alert_id, alert_id);
    assert_eq!(out.expired[0].1, day(days));
    assert!(out.alerts.is_empty(), "the expired alert is not open");
    assert!(rules.open_alert(0).is_none());
    // Once only.
    rules.advance(day(days + late + 10), now());
    assert!(rules.drain().expired.is_empty());
    // The check before a household's event has the same boundary.
    let (_, mut rules, _) = blue_alert_stage();
    rules.expire_if_marked(0, day(days + late - 1), now());
    assert!(rules.open_alert(0).is_some(), "one day less: open");
    rules.expire_if_marked(0, day(days + late), now());
    assert!(rules.open_alert(0).is_none(), "exactly: expired");
    assert_eq!(rules.drain().expired.len(), 1);
}

#[test]
fn new_evidence_moves_the_expiry_and_a_task_ends_it() {
    let rule_settings = settings().rules;
    let (days, late) = (rule_settings.expiry_days, rule_settings.max_lateness_days);
    let (registry, mut rules, alert_id) = blue_alert_stage();
    rules.apply(&registry, 0, moderate_disability("D2", 30), now(), now());
    rules.advance(day(days + late), now());
    assert!(rules.drain().expired.is_empty(), "new evidence on day 30");
    rules.advance(day(30 + days + late - 1), now());
    assert!(rules.drain().expired.is_empty());
    rules.advance(day(30 + days + late), now());
    let out = rules.drain();
    assert_eq!(out.expired.len(), 1);
    assert_eq!(out.expired[0].0.alert_id, alert_id);
    assert_eq!(out.expired[0].0.evidence_count, 2);
    assert_eq!(out.expired[0].1, day(30 + days));

    // An alert raised to the task level has a task: it ends with the task's outcome.
    let (registry, mut rules, _) = blue_alert_stage();
    rules.apply(
        &registry,
        0,
        event(
            "U1",
            10,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        now(),
        now(),
    );
    assert!(rules.open_alert(0).unwrap().task_id.is_some());
    rules.advance(day(10 + 10 * (days + late)), now());
    rules.apply(
        &registry,
        0,
        moderate_disability("D2", 10 + 2 * days),
        now(),
        now(),
    );
    assert!(rules.drain().expired.is_empty());
    assert!(rules.open_alert(0).is_some());
}

#[test]
fn expired_evidence_does_not_alert_again_and_no_cool_down_follows() {
    let days = settings().rules.expiry_days;
    let cooldown = settings().rules.cooldown_days;
    assert!(5 < cooldown, "the new certificate falls within a cool-down");
    let (registry, mut rules, alert_id) = blue_alert_stage();
    // An event that fires nothing of its own, after the expiry: the alert expired,
    // and the old certificate alone raises nothing again.
    rules.apply(&registry, 0, medical("M1", days + 1, 10.0), now(), now());
    let out = rules.drain();
    assert_eq!(out.expired.len(), 1);
    assert!(out.alerts.is_empty(), "{:?}", out.alerts);
    assert_eq!(out.suppressed, 0);
    // A new certificate is new evidence: a new alert (new id), not held back by a
    // cool-down (the window's earlier certificate still stands beside it).
    rules.apply(
        &registry,
        0,
        moderate_disability("D2", days + 5),
        now(),
        now(),
    );
    let out = rules.drain();
    assert_eq!(out.alerts.len(), 1);
    assert_ne!(out.alerts[0].alert_id, alert_id);
    assert_eq!(out.suppressed, 0);
    assert!(
        out.alerts[0]
            .evidence
            .contains(&EventId::parse("D2").unwrap())
    );
}

#[test]
fn closed_and_expired_alerts_leave_memory_out_of_reach() {
    let rule_settings = settings().rules;
    let days = rule_settings.expiry_days;
    let reach = rule_settings.closed_alert_reach_days();
    let (registry, mut rules, first_id) = blue_alert_stage();
    // A second alert, by an event after the first one's expiry, closed by its task.
    rules.apply(
        &registry,
        0,
        event(
            "U1",
            days + 10,
            Fact::Unemployment {
                lost_income: 0.0,
                only_earner: false,
            },
        ),
        now(),
        now(),
    );
    let out = rules.drain();
    assert_eq!(out.expired.len(), 1);
    let second = out.alerts[0].alert_id.clone();
    assert_ne!(second, first_id);
    assert_eq!(rules.alerts_held(), (1, 1), "the expired alert is held");
    rules.close_alert(0, now(), day(days + 20)).unwrap();
    assert_eq!(rules.alerts_held(), (0, 2));
    // The expired one leaves once its expiry is out of reach, the closed one later.
    rules.advance(day(days + reach), now());
    assert_eq!(rules.alerts_held(), (0, 2), "exactly at the reach: held");
    rules.advance(day(days + reach) + Duration::seconds(1), now());
    assert_eq!(rules.alerts_held(), (0, 1));
    rules.advance(day(days + 20 + reach) + Duration::seconds(1), now());
    assert_eq!(rules.alerts_held(), (0, 0));
    assert!(
        rules.alerts.iter().all(Option::is_none),
        "the household's slot is gone"
    );
    // The episode count stays: the next alert takes a third id.
    rules.apply(
        &registry,
        0,
        moderate_disability("D9", days + 30 + reach),
        now(),
        now(),
    );
    let third = rules.drain().alerts[0].clone();
    assert_eq!(third.episode, 2);
    assert!(third.alert_id != first_id && third.alert_id != second);
}
