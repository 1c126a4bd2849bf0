//! A department event after decoding and validation: the envelope (id, source, kind,
//! event time, subject) and a typed payload per kind, as DESIGN.md's feed catalogue
//! and `schemas/events/` define them. Built only by `pipeline::decode`, so every
//! value here has passed both the schema and the semantic checks.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{EventId, HouseholdId, RegionCode, ResidentId};

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the wire name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // In the OpenAPI document: a string of the wire names.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// The department that pushed a feed.
    Source {
        /// 民政
        CivilAffairs = "civil_affairs",
        /// 医保
        MedicalInsurance = "medical_insurance",
        /// 卫健
        Health = "health",
        /// 残联
        DisabledPersonsFederation = "disabled_persons_federation",
        /// 人社
        HumanResources = "human_resources",
        /// 应急管理
        EmergencyManagement = "emergency_management",
        /// 农业农村
        Agriculture = "agriculture",
        /// 教育
        Education = "education",
        /// 住建
        Housing = "housing",
        /// 水利
        Water = "water",
    }
}

wire_enum! {
    /// The feed kind; fixes the payload shape, the subject and the source.
    Kind {
        /// 低保 / 特困 / 临时救助 application or decision.
        AssistanceApplication = "assistance_application",
        /// Medical settlement with out-of-pocket cost.
        MedicalSettlement = "medical_settlement",
        /// Serious-illness (大病) diagnosis.
        SeriousIllness = "serious_illness",
        /// Disability certified, grade 1–4.
        DisabilityCertified = "disability_certified",
        /// Unemployment registered.
        Unemployment = "unemployment",
        /// Disaster declared for regions.
        DisasterDeclared = "disaster_declared",
        /// Disaster impact on one household.
        DisasterImpact = "disaster_impact",
        /// A local industry project failed.
        IndustryProjectFailure = "industry_project_failure",
        /// Compulsory-education dropout.
        SchoolDropout = "school_dropout",
        /// Housing safety rating.
        HousingSafety = "housing_safety",
        /// Drinking-water outage in a region.
        WaterOutage = "water_outage",
    }
}

/// What kind of subject a feed names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// `person_id`
    Person,
    /// `household_id`
    Household,
    /// `region_code`
    Region,
}

impl SubjectKind {
    /// The envelope field that carries this subject.
    pub fn field(self) -> &'static str {
        match self {
            SubjectKind::Person => "person_id",
            SubjectKind::Household => "household_id",
            SubjectKind::Region => "region_code",
        }
    }
}

impl Kind {
    /// The only department that may push this kind.
    pub fn source(self) -> Source {
        match self {
            Kind::AssistanceApplication => Source::CivilAffairs,
            Kind::MedicalSettlement => Source::MedicalInsurance,
            Kind::SeriousIllness => Source::Health,
            Kind::DisabilityCertified => Source::DisabledPersonsFederation,
            Kind::Unemployment => Source::HumanResources,
            Kind::DisasterDeclared | Kind::DisasterImpact => Source::EmergencyManagement,
            Kind::IndustryProjectFailure => Source::Agriculture,
            Kind::SchoolDropout => Source::Education,
            Kind::HousingSafety => Source::Housing,
            Kind::WaterOutage => Source::Water,
        }
    }

    /// The subject this kind is about.
    pub fn subject(self) -> SubjectKind {
        match self {
            Kind::AssistanceApplication
            | Kind::MedicalSettlement
            | Kind::SeriousIllness
            | Kind::DisabilityCertified
            | Kind::Unemployment
            | Kind::SchoolDropout => SubjectKind::Person,
            Kind::DisasterImpact | Kind::HousingSafety => SubjectKind::Household,
            Kind::DisasterDeclared | Kind::IndustryProjectFailure | Kind::WaterOutage => {
                SubjectKind::Region
            }
        }
    }
}

wire_enum! {
    /// Assistance programme.
    Program {
        /// 最低生活保障
        Dibao = "dibao",
        /// 特困人员救助供养
        Tekun = "tekun",
        /// 临时救助
        Temporary = "temporary",
    }
}

wire_enum! {
    /// Stage of an assistance case.
    Decision {
        /// Application filed.
        Applied = "applied",
        /// Granted.
        Approved = "approved",
        /// Refused.
        Rejected = "rejected",
    }
}

wire_enum! {
    /// Disability category (残疾类别).
    DisabilityCategory {
        /// 视力
        Visual = "visual",
        /// 听力
        Hearing = "hearing",
        /// 言语
        Speech = "speech",
        /// 肢体
        Physical = "physical",
        /// 智力
        Intellectual = "intellectual",
        /// 精神
        Mental = "mental",
        /// 多重
        Multiple = "multiple",
    }
}

