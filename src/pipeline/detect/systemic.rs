//! What an event means regionally: which risk kinds it counts for ([`classify`]), and
//! the systemic rules' windows — N unemployment registrations from one employer within
//! D days in a township or county (mass layoff), a share of a village's households with
//! new risk events within D days. Windows hold distinct households per day. Pure.

use std::collections::BTreeMap;

use crate::domain::event::{Decision, HouseDamage, HousingRating, Payload, Program};
use crate::domain::registry::HouseholdIdx;
use crate::domain::signal::RiskKind;

use super::series::Day;

/// The series kinds a household event counts for (the kind itself and `any_risk`), or
/// none. Region events (declared disasters, industry failures, water outages) are
/// handled by their rules.
pub fn classify(payload: &Payload) -> &'static [RiskKind] {
    const fn with_any(kind: RiskKind) -> [RiskKind; 2] {
        [kind, RiskKind::AnyRisk]
    }
    const UNEMPLOYMENT: [RiskKind; 2] = with_any(RiskKind::Unemployment);
    const LOW_INCOME: [RiskKind; 2] = with_any(RiskKind::LowIncome);
    const ILLNESS: [RiskKind; 2] = with_any(RiskKind::Illness);
    const DISABILITY: [RiskKind; 2] = with_any(RiskKind::Disability);
    const DISASTER: [RiskKind; 2] = with_any(RiskKind::Disaster);
    const HOUSING: [RiskKind; 2] = with_any(RiskKind::Housing);
    const DROPOUT: [RiskKind; 2] = with_any(RiskKind::Dropout);
    const ANY: [RiskKind; 1] = [RiskKind::AnyRisk];
    match payload {
        Payload::Unemployment(_) => &UNEMPLOYMENT,
        Payload::AssistanceApplication(p)
            if matches!(p.program, Program::Dibao | Program::Tekun)
                && p.decision == Decision::Applied =>
        {
            &LOW_INCOME
        }
        Payload::SeriousIllness(_) => &ILLNESS,
        Payload::MedicalSettlement(p) if p.serious_illness => &ILLNESS,
        Payload::DisabilityCertified(p) if p.grade <= 2 => &DISABILITY,
        Payload::DisasterImpact(p) if p.loss_yuan > 0.0 || p.house_damage != HouseDamage::None => {
            &DISASTER
        }
        Payload::HousingSafety(p) if matches!(p.rating, HousingRating::C | HousingRating::D) => {
            &HOUSING
        }
        Payload::SchoolDropout(_) => &DROPOUT,
        Payload::IndustryProjectFailure(_) => &ANY,
        _ => &[],
    }
}

/// Distinct households per day (one window of a rule, or one region's kind).
pub type DailyHouseholds = BTreeMap<Day, Vec<HouseholdIdx>>;

/// Adds `household` on `day`; false if it was already there.
pub fn add_household(days: &mut DailyHouseholds, day: Day, household: HouseholdIdx) -> bool {
    let list = days.entry(day).or_default();
    if list.contains(&household) {
        return false;
    }
    list.push(household);
    true
}

/// Distinct households over the days `from..=to`.
pub fn distinct_between(days: &DailyHouseholds, from: Day, to: Day) -> usize {
    let mut seen: Vec<HouseholdIdx> = days
        .range(from..=to)
        .flat_map(|(_, list)| list.iter().copied())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// The first and the last window end `e` in `first..=last` whose `window`-day window
/// (`e − window + 1 ..= e`) holds at least `needed` distinct households — no later than
/// the last day with a household, so a window never ends after its evidence — with the
/// largest count over the windows ending in `first..=last`. More households can only
/// move the first earlier and the last later, so a rule judged on part of the data and
/// then on all of it ends where one judgement on all of it does.
pub fn windows_reaching(
    days: &DailyHouseholds,
    first: Day,
    last: Day,
    window: i64,
    needed: usize,
) -> Option<(Day, Day, usize)> {
    let span = window.max(1) as Day;
    let last = last.min(days.keys().next_back().copied().unwrap_or(Day::MIN));
    let mut hit: Option<(Day, Day)> = None;
    let mut most = 0;
    for end in first..=last {
        let count = distinct_between(days, end - span + 1, end);
        most = most.max(count);
        if count >= needed {
            hit = Some(hit.map_or((end, end), |(from, _)| (from, end)));
        }
    }
    hit.map(|(from, to)| (from, to, most))
}

/// Drops the days before `from`.
pub fn prune(days: &mut DailyHouseholds, from: Day) {
    *days = days.split_off(&from);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{AssistanceApplication, DisasterImpact, Hazard};

    #[test]
    fn classification() {
        let dibao = Payload::AssistanceApplication(AssistanceApplication {
            program: Program::Dibao,
            decision: Decision::Applied,
            monthly_amount_yuan: None,
        });
        assert_eq!(classify(&dibao), &[RiskKind::LowIncome, RiskKind::AnyRisk]);
        let approved = Payload::AssistanceApplication(AssistanceApplication {
            program: Program::Dibao,
            decision: Decision::Approved,
            monthly_amount_yuan: None,
        });
        assert!(
            classify(&approved).is_empty(),
            "decisions are not applications"
        );
        let no_damage = Payload::DisasterImpact(DisasterImpact {
            hazard: Hazard::Flood,
            loss_yuan: 0.0,
            house_damage: HouseDamage::None,
            crop_loss_ratio: None,
        });
        assert!(classify(&no_damage).is_empty());
    }

    #[test]
    fn windows_count_distinct_households() {
        let mut days = DailyHouseholds::new();
        assert!(add_household(&mut days, 10, 1));
        assert!(!add_household(&mut days, 10, 1));
        add_household(&mut days, 11, 1);
        add_household(&mut days, 11, 2);
        add_household(&mut days, 14, 3);
        assert_eq!(distinct_between(&days, 10, 14), 3);
        // 3-day windows: ending 10 → {1}, 11 → {1,2}, 12 → {1,2}, 13 → {1,2}... 16 → {3}.
        assert_eq!(windows_reaching(&days, 10, 16, 3, 2), Some((11, 13, 2)));
        assert_eq!(windows_reaching(&days, 10, 16, 3, 3), None);
        // Ending 14 → {1,2,3} over 10..=14; none ends after day 14, the last with a household.
        assert_eq!(windows_reaching(&days, 10, 16, 5, 3), Some((14, 14, 3)));
        prune(&mut days, 11);
        assert_eq!(distinct_between(&days, 0, 20), 3);
        prune(&mut days, 12);
        assert_eq!(distinct_between(&days, 0, 20), 1);
    }
}
