//! Resolve: an event's subject -> the registry household(s) it concerns. Persons are
//! joined by keyed pseudonym (never by clear ID); households by id; industry-project
//! failures fan out to the households they list; other region events stay regional.
//! A subject the registry does not know is *unmatched* — a data-quality finding,
//! counted and stored, never a dead letter.

use crate::domain::event::{Event, Payload, Subject};
use crate::domain::ids::{MaskedId, PersonKey, Pseudonymiser, RegionCode, ResidentId};
use crate::domain::registry::{HouseholdIdx, PersonEntry, Registry};

/// How an event attaches to the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One household (person and household subjects).
    Household(HouseholdIdx),
    /// Several households (an industry project's participants), plus how many
    /// listed households the registry does not know.
    Households(Vec<HouseholdIdx>, usize),
    /// A region-level event (declared disaster, water outage).
    Regional(RegionCode),
    /// The subject is not in the registry.
    Unmatched,
}

/// An event joined to the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Pseudonym of the person, for person events.
    pub person_key: Option<PersonKey>,
    /// Masked ID of the person, for display.
    pub person_masked: Option<MaskedId>,
    /// The person's registry entry, when known.
    pub person: Option<PersonEntry>,
    /// Where it attaches.
    pub target: Target,
}

/// Joins `event` to `registry`.
pub fn resolve(event: &Event, registry: &Registry, pseudonymiser: &Pseudonymiser) -> Resolved {
    resolve_with(event, registry, |id| {
        person_lookup(id, registry, pseudonymiser)
    })
}

/// A person's pseudonym and registry entry.
pub fn person_lookup(
    id: &ResidentId,
    registry: &Registry,
    pseudonymiser: &Pseudonymiser,
) -> (PersonKey, Option<PersonEntry>) {
    let key = pseudonymiser.key(id);
    (key, registry.person(&key))
}

/// Joins `event` to `registry`, with a person subject's pseudonym and entry from
/// `person` (the core looks them up for a whole batch at once).
pub fn resolve_with(
    event: &Event,
    registry: &Registry,
    person: impl FnOnce(&ResidentId) -> (PersonKey, Option<PersonEntry>),
) -> Resolved {
    match &event.subject {
        Subject::Person(id) => {
            let (key, person) = person(id);
            Resolved {
                person_key: Some(key),
                person_masked: Some(id.masked()),
                person,
                target: person.map_or(Target::Unmatched, |p| Target::Household(p.household)),
            }
        }
        Subject::Household(household_id) => Resolved {
            person_key: None,
            person_masked: None,
            person: None,
            target: registry
                .household_idx(household_id)
                .map_or(Target::Unmatched, Target::Household),
        },
        Subject::Region(code) => {
            let target = match &event.payload {
                Payload::IndustryProjectFailure(failure) => {
                    let mut found = Vec::with_capacity(failure.household_ids.len());
                    let mut missing = 0;
                    for id in &failure.household_ids {
                        match registry.household_idx(id) {
                            Some(idx) => found.push(idx),
                            None => missing += 1,
                        }
                    }
                    if found.is_empty() {
                        Target::Unmatched
                    } else {
                        Target::Households(found, missing)
                    }
                }
                _ => Target::Regional(*code),
            };
            Resolved {
                person_key: None,
                person_masked: None,
                person: None,
                target,
            }
        }
    }
}