wire_enum! {
    /// Why a person became unemployed.
    UnemploymentReason {
        /// Dismissed.
        LaidOff = "laid_off",
        /// Contract not renewed.
        ContractEnded = "contract_ended",
        /// Employer closed.
        BusinessClosed = "business_closed",
        /// Migrant worker returned home without work.
        ReturnedMigrant = "returned_migrant",
    }
}

wire_enum! {
    /// Natural or public-health hazard.
    Hazard {
        /// 洪涝
        Flood = "flood",
        /// 干旱
        Drought = "drought",
        /// 冰雹
        Hail = "hail",
        /// 山体滑坡 / 泥石流
        Landslide = "landslide",
        /// 地震
        Earthquake = "earthquake",
        /// 台风
        Typhoon = "typhoon",
        /// 疫情
        Epidemic = "epidemic",
        /// 其他
        Other = "other",
    }
}

wire_enum! {
    /// Emergency response level, I the most severe.
    DisasterLevel {
        /// Ⅰ级
        I = "I",
        /// Ⅱ级
        Ii = "II",
        /// Ⅲ级
        Iii = "III",
        /// Ⅳ级
        Iv = "IV",
    }
}

wire_enum! {
    /// Damage to a household's house.
    HouseDamage {
        /// Undamaged.
        None = "none",
        /// Damaged, repairable.
        Damaged = "damaged",
        /// Collapsed (倒塌).
        Collapsed = "collapsed",
    }
}

wire_enum! {
    /// Compulsory-education stage.
    SchoolStage {
        /// 小学
        Primary = "primary",
        /// 初中
        JuniorSecondary = "junior_secondary",
    }
}

wire_enum! {
    /// Housing safety appraisal (房屋安全性鉴定), D the most dangerous.
    HousingRating {
        /// 安全
        A = "A",
        /// 基本安全
        B = "B",
        /// 局部危险
        C = "C",
        /// 整体危险
        D = "D",
    }
}

/// An optional field that, when present, must hold a value: `null` is refused, as
/// the schemas refuse it.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An integer that JSON may spell `2` or `2.0` (JSON Schema's `integer` accepts
/// both), within the target type's range.
fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = f64::deserialize(deserializer)?;
    if number.fract() != 0.0 || number < 0.0 || number > u64::MAX as f64 {
        return Err(serde::de::Error::custom("expected a whole number"));
    }
    T::try_from(number as u64).map_err(|_| serde::de::Error::custom("whole number out of range"))
}

/// Whom an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A resident, by ID (clear only in memory, never stored).
    Person(ResidentId),
    /// A registry household.
    Household(HouseholdId),
    /// A statistical division.
    Region(RegionCode),
}

/// Kind-specific content, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// `assistance_application`
    AssistanceApplication(AssistanceApplication),
    /// `medical_settlement`
    MedicalSettlement(MedicalSettlement),
    /// `serious_illness`
    SeriousIllness(SeriousIllness),
    /// `disability_certified`
    DisabilityCertified(DisabilityCertified),
    /// `unemployment`
    Unemployment(Unemployment),
    /// `disaster_declared`
    DisasterDeclared(DisasterDeclared),
    /// `disaster_impact`
    DisasterImpact(DisasterImpact),
    /// `industry_project_failure`
    IndustryProjectFailure(IndustryProjectFailure),
    /// `school_dropout`
    SchoolDropout(SchoolDropout),
    /// `housing_safety`
    HousingSafety(HousingSafety),
    /// `water_outage`
    WaterOutage(WaterOutage),
}

impl Payload {
    /// The kind this payload belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::AssistanceApplication(_) => Kind::AssistanceApplication,
            Payload::MedicalSettlement(_) => Kind::MedicalSettlement,
            Payload::SeriousIllness(_) => Kind::SeriousIllness,
            Payload::DisabilityCertified(_) => Kind::DisabilityCertified,
            Payload::Unemployment(_) => Kind::Unemployment,
            Payload::DisasterDeclared(_) => Kind::DisasterDeclared,
            Payload::DisasterImpact(_) => Kind::DisasterImpact,
            Payload::IndustryProjectFailure(_) => Kind::IndustryProjectFailure,
            Payload::SchoolDropout(_) => Kind::SchoolDropout,
            Payload::HousingSafety(_) => Kind::HousingSafety,
            Payload::WaterOutage(_) => Kind::WaterOutage,
        }
    }
}

/// `assistance_application` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistanceApplication {
    /// Programme applied to.
    pub program: Program,
    /// Stage of the case.
    pub decision: Decision,
    /// Monthly amount granted, when known.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub monthly_amount_yuan: Option<f64>,
}

