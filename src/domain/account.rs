//! Accounts (账号) and what each role may do: the seed's three levels (county,
//! township, village), read-only department accounts and administrators. An
//! account's scope is its region's subtree, and nothing outside it exists for it.
//! Pure: the store keeps accounts (tokens only as SHA-256), the API enforces these
//! rules on every request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::event::{Source, wire_enum};
use super::ids::{RegionCode, RegionLevel};
use super::signal::RiskKind;

wire_enum! {
    /// What an account is for.
    Role {
        /// 县级: the county office. Sees department detail; decides (县级审定).
        County = "county",
        /// 乡镇: reviews what its villages found (乡镇审核).
        Township = "township",
        /// 村: the village worker who visits households (入户核实).
        Village = "village",
        /// 行业部门: a department, read-only: regional summaries, signals, and the dead
        /// letters of its own feed.
        Department = "department",
        /// 系统管理员: the operator; reads everything in scope, manages accounts, takes
        /// no part in the procedure.
        Admin = "admin",
    }
}

/// One thing a role may or may not do (the API answers 403 when it may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Regions, their summaries and count series.
    ReadRegions,
    /// Regional signals.
    ReadSignals,
    /// Alerts, tasks and households.
    ReadHouseholds,
    /// Dead letters (a department: of its own feed only).
    ReadDeadLetters,
    /// The audit log.
    ReadAudit,
    /// Department detail: amounts, diagnosis groups, the evidence events' payloads.
    DepartmentDetail,
    /// Create, list and revoke accounts below oneself.
    ManageAccounts,
}

impl Role {
    /// Rank for "no higher than its own": admin > county > township > village >
    /// department.
    pub fn rank(self) -> u8 {
        match self {
            Role::Admin => 4,
            Role::County => 3,
            Role::Township => 2,
            Role::Village => 1,
            Role::Department => 0,
        }
    }

    /// The level an account of this role is placed at (`None`: any level).
    pub fn region_level(self) -> Option<RegionLevel> {
        match self {
            Role::County => Some(RegionLevel::County),
            Role::Township => Some(RegionLevel::Township),
            Role::Village => Some(RegionLevel::Village),
            Role::Department | Role::Admin => None,
        }
    }

    /// Whether this role holds `right`.
    pub fn may(self, right: Right) -> bool {
        use Right::*;
        match right {
            ReadRegions | ReadSignals => true,
            ReadHouseholds => !matches!(self, Role::Department),
            ReadDeadLetters => matches!(self, Role::County | Role::Admin | Role::Department),
            ReadAudit => matches!(self, Role::County | Role::Admin),
            DepartmentDetail => matches!(self, Role::County),
            ManageAccounts => matches!(self, Role::Admin | Role::County | Role::Township),
        }
    }

    /// The Chinese name.
    pub fn zh(self) -> &'static str {
        match self {
            Role::County => "县级",
            Role::Township => "乡镇",
            Role::Village => "村级",
            Role::Department => "行业部门",
            Role::Admin => "系统管理员",
        }
    }
}

/// The regional series a department's feed contributes to: what a department account
/// sees of the signals and count series.
pub fn department_kinds(source: Source) -> &'static [RiskKind] {
    match source {
        Source::CivilAffairs => &[RiskKind::LowIncome],
        Source::MedicalInsurance | Source::Health => &[RiskKind::Illness],
        Source::DisabledPersonsFederation => &[RiskKind::Disability],
        Source::HumanResources => &[RiskKind::Unemployment],
        Source::EmergencyManagement | Source::Water => &[RiskKind::Disaster],
        Source::Agriculture => &[RiskKind::IndustryFailure],
        Source::Education => &[RiskKind::Dropout],
        Source::Housing => &[RiskKind::Housing],
    }
}

/// The regions an account may see: a region and everything below it. There is no
/// scope without a region: denied by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The root of the subtree.
    pub region: RegionCode,
}

impl Scope {
    /// Whether `code` lies in the subtree.
    pub fn contains(&self, code: RegionCode) -> bool {
        code.is_within(self.region)
    }

    /// The subtree as an inclusive range of 12-digit codes, as text: what SQL
    /// compares region columns with (`BETWEEN low AND high`).
    pub fn code_range(&self) -> (String, String) {
        let unit: u64 = match self.region.level() {
            RegionLevel::Village => 1,
            RegionLevel::Township => 1000,
            RegionLevel::County => 1_000_000,
            RegionLevel::City => 100_000_000,
            RegionLevel::Province => 10_000_000_000,
        };
        let low = self.region.value();
        (format!("{low:012}"), format!("{:012}", low + unit - 1))
    }
}

/// An account as stored (its token is not: only the token's hash).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Public id (`acc_` and 16 hex digits).
    pub account_id: String,
    /// Unique name; the audit names the actor by it.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The root of its scope.
    pub region: RegionCode,
    /// For a department account: its feed.
    pub source: Option<Source>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Who created it (an account name, or `cli:` and the operator).
    pub created_by: String,
    /// Revoked (its token then answers 401).
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Account {
    /// Its scope.
    pub fn scope(&self) -> Scope {
        Scope {
            region: self.region,
        }
    }
}

