//! Each sweep and consistency rule at its boundaries, and corrections that clear them.

use chrono::NaiveDate;

use super::*;
use crate::domain::ids::{HouseholdId, PersonKey, RegionCode};
use crate::domain::registry::{Household, HouseholdStatus, MonitoringType, Registry};

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// 2024: the default national line is 8 300 yuan.
const TODAY: &str = "2024-05-01";

/// A consistent household of `members` (all on the roster), `labour` of them able to
/// work, with `income_per_capita`; ordinary.
fn household(members: u32, labour: u32, income_per_capita: f64) -> Household {
    Household {
        household_id: HouseholdId::parse("H1").unwrap(),
        region_code: RegionCode::parse("522425101201").unwrap(),
        members,
        labour_capable: labour,
        annual_net_income_yuan: income_per_capita * f64::from(members),
        status: HouseholdStatus::Ordinary,
        monitoring_type: None,
        identified_on: None,
        risk_eliminated_on: None,
        safety_net: false,
        dibao: false,
        tekun: false,
        developmental_assistance: false,
    }
}

/// Monitored (marginal) since `identified`.
fn monitored(mut household: Household, identified: &str) -> Household {
    household.status = HouseholdStatus::Monitored;
    household.monitoring_type = Some(MonitoringType::Marginal);
    household.identified_on = Some(day(identified));
    household
}

/// The registry of `household` with `rows` member rows, the first `labour_rows`
/// of them labour-capable.
fn registry(household: &Household, rows: u32, labour_rows: u32) -> Registry {
    let members = (0..rows).map(|i| {
        (
            PersonKey([i as u8 + 1; 32]),
            household.household_id.clone(),
            i < labour_rows,
        )
    });
    Registry::build(vec![household.clone()], members, vec![]).0
}

fn ids_with(registry: &Registry, today: &str, settings: &Settings) -> Vec<&'static str> {
    evaluate_household(registry, 0, day(today), settings)
        .iter()
        .map(|f| f.rule.id)
        .collect()
}

/// Rule ids found for a roster-consistent `household` today.
fn ids(household: &Household, today: &str) -> Vec<&'static str> {
    let registry = registry(household, household.members, household.labour_capable);
    ids_with(&registry, today, &Settings::defaults())
}

struct Case {
    name: &'static str,
    household: Household,
    today: &'static str,
    fires: bool,
}

fn check(rule: &Rule, cases: Vec<Case>) {
    for case in cases {
        let found = ids(&case.household, case.today);
        assert_eq!(
            found.contains(&rule.id),
            case.fires,
            "{}: {} found {found:?}",
            rule.id,
            case.name
        );
    }
}

#[test]
fn long_monitored_from_exactly_the_configured_years() {
    let base = household(3, 0, 9_000.0);
    let eliminated = {
        let mut h = monitored(base.clone(), "2022-05-01");
        h.risk_eliminated_on = Some(day("2023-05-01"));
        h
    };
    check(
        &LONG_MONITORED,
        vec![
            Case {
                name: "2 years minus a day",
                household: monitored(base.clone(), "2022-05-02"),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "exactly 2 years",
                household: monitored(base.clone(), "2022-05-01"),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "29 February: 2 years end on 28 February",
                household: monitored(base.clone(), "2020-02-29"),
                today: "2022-02-28",
                fires: true,
            },
            Case {
                name: "risk eliminated",
                household: eliminated,
                today: TODAY,
                fires: false,
            },
            Case {
                name: "not monitored",
                household: base.clone(),
                today: TODAY,
                fires: false,
            },
        ],
    );
    let mut settings = Settings::defaults();
    settings.sweeps.long_monitored_years = 3;
    let h = monitored(base, "2022-05-01");
    assert!(!ids_with(&registry(&h, 3, 0), TODAY, &settings).contains(&LONG_MONITORED.id));
    let found = evaluate_household(&registry(&h, 3, 0), 0, day(TODAY), &Settings::defaults());
    let reason = &found
        .iter()
        .find(|f| f.rule == &LONG_MONITORED)
        .unwrap()
        .reason;
    assert!(
        reason.contains("2022-05-01") && reason.contains("2024-05-01"),
        "{reason}"
    );
}