/// `medical_settlement` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedicalSettlement {
    /// Total cost of the settlement.
    pub total_cost_yuan: f64,
    /// Paid by insurance (basic, serious-illness and medical assistance together).
    pub reimbursed_yuan: f64,
    /// Paid by the household (个人自付).
    pub out_of_pocket_yuan: f64,
    /// Settled under serious-illness insurance (大病保险).
    pub serious_illness: bool,
    /// Diagnosis group, when given.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub diagnosis_group: Option<String>,
}

/// `serious_illness` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriousIllness {
    /// Disease group.
    pub disease_group: String,
    /// Date of diagnosis.
    pub diagnosed_on: NaiveDate,
}

/// `disability_certified` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisabilityCertified {
    /// 1–4; grades 1–2 are severe (重残).
    #[serde(deserialize_with = "whole_number")]
    pub grade: u8,
    /// Category.
    pub category: DisabilityCategory,
}

/// `unemployment` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unemployment {
    /// Why.
    pub reason: UnemploymentReason,
    /// The former employer, when known (mass-layoff detection keys on it).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub employer_id: Option<String>,
    /// The former employer's industry.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub industry: Option<String>,
    /// Monthly income lost.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_monthly_income_yuan: Option<f64>,
}

/// `disaster_declared` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisasterDeclared {
    /// Hazard.
    pub hazard: Hazard,
    /// Response level.
    pub level: DisasterLevel,
    /// Every affected region.
    pub region_codes: Vec<RegionCode>,
    /// When the emergency ends, when known.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ends_at: Option<DateTime<Utc>>,
}

/// `disaster_impact` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisasterImpact {
    /// Hazard.
    pub hazard: Hazard,
    /// Assessed loss.
    pub loss_yuan: f64,
    /// House damage.
    pub house_damage: HouseDamage,
    /// Share of crops lost, 0–1.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub crop_loss_ratio: Option<f64>,
}

/// `industry_project_failure` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndustryProjectFailure {
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Households that took part.
    pub household_ids: Vec<HouseholdId>,
    /// Total loss.
    pub loss_yuan: f64,
}

/// `school_dropout` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchoolDropout {
    /// Stage left.
    pub school_stage: SchoolStage,
}

/// `housing_safety` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HousingSafety {
    /// Rating A–D.
    pub rating: HousingRating,
}

/// `water_outage` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaterOutage {
    /// Households without drinking water.
    #[serde(deserialize_with = "whole_number")]
    pub households_affected: u32,
    /// Expected duration.
    pub expected_days: f64,
}

/// A decoded, validated department event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The department's id: the dedupe key.
    pub event_id: EventId,
    /// Department.
    pub source: Source,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// When the department reported it.
    pub reported_at: DateTime<Utc>,
    /// Whom it is about.
    pub subject: Subject,
    /// Content.
    pub payload: Payload,
    /// The payload as received: validated JSON, stored as is (payloads carry no
    /// resident IDs), so accepting an event does not re-serialise it. Shared, so
    /// the store binds it without a copy.
    pub payload_json: std::sync::Arc<str>,
}

impl Event {
    /// The feed kind.
    pub fn kind(&self) -> Kind {
        self.payload.kind()
    }
}

impl Payload {
    /// Reads back a payload the store kept (`serde_json::to_string` of a typed one).
    pub fn from_json(kind: Kind, json: &str) -> Result<Payload, serde_json::Error> {
        Ok(match kind {
            Kind::AssistanceApplication => {
                Payload::AssistanceApplication(serde_json::from_str(json)?)
            }
            Kind::MedicalSettlement => Payload::MedicalSettlement(serde_json::from_str(json)?),
            Kind::SeriousIllness => Payload::SeriousIllness(serde_json::from_str(json)?),
            Kind::DisabilityCertified => Payload::DisabilityCertified(serde_json::from_str(json)?),
            Kind::Unemployment => Payload::Unemployment(serde_json::from_str(json)?),
            Kind::DisasterDeclared => Payload::DisasterDeclared(serde_json::from_str(json)?),
            Kind::DisasterImpact => Payload::DisasterImpact(serde_json::from_str(json)?),
            Kind::IndustryProjectFailure => {
                Payload::IndustryProjectFailure(serde_json::from_str(json)?)
            }
            Kind::SchoolDropout => Payload::SchoolDropout(serde_json::from_str(json)?),
            Kind::HousingSafety => Payload::HousingSafety(serde_json::from_str(json)?),
            Kind::WaterOutage => Payload::WaterOutage(serde_json::from_str(json)?),
        })
    }
}
