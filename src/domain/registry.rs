//! The household registry (the roster every rural household is on) as the pipeline
//! holds it in memory: households by id, members by pseudonym, villages' households.
//! Built from the store at start-up; rows are validated by `registry::import`, so
//! lookups here cannot fail, they only miss. Sized for a county or a province:
//! about 100 bytes a household and 48 a member.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::event::wire_enum;
use super::ids::{HouseholdId, PersonKey, RegionCode, RegionLevel};

wire_enum! {
    /// A household's place in the monitoring system.
    HouseholdStatus {
        /// 一般农户: never lifted out of poverty, not monitored.
        Ordinary = "ordinary",
        /// 脱贫户: lifted out of poverty, not currently a monitoring object.
        Lifted = "lifted",
        /// 监测对象: identified for monitoring (risk may since be eliminated).
        Monitored = "monitored",
    }
}

wire_enum! {
    /// The monitoring-object category (监测对象类型).
    MonitoringType {
        /// 脱贫不稳定户
        UnstableLifted = "unstable_lifted",
        /// 边缘易致贫户
        Marginal = "marginal",
        /// 突发严重困难户
        SuddenHardship = "sudden_hardship",
    }
}

wire_enum! {
    /// A member's relation to the head of household.
    Relation {
        /// 户主
        Head = "head",
        /// 配偶
        Spouse = "spouse",
        /// 子女
        Child = "child",
        /// 父母
        Parent = "parent",
        /// 孙辈
        Grandchild = "grandchild",
        /// 兄弟姐妹
        Sibling = "sibling",
        /// 其他
        Other = "other",
    }
}

/// One registry household, as imported and as kept current by task outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Household {
    /// Household number.
    pub household_id: HouseholdId,
    /// The village (12-digit code).
    pub region_code: RegionCode,
    /// Number of members (≥ 1).
    pub members: u32,
    /// Number of labour-capable members.
    pub labour_capable: u32,
    /// Annual household net income.
    pub annual_net_income_yuan: f64,
    /// Monitoring status.
    pub status: HouseholdStatus,
    /// Category, for monitored households.
    pub monitoring_type: Option<MonitoringType>,
    /// When identified as a monitoring object.
    pub identified_on: Option<NaiveDate>,
    /// When its risk was marked eliminated (风险消除).
    pub risk_eliminated_on: Option<NaiveDate>,
    /// Under 兜底保障 (social safety net).
    pub safety_net: bool,
    /// Receives 低保.
    pub dibao: bool,
    /// Receives 特困 support.
    pub tekun: bool,
    /// Marked 已实施开发式帮扶 (developmental assistance in place). Read from the
    /// roster's optional `developmental_assistance` column; not yet kept by the
    /// store, so a household loaded from it reads false.
    #[serde(default)]
    pub developmental_assistance: bool,
}

impl Household {
    /// Annual net income per member.
    pub fn per_capita_income(&self) -> f64 {
        self.annual_net_income_yuan / f64::from(self.members.max(1))
    }
}

/// One registry member, keyed by pseudonym; the clear ID is never kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// HMAC of the resident ID.
    pub person_key: PersonKey,
    /// Masked display form.
    pub person_masked: String,
    /// Household.
    pub household_id: HouseholdId,
    /// Relation to the head.
    pub relation: Relation,
    /// Able to work.
    pub labour_capable: bool,
}

/// One statistical division, with its name and (optionally) its centroid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// 12-digit code.
    pub code: RegionCode,
    /// Name.
    pub name: String,
    /// Level in the hierarchy.
    pub level: RegionLevel,
    /// Enclosing region.
    pub parent: Option<RegionCode>,
    /// Centroid longitude.
    pub longitude: Option<f64>,
    /// Centroid latitude.
    pub latitude: Option<f64>,
}

/// Hashes a [`PersonKey`] by its first bytes: the key is already an HMAC, so its
/// bytes are uniformly distributed and SipHash would only cost time.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let take = bytes.len().min(8);
        word[..take].copy_from_slice(&bytes[..take]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

/// Index of a household in [`Registry`]: compact, and stable while the registry
/// is loaded.
pub type HouseholdIdx = u32;

/// What the pipeline knows of a person: household and labour capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonEntry {
    /// Household index.
    pub household: HouseholdIdx,
    /// Able to work.
    pub labour_capable: bool,
}