#[test]
fn developmental_assistance_for_labour_capable_households_without_it() {
    let marked = {
        let mut h = monitored(household(3, 1, 6_000.0), "2024-01-01");
        h.developmental_assistance = true;
        h
    };
    let eliminated = {
        let mut h = monitored(household(3, 1, 6_000.0), "2023-01-01");
        h.risk_eliminated_on = Some(day("2024-01-01"));
        h
    };
    check(
        &DEVELOPMENTAL_ASSISTANCE,
        vec![
            Case {
                name: "one labour-capable member, none recorded",
                household: monitored(household(3, 1, 6_000.0), "2024-01-01"),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "nobody able to work",
                household: monitored(household(3, 0, 6_000.0), "2024-01-01"),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "marked 已实施开发式帮扶",
                household: marked,
                today: TODAY,
                fires: false,
            },
            Case {
                name: "risk eliminated",
                household: eliminated,
                today: TODAY,
                fires: false,
            },
            Case {
                name: "ordinary",
                household: household(3, 2, 6_000.0),
                today: TODAY,
                fires: false,
            },
        ],
    );
}

#[test]
fn developmental_assistance_counts_the_roster_when_there_is_one() {
    // The row declares 2 able to work, the roster flags none: the people decide.
    let h = monitored(household(3, 2, 6_000.0), "2024-01-01");
    let found = ids_with(&registry(&h, 3, 0), TODAY, &Settings::defaults());
    assert!(!found.contains(&DEVELOPMENTAL_ASSISTANCE.id), "{found:?}");
    assert!(found.contains(&quality::LABOUR_COUNT_MISMATCH.id));
    // Without member rows, the declared count stands.
    let found = ids_with(&registry(&h, 0, 0), TODAY, &Settings::defaults());
    assert!(found.contains(&DEVELOPMENTAL_ASSISTANCE.id), "{found:?}");
}

fn eliminated(income_per_capita: f64) -> Household {
    let mut h = monitored(household(1, 1, income_per_capita), "2022-01-01");
    h.risk_eliminated_on = Some(day("2023-01-01"));
    h
}

#[test]
fn recheck_within_the_margin_of_the_line() {
    // Line 8 300, margin 10 %: at most 9 130 yuan per capita.
    check(
        &RECHECK,
        vec![
            Case {
                name: "exactly the margin",
                household: eliminated(9_130.0),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "a fen above the margin",
                household: eliminated(9_130.01),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "below the line",
                household: eliminated(8_000.0),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "not eliminated",
                household: monitored(household(1, 1, 8_000.0), "2024-01-01"),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "the 2023 line (7 100) before 2024: 9 000 is far above it",
                household: eliminated(9_000.0),
                today: "2023-12-31",
                fires: false,
            },
        ],
    );
    let registry = registry(&eliminated(8_000.0), 1, 1);
    let finding = &evaluate_household(&registry, 0, day(TODAY), &Settings::defaults())[0];
    assert_eq!(finding.rule.outcomes, &["risk_rollback", "stable"]);
    assert!(
        finding.reason.contains("8000.00 is below the line 8300.00"),
        "{}",
        finding.reason
    );
    // A wider margin takes in more.
    let mut settings = Settings::defaults();
    settings.sweeps.recheck_income_margin_share = 0.2;
    let wider = registry_for(&eliminated(9_960.0));
    assert!(ids_with(&wider, TODAY, &settings).contains(&RECHECK.id));
    assert!(!ids_with(&wider, TODAY, &Settings::defaults()).contains(&RECHECK.id));
}

fn registry_for(household: &Household) -> Registry {
    registry(household, household.members, household.labour_capable)
}

#[test]
fn safety_net_candidates_have_nobody_able_to_work_and_live_on_assistance() {
    let with = |f: fn(&mut Household)| {
        let mut h = monitored(household(2, 0, 5_000.0), "2024-01-01");
        f(&mut h);
        h
    };
    check(
        &SAFETY_NET,
        vec![
            Case {
                name: "低保, nobody able to work",
                household: with(|h| h.dibao = true),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "特困",
                household: with(|h| h.tekun = true),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "neither",
                household: with(|_| {}),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "already marked",
                household: with(|h| {
                    h.dibao = true;
                    h.safety_net = true
                }),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "someone able to work",
                household: with(|h| {
                    h.dibao = true;
                    h.labour_capable = 1
                }),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "risk eliminated",
                household: with(|h| {
                    h.dibao = true;
                    h.risk_eliminated_on = Some(day("2024-03-01"))
                }),
                today: TODAY,
                fires: false,
            },
        ],
    );
}

#[test]
fn elimination_ready_after_six_months_above_the_line_never_without_labour() {
    check(
        &ELIMINATION_READY,
        vec![
            Case {
                name: "exactly 6 months, a fen above the line",
                household: monitored(household(1, 1, 8_300.01), "2023-11-01"),
                today: TODAY,
                fires: true,
            },
            Case {
                name: "6 months minus a day",
                household: monitored(household(1, 1, 8_300.01), "2023-11-02"),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "exactly the line",
                household: monitored(household(1, 1, 8_300.0), "2023-01-01"),
                today: TODAY,
                fires: false,
            },
            Case {
                name: "whole household without labour capacity",
                household: monitored(household(2, 0, 20_000.0), "2023-01-01"),
                today: TODAY,
                fires: false,
            },
        ],
    );
}