/// Why an account may not be created as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The creator's role cannot create accounts at all.
    #[error("a {0} account cannot create accounts")]
    NotAllowed(Role),
    /// The new role ranks above the creator's.
    #[error("a {creator} account cannot create a {role} account")]
    RoleTooHigh {
        /// Creator's role.
        creator: Role,
        /// Role asked for.
        role: Role,
    },
    /// The region lies outside the creator's scope.
    #[error("region {0} is outside the creator's region")]
    OutsideScope(RegionCode),
    /// The region is not at the role's level.
    #[error("a {role} account needs a {level} region code, not {region}")]
    WrongLevel {
        /// Role.
        role: Role,
        /// The level it needs.
        level: &'static str,
        /// The region given.
        region: RegionCode,
    },
    /// A department account needs its feed; other roles have none.
    #[error("{0}")]
    Source(&'static str),
    /// Bad name.
    #[error("account name must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    Name,
}

/// What a new account asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Region.
    pub region: RegionCode,
    /// Department feed.
    pub source: Option<Source>,
}

impl NewAccount {
    /// Checks the request on its own (name, level, source) and, with a `creator`
    /// account, against it: a role that manages accounts, a region inside its
    /// subtree, a role no higher than its own (departments by county or admin only).
    pub fn check(&self, creator: Option<&Account>) -> Result<(), AccountError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(AccountError::Name);
        }
        if let Some(level) = self.role.region_level()
            && self.region.level() != level
        {
            return Err(AccountError::WrongLevel {
                role: self.role,
                level: level.as_str(),
                region: self.region,
            });
        }
        match (self.role, self.source) {
            (Role::Department, None) => {
                return Err(AccountError::Source(
                    "a department account needs its source (the department feed it owns)",
                ));
            }
            (role, Some(_)) if role != Role::Department => {
                return Err(AccountError::Source(
                    "only department accounts have a source",
                ));
            }
            _ => {}
        }
        let Some(creator) = creator else {
            return Ok(());
        };
        if !creator.role.may(Right::ManageAccounts) {
            return Err(AccountError::NotAllowed(creator.role));
        }
        let too_high = self.role.rank() > creator.role.rank()
            || (self.role == Role::Department && creator.role.rank() < Role::County.rank());
        if too_high {
            return Err(AccountError::RoleTooHigh {
                creator: creator.role,
                role: self.role,
            });
        }
        if !creator.scope().contains(self.region) {
            return Err(AccountError::OutsideScope(self.region));
        }
        Ok(())
    }
}

/// A new random bearer token: `yj_` and 64 hex digits (256 bits from the operating
/// system's generator).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("yj_{}", hex::encode(bytes)))
}

/// A new public account id: `acc_` and 16 hex digits.
pub fn new_account_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(format!("acc_{}", hex::encode(bytes)))
}

/// What the store keeps of a token: its SHA-256. Tokens carry 256 random bits, so a
/// plain digest cannot be searched back to one.
pub fn token_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> RegionCode {
        RegionCode::parse(text).unwrap()
    }

    fn account(role: Role, region: &str) -> Account {
        Account {
            account_id: "acc_1".into(),
            name: "a".into(),
            role,
            region: code(region),
            source: None,
            created_at: Utc::now(),
            created_by: "cli:test".into(),
            revoked_at: None,
        }
    }

    fn new(role: Role, region: &str) -> NewAccount {
        NewAccount {
            name: "new-1".into(),
            role,
            region: code(region),
            source: (role == Role::Department).then_some(Source::MedicalInsurance),
        }
    }

    #[test]
    fn scope_ranges_cover_exactly_the_subtree() {
        let township = Scope {
            region: code("522425101000"),
        };
        assert_eq!(
            township.code_range(),
            ("522425101000".into(), "522425101999".into())
        );
        assert!(township.contains(code("522425101201")));
        assert!(!township.contains(code("522425102201")));
        let village = Scope {
            region: code("522425101201"),
        };
        assert_eq!(village.code_range().0, village.code_range().1);
    }

    #[test]
    fn accounts_are_created_only_below_and_inside() {
        let county = account(Role::County, "522425000000");
        let township = account(Role::Township, "522425101000");
        let village = account(Role::Village, "522425101201");
        assert_eq!(
            new(Role::Township, "522425101000").check(Some(&county)),
            Ok(())
        );
        assert_eq!(
            new(Role::Village, "522425101202").check(Some(&township)),
            Ok(())
        );
        assert!(matches!(
            new(Role::County, "522425000000").check(Some(&township)),
            Err(AccountError::RoleTooHigh { .. })
        ));
        assert!(matches!(
            new(Role::Village, "522425102201").check(Some(&township)),
            Err(AccountError::OutsideScope(_))
        ));
        assert_eq!(
            new(Role::Village, "522425101201").check(Some(&village)),
            Err(AccountError::NotAllowed(Role::Village))
        );
        assert!(matches!(
            new(Role::Department, "522425000000").check(Some(&township)),
            Err(AccountError::RoleTooHigh { .. })
        ));
        assert_eq!(
            new(Role::Department, "522425000000").check(Some(&county)),
            Ok(())
        );
        assert!(matches!(
            new(Role::Village, "522425101000").check(None),
            Err(AccountError::WrongLevel { .. })
        ));
    }

    #[test]
    fn tokens_are_long_random_and_kept_as_digests() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn only_counties_see_department_detail() {
        for role in Role::ALL {
            assert_eq!(role.may(Right::DepartmentDetail), *role == Role::County);
        }
        assert!(!Role::Department.may(Right::ReadHouseholds));
        assert!(!Role::Village.may(Right::ReadAudit));
    }
}