/// The in-memory registry.
#[derive(Debug, Default)]
pub struct Registry {
    households: Vec<Household>,
    by_id: HashMap<HouseholdId, HouseholdIdx>,
    persons: HashMap<PersonKey, PersonEntry, BuildHasherDefault<KeyHasher>>,
    /// Labour-capable members per household, counted from the member roster.
    labour_members: Vec<u16>,
    /// Member rows per household (the roster, not the declared count).
    member_rows: Vec<u16>,
    regions: HashMap<RegionCode, Region>,
    by_village: HashMap<RegionCode, Vec<HouseholdIdx>>,
}

impl Registry {
    /// Builds the index. Members whose household is unknown are skipped and
    /// counted, so the caller can report them.
    pub fn build(
        households: Vec<Household>,
        members: impl IntoIterator<Item = (PersonKey, HouseholdId, bool)>,
        regions: Vec<Region>,
    ) -> (Registry, usize) {
        let mut registry = Registry::with_households(households, regions);
        let mut orphans = 0;
        for (key, household_id, labour_capable) in members {
            if !registry.add_member(key, household_id.as_str(), labour_capable) {
                orphans += 1;
            }
        }
        (registry, orphans)
    }

    /// The index of households and regions, members to be added with
    /// [`Registry::add_member`] (streamed from the store).
    pub fn with_households(households: Vec<Household>, regions: Vec<Region>) -> Registry {
        let mut registry = Registry {
            by_id: HashMap::with_capacity(households.len()),
            labour_members: Vec::with_capacity(households.len()),
            member_rows: Vec::with_capacity(households.len()),
            ..Registry::default()
        };
        for household in households {
            registry.upsert_household(household);
        }
        registry.regions = regions.into_iter().map(|r| (r.code, r)).collect();
        registry
    }

    /// Adds a member of the household `household_id`; false if that household is
    /// not in the registry.
    pub fn add_member(&mut self, key: PersonKey, household_id: &str, labour_capable: bool) -> bool {
        match self.by_id.get(household_id) {
            Some(&idx) => {
                self.insert_person(key, idx, labour_capable);
                true
            }
            None => false,
        }
    }

    fn insert_person(&mut self, key: PersonKey, household: HouseholdIdx, labour_capable: bool) {
        let entry = PersonEntry {
            household,
            labour_capable,
        };
        // A person is in one household: a second insert moves them.
        if let Some(previous) = self.persons.insert(key, entry) {
            let slot = &mut self.member_rows[previous.household as usize];
            *slot = slot.saturating_sub(1);
            if previous.labour_capable {
                self.labour_members[previous.household as usize] -= 1;
            }
        }
        let slot = &mut self.member_rows[household as usize];
        *slot = slot.saturating_add(1);
        if labour_capable {
            self.labour_members[household as usize] += 1;
        }
    }

    /// Adds or replaces a household (by id), keeping its index if it exists.
    pub fn upsert_household(&mut self, household: Household) -> HouseholdIdx {
        if let Some(&idx) = self.by_id.get(&household.household_id) {
            let slot = &mut self.households[idx as usize];
            if slot.region_code != household.region_code {
                if let Some(list) = self.by_village.get_mut(&slot.region_code) {
                    list.retain(|&h| h != idx);
                }
                self.by_village
                    .entry(household.region_code)
                    .or_default()
                    .push(idx);
            }
            *slot = household;
            return idx;
        }
        let idx = self.households.len() as HouseholdIdx;
        self.by_id.insert(household.household_id.clone(), idx);
        self.by_village
            .entry(household.region_code)
            .or_default()
            .push(idx);
        self.households.push(household);
        self.labour_members.push(0);
        self.member_rows.push(0);
        idx
    }

    /// Number of households.
    pub fn household_count(&self) -> usize {
        self.households.len()
    }

    /// Number of members.
    pub fn person_count(&self) -> usize {
        self.persons.len()
    }

    /// The household at `idx`.
    pub fn household(&self, idx: HouseholdIdx) -> &Household {
        &self.households[idx as usize]
    }

    /// Looks a household up by id.
    pub fn household_idx(&self, id: &HouseholdId) -> Option<HouseholdIdx> {
        self.by_id.get(id).copied()
    }

    /// Looks a person up by pseudonym.
    pub fn person(&self, key: &PersonKey) -> Option<PersonEntry> {
        self.persons.get(key).copied()
    }

    /// Labour-capable members of a household according to the member roster.
    pub fn labour_capable_members(&self, idx: HouseholdIdx) -> u32 {
        u32::from(self.labour_members[idx as usize])
    }

    /// Member rows of a household on the member roster (saturating at 65 535).
    pub fn member_rows(&self, idx: HouseholdIdx) -> u32 {
        u32::from(self.member_rows[idx as usize])
    }

    /// A region's record, when the regions file named it.
    pub fn region(&self, code: RegionCode) -> Option<&Region> {
        self.regions.get(&code)
    }