#[test]
fn consistency_rules_at_their_boundaries() {
    let h = household(3, 1, 20_000.0);
    let settings = Settings::defaults();
    let table: Vec<(&str, Registry, &Rule, bool)> = vec![
        (
            "3 members, 2 rows",
            registry(&h, 2, 1),
            &quality::MEMBER_COUNT_MISMATCH,
            true,
        ),
        (
            "3 members, 4 rows",
            registry(&h, 4, 1),
            &quality::MEMBER_COUNT_MISMATCH,
            true,
        ),
        (
            "3 members, 3 rows",
            registry(&h, 3, 1),
            &quality::MEMBER_COUNT_MISMATCH,
            false,
        ),
        (
            "1 declared, 2 flagged",
            registry(&h, 3, 2),
            &quality::LABOUR_COUNT_MISMATCH,
            true,
        ),
        (
            "1 declared, 0 flagged",
            registry(&h, 3, 0),
            &quality::LABOUR_COUNT_MISMATCH,
            true,
        ),
        (
            "1 declared, 1 flagged",
            registry(&h, 3, 1),
            &quality::LABOUR_COUNT_MISMATCH,
            false,
        ),
    ];
    for (name, registry, rule, fires) in table {
        let found = ids_with(&registry, TODAY, &settings);
        assert_eq!(found.contains(&rule.id), fires, "{name}: {found:?}");
    }
    let dated = |status, identified: Option<&str>, eliminated: Option<&str>| {
        let mut h = household(3, 1, 20_000.0);
        h.status = status;
        h.monitoring_type =
            (status == HouseholdStatus::Monitored).then_some(MonitoringType::Marginal);
        h.identified_on = identified.map(day);
        h.risk_eliminated_on = eliminated.map(day);
        h
    };
    use HouseholdStatus::{Lifted, Monitored};
    let table: Vec<(&str, Household, &Rule, bool)> = vec![
        (
            "identified the day after elimination",
            dated(Monitored, Some("2024-01-02"), Some("2024-01-01")),
            &quality::DATES_OUT_OF_ORDER,
            true,
        ),
        (
            "identified and eliminated the same day",
            dated(Monitored, Some("2024-01-01"), Some("2024-01-01")),
            &quality::DATES_OUT_OF_ORDER,
            false,
        ),
        (
            "eliminated, never identified",
            dated(Lifted, None, Some("2024-01-01")),
            &quality::ELIMINATED_WITHOUT_IDENTIFIED,
            true,
        ),
        (
            "eliminated and identified",
            dated(Monitored, Some("2023-01-01"), Some("2024-01-01")),
            &quality::ELIMINATED_WITHOUT_IDENTIFIED,
            false,
        ),
        (
            "eliminated on a lifted household",
            dated(Lifted, None, Some("2024-01-01")),
            &quality::ELIMINATED_NOT_MONITORED,
            true,
        ),
        (
            "eliminated on a monitored household",
            dated(Monitored, Some("2023-01-01"), Some("2024-01-01")),
            &quality::ELIMINATED_NOT_MONITORED,
            false,
        ),
        (
            "identified today",
            dated(Monitored, Some(TODAY), None),
            &quality::DATE_IN_FUTURE,
            false,
        ),
        (
            "identified tomorrow",
            dated(Monitored, Some("2024-05-02"), None),
            &quality::DATE_IN_FUTURE,
            true,
        ),
        (
            "eliminated tomorrow",
            dated(Monitored, Some("2024-01-01"), Some("2024-05-02")),
            &quality::DATE_IN_FUTURE,
            true,
        ),
        (
            "monitored, typed",
            dated(Monitored, Some("2024-01-01"), None),
            &quality::MONITORED_WITHOUT_TYPE,
            false,
        ),
        (
            "monitored, typed and dated",
            dated(Monitored, Some("2024-01-01"), None),
            &quality::MONITORED_WITHOUT_IDENTIFIED,
            false,
        ),
        (
            "monitored, no date",
            dated(Monitored, None, None),
            &quality::MONITORED_WITHOUT_IDENTIFIED,
            true,
        ),
    ];
    for (name, household, rule, fires) in table {
        let found = ids(&household, TODAY);
        assert_eq!(found.contains(&rule.id), fires, "{name}: {found:?}");
    }
    let mut untyped = dated(Monitored, Some("2024-01-01"), None);
    untyped.monitoring_type = None;
    assert!(ids(&untyped, TODAY).contains(&quality::MONITORED_WITHOUT_TYPE.id));
}