    /// Whether any regions were imported (an empty table means "no opinion").
    pub fn has_regions(&self) -> bool {
        !self.regions.is_empty()
    }

    /// Households of a village, or of every village within a township or county.
    pub fn households_within(&self, region: RegionCode) -> Vec<HouseholdIdx> {
        self.households_within_inner(region)
    }

    /// Every village with registry households and how many, sorted by code (the units
    /// of the space–time scan).
    pub fn villages(&self) -> Vec<(RegionCode, usize)> {
        let mut villages: Vec<(RegionCode, usize)> = self
            .by_village
            .iter()
            .map(|(village, list)| (*village, list.len()))
            .collect();
        villages.sort_unstable();
        villages
    }

    fn households_within_inner(&self, region: RegionCode) -> Vec<HouseholdIdx> {
        if region.level() == RegionLevel::Village {
            return self.by_village.get(&region).cloned().unwrap_or_default();
        }
        let mut found: Vec<HouseholdIdx> = self
            .by_village
            .iter()
            .filter(|(village, _)| village.is_within(region))
            .flat_map(|(_, list)| list.iter().copied())
            .collect();
        found.sort_unstable();
        found
    }

    /// Applies a status change (a task outcome) to the in-memory copy.
    pub fn set_status(
        &mut self,
        idx: HouseholdIdx,
        status: HouseholdStatus,
        monitoring_type: Option<MonitoringType>,
        identified_on: Option<NaiveDate>,
        risk_eliminated_on: Option<NaiveDate>,
    ) {
        let household = &mut self.households[idx as usize];
        household.status = status;
        household.monitoring_type = monitoring_type;
        household.identified_on = identified_on;
        household.risk_eliminated_on = risk_eliminated_on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn household(id: &str, village: &str) -> Household {
        Household {
            household_id: HouseholdId::parse(id).unwrap(),
            region_code: RegionCode::parse(village).unwrap(),
            members: 3,
            labour_capable: 2,
            annual_net_income_yuan: 30000.0,
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

    #[test]
    fn counts_labour_capable_members_and_orphans() {
        let members = vec![
            (PersonKey([1; 32]), HouseholdId::parse("H1").unwrap(), true),
            (PersonKey([2; 32]), HouseholdId::parse("H1").unwrap(), false),
            (PersonKey([3; 32]), HouseholdId::parse("H1").unwrap(), true),
            (PersonKey([4; 32]), HouseholdId::parse("H9").unwrap(), true),
        ];
        let (registry, orphans) =
            Registry::build(vec![household("H1", "522425101201")], members, vec![]);
        assert_eq!(orphans, 1);
        assert_eq!(registry.labour_capable_members(0), 2);
        assert_eq!(registry.member_rows(0), 3);
        assert_eq!(registry.person(&PersonKey([2; 32])).unwrap().household, 0);
        assert!(registry.person(&PersonKey([4; 32])).is_none());
    }

    #[test]
    fn a_person_added_again_moves_with_the_counts() {
        let (mut registry, _) = Registry::build(
            vec![
                household("H1", "522425101201"),
                household("H2", "522425101201"),
            ],
            vec![(PersonKey([1; 32]), HouseholdId::parse("H1").unwrap(), true)],
            vec![],
        );
        assert!(registry.add_member(PersonKey([1; 32]), "H2", true));
        assert_eq!(
            (registry.member_rows(0), registry.labour_capable_members(0)),
            (0, 0)
        );
        assert_eq!(
            (registry.member_rows(1), registry.labour_capable_members(1)),
            (1, 1)
        );
    }

    #[test]
    fn households_within_a_township() {
        let (registry, _) = Registry::build(
            vec![
                household("H1", "522425101201"),
                household("H2", "522425101202"),
                household("H3", "522425102201"),
            ],
            vec![],
            vec![],
        );
        let township = RegionCode::parse("522425101000").unwrap();
        assert_eq!(registry.households_within(township), vec![0, 1]);
        let village = RegionCode::parse("522425102201").unwrap();
        assert_eq!(registry.households_within(village), vec![2]);
    }

    #[test]
    fn upsert_moves_a_household_between_villages() {
        let (mut registry, _) =
            Registry::build(vec![household("H1", "522425101201")], vec![], vec![]);
        let idx = registry.upsert_household(household("H1", "522425101202"));
        assert_eq!(idx, 0);
        let old = RegionCode::parse("522425101201").unwrap();
        let new = RegionCode::parse("522425101202").unwrap();
        assert!(registry.households_within(old).is_empty());
        assert_eq!(registry.households_within(new), vec![0]);
    }
}