/// A household that yields `rule`, and the correction that clears it.
type Fix = (Household, &'static Rule, fn(&mut Household));

#[test]
fn a_corrected_household_no_longer_yields_its_finding() {
    let fixes: Vec<Fix> = vec![
        (
            monitored(household(3, 1, 6_000.0), "2024-01-01"),
            &DEVELOPMENTAL_ASSISTANCE,
            |h| h.developmental_assistance = true,
        ),
        (eliminated(8_000.0), &RECHECK, |h| {
            h.annual_net_income_yuan = 12_000.0
        }),
        (
            {
                let mut h = monitored(household(2, 0, 5_000.0), "2024-01-01");
                h.dibao = true;
                h
            },
            &SAFETY_NET,
            |h| h.safety_net = true,
        ),
        (
            monitored(household(3, 0, 9_000.0), "2022-01-01"),
            &LONG_MONITORED,
            |h| h.risk_eliminated_on = Some(day("2024-04-01")),
        ),
        (
            monitored(household(1, 1, 9_000.0), "2023-01-01"),
            &ELIMINATION_READY,
            |h| h.annual_net_income_yuan = 8_000.0,
        ),
        (
            monitored(household(3, 1, 6_000.0), "2024-06-01"),
            &quality::DATE_IN_FUTURE,
            |h| h.identified_on = Some(day("2024-04-01")),
        ),
    ];
    let settings = Settings::defaults();
    for (household, rule, fix) in fixes {
        let mut registry = registry_for(&household);
        assert!(
            ids_with(&registry, TODAY, &settings).contains(&rule.id),
            "{}",
            rule.id
        );
        let mut corrected = household.clone();
        fix(&mut corrected);
        assert_eq!(registry.upsert_household(corrected), 0);
        let found = ids_with(&registry, TODAY, &settings);
        assert!(!found.contains(&rule.id), "{}: {found:?}", rule.id);
    }
    // A member count fixed by the roster: the missing member's row arrives.
    let h = household(3, 1, 20_000.0);
    let mut registry = registry(&h, 2, 1);
    assert!(ids_with(&registry, TODAY, &settings).contains(&quality::MEMBER_COUNT_MISMATCH.id));
    assert!(registry.add_member(PersonKey([9; 32]), "H1", false));
    assert!(ids_with(&registry, TODAY, &settings).is_empty());
}

#[test]
fn the_full_pass_counts_by_rule_and_village() {
    let mut second = eliminated(8_000.0);
    second.household_id = HouseholdId::parse("H2").unwrap();
    second.region_code = RegionCode::parse("522425101202").unwrap();
    let first = monitored(household(3, 1, 6_000.0), "2024-01-01");
    let members = vec![
        (PersonKey([1; 32]), first.household_id.clone(), true),
        (PersonKey([2; 32]), first.household_id.clone(), false),
        (PersonKey([3; 32]), first.household_id.clone(), false),
        (PersonKey([4; 32]), second.household_id.clone(), true),
    ];
    let (registry, _) = Registry::build(vec![first, second], members, vec![]);
    let findings = full_pass(&registry, day(TODAY), &Settings::defaults());
    let counts = count(&registry, &findings);
    assert_eq!(counts.by_rule[DEVELOPMENTAL_ASSISTANCE.id], 1);
    assert_eq!(counts.by_rule[RECHECK.id], 1);
    assert_eq!(counts.by_rule[LONG_MONITORED.id], 0);
    assert_eq!(counts.by_rule.len(), rules().count());
    assert_eq!(counts.by_village.len(), 2);
    let record = findings[1].record(&registry);
    assert_eq!(record.household_id.as_str(), "H2");
    let line = serde_json::to_string(&record).unwrap();
    assert!(
        line.contains(r#""rule":"sweep.recheck","kind":"sweep""#),
        "{line}"
    );
    assert!(
        line.contains(r#""outcomes":["risk_rollback","stable"]"#),
        "{line}"
    );
}

#[test]
fn rule_ids_are_unique_and_namespaced() {
    let ids: Vec<&str> = rules().map(|r| r.id).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    for rule in rules() {
        let prefix = match rule.kind {
            RuleKind::Sweep => "sweep.",
            RuleKind::Quality => "quality.",
        };
        assert!(rule.id.starts_with(prefix), "{}", rule.id);
    }
}
