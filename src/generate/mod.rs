//! A realistic synthetic county: regions, the household roster, a year (or any span)
//! of department feeds at plausible background rates, planted cases with an answer
//! key (`expected.json`: households that must be alerted, with minimum level and
//! action, and decoys that must not be), plus known numbers of bad lines, duplicates
//! and unregistered persons. Deterministic for a seed. Fails only on I/O.

pub mod rng;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::alert::{Action, Level};
use crate::domain::event::Kind;
use crate::domain::ids::check_character;
use crate::domain::registry::{HouseholdStatus, MonitoringType};
use crate::domain::signal::{Method, RiskKind};
use rng::Rng;

/// The synthetic county's code prefix (a Guizhou county, 522425).
const COUNTY: u64 = 522_425;
/// A neighbouring county: persons from here are not in the registry (unmatched).
const OTHER_COUNTY: u64 = 522_426;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Households in the county.
    pub households: usize,
    /// Days of feeds.
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// First day of the feeds.
    pub start: NaiveDate,
    /// Share of extra lines that are broken (dead letters).
    pub bad_line_ratio: f64,
    /// Share of events sent twice (duplicates).
    pub duplicate_ratio: f64,
    /// Share of person events about people not in the registry.
    pub unmatched_ratio: f64,
    /// Medical settlements per person per year.
    pub medical_rate: f64,
    /// Plant the cases (household cases and decoys, regional scenarios, the declared
    /// flood, failed projects); `false` gives a background-only county.
    pub planted: bool,
    /// Years of daily count history before `start` to write to `history.csv`
    /// (`date,region,kind,count`, for `yujing history import`); 0 writes none.
    pub history_years: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            households: 5000,
            days: 120,
            seed: 42,
            start: NaiveDate::from_ymd_opt(2024, 3, 1).expect("valid date"),
            bad_line_ratio: 0.001,
            duplicate_ratio: 0.002,
            unmatched_ratio: 0.002,
            medical_rate: 4.0,
            planted: true,
            history_years: 0,
        }
    }
}

/// One planted household the pipeline must alert.
#[derive(Debug, Clone, Serialize)]
pub struct MustAlert {
    /// Household.
    pub household_id: String,
    /// The planted case.
    pub case: String,
    /// Lowest acceptable level.
    pub min_level: Level,
    /// Expected action.
    pub action: Action,
}

/// One decoy household the pipeline must not alert.
#[derive(Debug, Clone, Serialize)]
pub struct MustNotAlert {
    /// Household.
    pub household_id: String,
    /// The decoy case.
    pub case: String,
}

/// The answer key, written as `expected.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerKey {
    /// Seed used.
    pub seed: u64,
    /// Households generated.
    pub households: usize,
    /// Persons generated.
    pub persons: usize,
    /// Days of feeds.
    pub days: u32,
    /// First day.
    pub start: NaiveDate,
    /// Lines written to the feed files (all of them).
    pub lines: u64,
    /// Broken lines among them.
    pub bad_lines: u64,
    /// Events sent a second time.
    pub duplicates: u64,
    /// Valid events about persons not in the registry.
    pub unmatched: u64,
    /// Feed files, relative to the output folder.
    pub feeds: Vec<String>,
    /// Planted households that must be alerted.
    pub must_alert: Vec<MustAlert>,
    /// Decoys that must not be.
    pub must_not_alert: Vec<MustNotAlert>,
    /// Planted regional scenarios that must be signalled.
    pub regional: Vec<RegionalCase>,
}

/// One planted regional scenario the regional stage must signal.
#[derive(Debug, Clone, Serialize)]
pub struct RegionalCase {
    /// The scenario (`factory_closure`, `dibao_surge`, `flood`, `industry_project_failure`).
    pub scenario: String,
    /// The region that must be signalled.
    pub region_code: String,
    /// Its level (`village`, `township`, `county`).
    pub level: String,
    /// The risk kind of the signal.
    pub kind: RiskKind,
    /// The method expected to fire first.
    pub method: Method,
    /// First day of the scenario (CST).
    pub onset: NaiveDate,
    /// Households involved (for a declared disaster: registry households of the region).
    pub households: usize,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Writing failed.
    #[error("cannot write {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

struct Person {
    id: String,
    household: usize,
    relation: &'static str,
    labour_capable: bool,
    age: u32,
}

struct HouseholdRow {
    id: String,
    village: u64,
    members: Vec<usize>,
    income_per_capita: f64,
    status: HouseholdStatus,
    monitoring_type: Option<MonitoringType>,
    identified_on: Option<NaiveDate>,
    risk_eliminated_on: Option<NaiveDate>,
    dibao: bool,
    tekun: bool,
    /// Planted or decoy households get only their case's events.
    reserved: bool,
}

/// One feed line, with the time it is sorted by.
struct Line {
    reported_at: DateTime<Utc>,
    text: Vec<u8>,
}

struct County {
    rng: Rng,
    options: GenerateOptions,
    households: Vec<HouseholdRow>,
    persons: Vec<Person>,
    villages: Vec<u64>,
    townships: Vec<u64>,
    feeds: HashMap<&'static str, Vec<Line>>,
    sequences: HashMap<&'static str, u64>,
    used_ids: HashMap<String, ()>,
    events: u64,
    lines: u64,
}

fn source_prefix(source: &str) -> &'static str {
    match source {
        "civil_affairs" => "MZ",
        "medical_insurance" => "YB",
        "health" => "WJ",
        "disabled_persons_federation" => "CL",
        "human_resources" => "RS",
        "emergency_management" => "YJ",
        "agriculture" => "NY",
        "education" => "JY",
        "housing" => "ZJ",
        _ => "SL",
    }
}

fn time_text(time: DateTime<Utc>) -> String {
    (time + Duration::hours(8))
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S+08:00")
        .to_string()
}

fn money(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl County {
    fn day_time(&mut self, day: u32) -> DateTime<Utc> {
        let date = self.options.start + Duration::days(i64::from(day));
        let seconds = self.rng.range(8 * 3600, 18 * 3600) as i64;
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
            + Duration::seconds(seconds)
            - Duration::hours(8)
    }

    fn random_day(&mut self) -> u32 {
        self.rng.range(0, u64::from(self.options.days.max(1))) as u32
    }

    /// A day well inside the span, for planted cases.
    fn planted_day(&mut self) -> u32 {
        let days = u64::from(self.options.days.max(1));
        self.rng.range(days / 5, (days * 4 / 5).max(days / 5 + 1)) as u32
    }

    fn resident_id(&mut self, prefix: u64, age: u32) -> String {
        let base = self.options.start - Duration::days(i64::from(age) * 365);
        loop {
            let birth = base - Duration::days(self.rng.range(0, 365) as i64);
            let sequence = self.rng.range(0, 1000);
            let first17 = format!("{prefix:06}{}{sequence:03}", birth.format("%Y%m%d"));
            let id = format!("{first17}{}", check_character(first17.as_bytes()) as char);
            if self.used_ids.insert(id.clone(), ()).is_none() {
                return id;
            }
        }
    }

    fn push(&mut self, source: &'static str, occurred_at: DateTime<Utc>, body: Value) -> String {
        let sequence = self.sequences.entry(source).or_insert(0);
        *sequence += 1;
        let sequence = *sequence;
        let delay = Duration::minutes(self.rng.range(10, 3 * 24 * 60) as i64);
        let reported_at = occurred_at + delay;
        // Like departments' own numbering: the report time, then a sequence, so a
        // feed in report order has ascending ids.
        let event_id = format!(
            "{}-{}-{:06}",
            source_prefix(source),
            (reported_at + Duration::hours(8)).format("%Y%m%d%H%M%S"),
            sequence % 1_000_000
        );
        let mut event = json!({
            "event_id": event_id,
            "source": source,
            "occurred_at": time_text(occurred_at),
            "reported_at": time_text(reported_at),
        });
        if let (Value::Object(target), Value::Object(extra)) = (&mut event, body) {
            target.extend(extra);
        }
        let text = serde_json::to_vec(&event).expect("JSON values serialise");
        let duplicate = self.rng.chance(self.options.duplicate_ratio);
        let feed = self.feeds.entry(source).or_default();
        feed.push(Line {
            reported_at,
            text: text.clone(),
        });
        self.events += 1;
        if duplicate {
            feed.push(Line {
                reported_at: reported_at + Duration::hours(6),
                text,
            });
            *self.sequences.entry("duplicates").or_insert(0) += 1;
        }
        event_id
    }

    fn person_event(&mut self, person: usize, kind: Kind, day: u32, payload: Value) -> String {
        let occurred_at = self.day_time(day);
        let id = self.persons[person].id.clone();
        self.push(
            kind.source().as_str(),
            occurred_at,
            json!({"kind": kind.as_str(), "person_id": id, "payload": payload}),
        )
    }

    fn household_event(&mut self, household: usize, kind: Kind, day: u32, payload: Value) {
        let occurred_at = self.day_time(day);
        let id = self.households[household].id.clone();
        self.push(
            kind.source().as_str(),
            occurred_at,
            json!({"kind": kind.as_str(), "household_id": id, "payload": payload}),
        );
    }

    fn region_event(&mut self, region: u64, kind: Kind, day: u32, payload: Value) {
        let occurred_at = self.day_time(day);
        self.push(
            kind.source().as_str(),
            occurred_at,
            json!({"kind": kind.as_str(), "region_code": format!("{region:012}"), "payload": payload}),
        );
    }

    fn settlement(&mut self, out_of_pocket: f64, serious: bool, group: &str) -> Value {
        let reimbursed = money(out_of_pocket * self.rng.between(0.8, 2.5));
        let out_of_pocket = money(out_of_pocket);
        json!({
            "total_cost_yuan": money(reimbursed + out_of_pocket),
            "reimbursed_yuan": reimbursed,
            "out_of_pocket_yuan": out_of_pocket,
            "serious_illness": serious,
            "diagnosis_group": group,
        })
    }
}

fn build_county(options: &GenerateOptions) -> County {
    let rng = Rng::new(options.seed);
    let mut layout = rng.fork("layout");
    let per_village = 250;
    let village_count = options.households.div_ceil(per_village).max(1);
    let township_count = village_count.div_ceil(12).max(1);
    let townships: Vec<u64> = (0..township_count as u64)
        .map(|t| (COUNTY * 1000 + 101 + t) * 1000)
        .collect();
    let villages: Vec<u64> = (0..village_count as u64)
        .map(|v| townships[(v % township_count as u64) as usize] + 201 + v / township_count as u64)
        .collect();
    let mut county = County {
        rng: rng.fork("events"),
        options: options.clone(),
        households: Vec::with_capacity(options.households),
        persons: Vec::with_capacity(options.households * 3),
        villages: villages.clone(),
        townships,
        feeds: HashMap::new(),
        sequences: HashMap::new(),
        used_ids: HashMap::new(),
        events: 0,
        lines: 0,
    };
    let member_weights = [
        (1, 0.08),
        (2, 0.20),
        (3, 0.27),
        (4, 0.25),
        (5, 0.13),
        (6, 0.07),
    ];
    for index in 0..options.households {
        let village = villages[index * village_count / options.households.max(1)];
        let draw = layout.unit();
        let status = if draw < 0.25 {
            HouseholdStatus::Lifted
        } else if draw < 0.30 {
            HouseholdStatus::Monitored
        } else {
            HouseholdStatus::Ordinary
        };
        let income_per_capita = match status {
            HouseholdStatus::Lifted => layout.lognormal(15_000.0, 0.3),
            HouseholdStatus::Monitored => layout.lognormal(10_500.0, 0.25),
            HouseholdStatus::Ordinary => layout.lognormal(24_000.0, 0.4),
        };
        let mut size_draw = layout.unit();
        let mut size = 3;
        for (members, weight) in member_weights {
            if size_draw < weight {
                size = members;
                break;
            }
            size_draw -= weight;
        }
        let (monitoring_type, identified_on, risk_eliminated_on) =
            if status == HouseholdStatus::Monitored {
                let kind = *layout.pick(&[
                    MonitoringType::Marginal,
                    MonitoringType::Marginal,
                    MonitoringType::UnstableLifted,
                    MonitoringType::SuddenHardship,
                ]);
                let identified = NaiveDate::from_ymd_opt(2021, 1, 1).expect("valid date")
                    + Duration::days(layout.range(0, 3 * 365) as i64);
                let eliminated = layout.chance(0.4).then(|| identified + Duration::days(365));
                (Some(kind), Some(identified), eliminated)
            } else {
                (None, None, None)
            };
        let dibao = match status {
            HouseholdStatus::Monitored => layout.chance(0.3),
            HouseholdStatus::Lifted => layout.chance(0.1),
            HouseholdStatus::Ordinary => layout.chance(0.01),
        };
        let tekun = !dibao && layout.chance(0.005);
        let household = county.households.len();
        county.households.push(HouseholdRow {
            id: format!("{village:012}-{index:06}"),
            village,
            members: Vec::new(),
            income_per_capita,
            status,
            monitoring_type,
            identified_on,
            risk_eliminated_on,
            dibao,
            tekun,
            reserved: false,
        });
        let head_age = layout.range(28, 76) as u32;
        for member in 0..size {
            let (relation, age) = match member {
                0 => ("head", head_age),
                1 => (
                    "spouse",
                    head_age.saturating_sub(layout.range(0, 6) as u32).max(20),
                ),
                2 | 3 if head_age < 60 => ("child", layout.range(1, 26) as u32),
                2 | 3 => ("child", layout.range(25, 45) as u32),
                4 if head_age < 55 => ("parent", head_age + 25),
                4 => ("grandchild", layout.range(1, 15) as u32),
                _ => ("other", layout.range(10, 70) as u32),
            };
            let labour_capable = (16..=65).contains(&age) && layout.chance(0.9);
            let id = county.resident_id(COUNTY, age);
            county.persons.push(Person {
                id,
                household,
                relation,
                labour_capable,
                age,
            });
            let person = county.persons.len() - 1;
            county.households[household].members.push(person);
        }
    }
    county
}

/// Rewrites a household's roster facts for a planted case.
fn shape(
    county: &mut County,
    household: usize,
    status: HouseholdStatus,
    income_per_capita: f64,
    earners: usize,
) {
    let row = &mut county.households[household];
    row.reserved = true;
    row.status = status;
    row.income_per_capita = income_per_capita;
    row.dibao = false;
    row.tekun = false;
    if status == HouseholdStatus::Monitored {
        row.monitoring_type = Some(MonitoringType::Marginal);
        row.identified_on = NaiveDate::from_ymd_opt(2022, 5, 1);
    } else {
        row.monitoring_type = None;
        row.identified_on = None;
        row.risk_eliminated_on = None;
    }
    let members = row.members.clone();
    for (i, &person) in members.iter().enumerate() {
        county.persons[person].labour_capable = i < earners;
        if i < earners {
            county.persons[person].age = county.persons[person].age.clamp(20, 60);
        }
    }
}

/// Unreserved households with exactly `size` members (cases depend on the income
/// per member), in roster order; households with more members if none is left.
fn candidates(county: &County, size: usize) -> impl Iterator<Item = usize> + '_ {
    let free = move |h: &usize| !county.households[*h].reserved;
    let exact = (0..county.households.len())
        .filter(free)
        .filter(move |&h| county.households[h].members.len() == size);
    let larger = (0..county.households.len())
        .filter(free)
        .filter(move |&h| county.households[h].members.len() > size);
    exact.chain(larger)
}

fn plant(county: &mut County) -> (Vec<MustAlert>, Vec<MustNotAlert>, Vec<RegionalCase>) {
    use HouseholdStatus::*;
    let mut must = Vec::new();
    let mut must_not = Vec::new();
    let mut regional = Vec::new();
    if !county.options.planted {
        return (must, must_not, regional);
    }
    let reps = (county.households.len() / 1000).max(1);
    let take = |county: &mut County, size: usize| -> Option<usize> {
        let household = candidates(county, size).next()?;
        county.households[household].reserved = true;
        Some(household)
    };
    /// A planted case: name, status, income per capita, members, labour-capable
    /// members, expected (level, action) or `None` for a decoy, and its events.
    type Case = (
        &'static str,
        HouseholdStatus,
        f64,
        usize,
        usize,
        Option<(Level, Action)>,
        fn(&mut County, usize),
    );
    let cases: Vec<Case> = vec![
        (
            "dibao_application",
            Ordinary,
            9_000.0,
            3,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                let head = c.households[h].members[0];
                c.person_event(
                    head,
                    Kind::AssistanceApplication,
                    day,
                    json!({"program": "dibao", "decision": "applied"}),
                );
            },
        ),
        (
            "dibao_while_receiving",
            Lifted,
            8_800.0,
            2,
            1,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                c.households[h].dibao = true;
                let day = c.planted_day();
                let head = c.households[h].members[0];
                c.person_event(
                    head,
                    Kind::AssistanceApplication,
                    day,
                    json!({"program": "dibao", "decision": "applied"}),
                );
            },
        ),
        (
            "tekun_approved",
            Ordinary,
            7_000.0,
            1,
            0,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                let head = c.households[h].members[0];
                c.person_event(
                    head,
                    Kind::AssistanceApplication,
                    day,
                    json!({"program": "tekun", "decision": "approved", "monthly_amount_yuan": 780}),
                );
            },
        ),
        (
            "medical_lifted_out_of_pocket",
            Lifted,
            15_000.0,
            3,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let patient = c.households[h].members[1];
                for offset in 0..3 {
                    let day = c.planted_day().saturating_sub(offset * 3);
                    let payload = c.settlement(2_000.0, false, "circulatory");
                    c.person_event(patient, Kind::MedicalSettlement, day, payload);
                }
            },
        ),
        (
            "medical_below_line",
            Ordinary,
            9_000.0,
            3,
            2,
            Some((Level::Red, Action::Identify)),
            |c, h| {
                let patient = c.households[h].members[0];
                let day = c.planted_day();
                let payload = c.settlement(3_000.0, false, "digestive");
                c.person_event(patient, Kind::MedicalSettlement, day, payload);
            },
        ),
        (
            "serious_illness",
            Ordinary,
            30_000.0,
            3,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let patient = c.households[h].members[1];
                let day = c.planted_day();
                let diagnosed = (c.options.start + Duration::days(i64::from(day))).to_string();
                c.person_event(
                    patient,
                    Kind::SeriousIllness,
                    day,
                    json!({"disease_group": "malignant_tumour", "diagnosed_on": diagnosed}),
                );
            },
        ),
        (
            "severe_disability",
            Ordinary,
            20_000.0,
            3,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let person = c.households[h].members[2];
                let day = c.planted_day();
                c.person_event(
                    person,
                    Kind::DisabilityCertified,
                    day,
                    json!({"grade": 1, "category": "physical"}),
                );
            },
        ),
        (
            "disabled_only_earner",
            Ordinary,
            18_000.0,
            3,
            1,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let earner = c.households[h].members[0];
                let day = c.planted_day();
                c.person_event(
                    earner,
                    Kind::DisabilityCertified,
                    day,
                    json!({"grade": 2, "category": "visual"}),
                );
            },
        ),
        (
            "unemployed_only_earner",
            Ordinary,
            16_000.0,
            3,
            1,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let earner = c.households[h].members[0];
                let day = c.planted_day();
                c.person_event(earner, Kind::Unemployment, day, json!({"reason": "laid_off", "employer_id": "E522425-0999", "industry": "construction", "previous_monthly_income_yuan": 2_500}));
            },
        ),
        (
            "unemployment_below_line",
            Ordinary,
            9_000.0,
            4,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let earner = c.households[h].members[1];
                let day = c.planted_day();
                c.person_event(
                    earner,
                    Kind::Unemployment,
                    day,
                    json!({"reason": "contract_ended", "previous_monthly_income_yuan": 3_000}),
                );
            },
        ),
        (
            "unemployment",
            Ordinary,
            30_000.0,
            4,
            2,
            Some((Level::Yellow, Action::Identify)),
            |c, h| {
                let earner = c.households[h].members[1];
                let day = c.planted_day();
                c.person_event(
                    earner,
                    Kind::Unemployment,
                    day,
                    json!({"reason": "returned_migrant"}),
                );
            },
        ),
        (
            "house_collapsed",
            Lifted,
            14_000.0,
            3,
            2,
            Some((Level::Red, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                c.household_event(h, Kind::DisasterImpact, day, json!({"hazard": "landslide", "loss_yuan": 60_000, "house_damage": "collapsed"}));
            },
        ),
        (
            "disaster_heavy_loss",
            Ordinary,
            20_000.0,
            3,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                c.household_event(h, Kind::DisasterImpact, day, json!({"hazard": "hail", "loss_yuan": 24_000, "house_damage": "damaged", "crop_loss_ratio": 0.8}));
            },
        ),
        (
            "school_dropout",
            Lifted,
            13_000.0,
            4,
            2,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let child = c.households[h].members[2];
                let day = c.planted_day();
                c.person_event(
                    child,
                    Kind::SchoolDropout,
                    day,
                    json!({"school_stage": "junior_secondary"}),
                );
            },
        ),
        (
            "housing_d",
            Ordinary,
            12_000.0,
            2,
            1,
            Some((Level::Red, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                c.household_event(h, Kind::HousingSafety, day, json!({"rating": "D"}));
            },
        ),
        (
            "housing_c",
            Ordinary,
            12_000.0,
            2,
            1,
            Some((Level::Orange, Action::Identify)),
            |c, h| {
                let day = c.planted_day();
                c.household_event(h, Kind::HousingSafety, day, json!({"rating": "C"}));
            },
        ),
        (
            "illness_and_job_loss",
            Ordinary,
            25_000.0,
            4,
            2,
            Some((Level::Red, Action::Identify)),
            |c, h| {
                let patient = c.households[h].members[2];
                let earner = c.households[h].members[1];
                let day = c.planted_day();
                let diagnosed = (c.options.start + Duration::days(i64::from(day))).to_string();
                c.person_event(
                    patient,
                    Kind::SeriousIllness,
                    day,
                    json!({"disease_group": "leukaemia", "diagnosed_on": diagnosed}),
                );
                c.person_event(
                    earner,
                    Kind::Unemployment,
                    day + 2,
                    json!({"reason": "laid_off"}),
                );
            },
        ),
        (
            "monitored_review",
            Monitored,
            9_500.0,
            3,
            2,
            Some((Level::Orange, Action::ReviewAssistance)),
            |c, h| {
                let head = c.households[h].members[0];
                let day = c.planted_day();
                c.person_event(
                    head,
                    Kind::AssistanceApplication,
                    day,
                    json!({"program": "dibao", "decision": "approved", "monthly_amount_yuan": 650}),
                );
            },
        ),
        (
            "eliminated_recheck",
            Monitored,
            11_000.0,
            3,
            2,
            Some((Level::Orange, Action::Recheck)),
            |c, h| {
                c.households[h].risk_eliminated_on = NaiveDate::from_ymd_opt(2023, 9, 1);
                let patient = c.households[h].members[0];
                let day = c.planted_day();
                let payload = c.settlement(1_500.0, true, "circulatory");
                c.person_event(patient, Kind::MedicalSettlement, day, payload);
            },
        ),
        (
            "moderate_disability",
            Ordinary,
            26_000.0,
            3,
            2,
            Some((Level::Blue, Action::Identify)),
            |c, h| {
                let person = c.households[h].members[2];
                let day = c.planted_day();
                c.person_event(
                    person,
                    Kind::DisabilityCertified,
                    day,
                    json!({"grade": 3, "category": "hearing"}),
                );
            },
        ),
        // Decoys: just below every threshold.
        (
            "small_medical_only",
            Ordinary,
            30_000.0,
            3,
            2,
            None,
            |c, h| {
                let patient = c.households[h].members[0];
                for _ in 0..3 {
                    let day = c.planted_day();
                    let payload = c.settlement(100.0, false, "respiratory");
                    c.person_event(patient, Kind::MedicalSettlement, day, payload);
                }
            },
        ),
        (
            "out_of_pocket_just_below",
            Ordinary,
            40_000.0,
            3,
            2,
            None,
            |c, h| {
                let patient = c.households[h].members[0];
                let day = c.planted_day();
                let first = c.settlement(10_000.0, false, "circulatory");
                c.person_event(patient, Kind::MedicalSettlement, day, first);
                let second = c.settlement(9_999.99, false, "circulatory");
                c.person_event(patient, Kind::MedicalSettlement, day + 1, second);
            },
        ),
        (
            "lifted_out_of_pocket_just_below",
            Lifted,
            20_000.0,
            3,
            2,
            None,
            |c, h| {
                let patient = c.households[h].members[1];
                let day = c.planted_day();
                let payload = c.settlement(4_999.0, false, "digestive");
                c.person_event(patient, Kind::MedicalSettlement, day, payload);
            },
        ),
        ("housing_b", Ordinary, 15_000.0, 2, 1, None, |c, h| {
            let day = c.planted_day();
            c.household_event(h, Kind::HousingSafety, day, json!({"rating": "B"}));
        }),
        (
            "temporary_assistance_rejected",
            Ordinary,
            16_000.0,
            3,
            2,
            None,
            |c, h| {
                let head = c.households[h].members[0];
                let day = c.planted_day();
                c.person_event(
                    head,
                    Kind::AssistanceApplication,
                    day,
                    json!({"program": "temporary", "decision": "rejected"}),
                );
            },
        ),
        (
            "disaster_without_damage",
            Ordinary,
            18_000.0,
            3,
            2,
            None,
            |c, h| {
                let day = c.planted_day();
                c.household_event(
                    h,
                    Kind::DisasterImpact,
                    day,
                    json!({"hazard": "flood", "loss_yuan": 0, "house_damage": "none"}),
                );
            },
        ),
    ];
    for _ in 0..reps {
        for (name, status, income, size, earners, expected, plant_case) in &cases {
            let Some(household) = take(county, *size) else {
                continue;
            };
            shape(county, household, *status, *income, *earners);
            plant_case(county, household);
            let household_id = county.households[household].id.clone();
            match expected {
                Some((min_level, action)) => must.push(MustAlert {
                    household_id,
                    case: name.to_string(),
                    min_level: *min_level,
                    action: *action,
                }),
                None => must_not.push(MustNotAlert {
                    household_id,
                    case: name.to_string(),
                }),
            }
        }
        // A failed industry project across four households of one village.
        let members: Vec<usize> = candidates(county, 1).take(4).collect();
        if members.len() == 4 {
            for &household in &members {
                shape(county, household, Lifted, 14_000.0, 2);
            }
            let village = county.households[members[0]].village;
            let ids: Vec<String> = members
                .iter()
                .map(|&h| county.households[h].id.clone())
                .collect();
            let day = county.planted_day();
            county.region_event(
                village,
                Kind::IndustryProjectFailure,
                day,
                json!({"project_id": format!("P-{village}-{day}"), "project_name": "精品水果种植基地", "household_ids": ids, "loss_yuan": 420_000}),
            );
            regional.push(RegionalCase {
                scenario: "industry_project_failure".into(),
                region_code: format!("{village:012}"),
                level: "village".into(),
                kind: RiskKind::IndustryFailure,
                method: Method::IndustryProjectFailure,
                onset: county.options.start + Duration::days(i64::from(day)),
                households: ids.len(),
            });
            for id in ids {
                must.push(MustAlert {
                    household_id: id,
                    case: "industry_project_failure".into(),
                    min_level: Level::Orange,
                    action: Action::Identify,
                });
            }
        }
    }
    (must, must_not, regional)
}

fn background(county: &mut County) -> Vec<RegionalCase> {
    let years = f64::from(county.options.days) / 365.0;
    let groups = [
        "respiratory",
        "digestive",
        "circulatory",
        "injury",
        "chronic",
        "maternal",
    ];
    let employers: Vec<String> = (1..=200).map(|i| format!("E522425-{i:04}")).collect();
    for household in 0..county.households.len() {
        if county.households[household].reserved {
            continue;
        }
        let members = county.households[household].members.clone();
        for &person in &members {
            let visits = county.rng.poisson(county.options.medical_rate * years);
            for _ in 0..visits {
                let day = county.random_day();
                let group = *county.rng.pick(&groups);
                let out_of_pocket = county.rng.lognormal(120.0, 1.0).min(50_000.0);
                let serious = county.rng.chance(0.0005);
                let payload = county.settlement(out_of_pocket, serious, group);
                county.person_event(person, Kind::MedicalSettlement, day, payload);
            }
            if county.rng.chance(0.003 * years) {
                let day = county.random_day();
                let diagnosed = (county.options.start + Duration::days(i64::from(day))).to_string();
                county.person_event(
                    person,
                    Kind::SeriousIllness,
                    day,
                    json!({"disease_group": "malignant_tumour", "diagnosed_on": diagnosed}),
                );
            }
            if county.rng.chance(0.004 * years) {
                let day = county.random_day();
                let grade = *county.rng.pick(&[1, 2, 2, 3, 3, 3, 4, 4, 4, 4]);
                let category =
                    *county
                        .rng
                        .pick(&["physical", "visual", "hearing", "intellectual", "mental"]);
                county.person_event(
                    person,
                    Kind::DisabilityCertified,
                    day,
                    json!({"grade": grade, "category": category}),
                );
            }
            if county.persons[person].labour_capable && county.rng.chance(0.015 * years) {
                let day = county.random_day();
                let reason = *county.rng.pick(&[
                    "laid_off",
                    "contract_ended",
                    "business_closed",
                    "returned_migrant",
                ]);
                let employer = county.rng.pick(&employers).clone();
                let income = money(county.rng.lognormal(3_200.0, 0.3));
                county.person_event(person, Kind::Unemployment, day, json!({"reason": reason, "employer_id": employer, "industry": "manufacturing", "previous_monthly_income_yuan": income}));
            }
            if (7..=15).contains(&county.persons[person].age) && county.rng.chance(0.002 * years) {
                let day = county.random_day();
                county.person_event(
                    person,
                    Kind::SchoolDropout,
                    day,
                    json!({"school_stage": "junior_secondary"}),
                );
            }
        }
        let head = members[0];
        if county.rng.chance(0.015 * years) {
            let day = county.random_day();
            let decision = *county
                .rng
                .pick(&["applied", "applied", "approved", "rejected"]);
            county.person_event(
                head,
                Kind::AssistanceApplication,
                day,
                json!({"program": "dibao", "decision": decision}),
            );
        }
        if county.rng.chance(0.02 * years) {
            let day = county.random_day();
            let decision = *county.rng.pick(&["applied", "approved", "rejected"]);
            county.person_event(
                head,
                Kind::AssistanceApplication,
                day,
                json!({"program": "temporary", "decision": decision}),
            );
        }
        if county.rng.chance(0.08 * years) {
            let day = county.random_day();
            let draw = county.rng.unit();
            let rating = if draw < 0.70 {
                "A"
            } else if draw < 0.95 {
                "B"
            } else if draw < 0.99 {
                "C"
            } else {
                "D"
            };
            county.household_event(
                household,
                Kind::HousingSafety,
                day,
                json!({"rating": rating}),
            );
        }
    }
    let mut regional = Vec::new();
    if !county.options.planted {
        background_water(county);
        return regional;
    }
    // One flood declared for two or three villages, with household impacts.
    let flooded = (county.villages.len() / 4)
        .clamp(1, 3)
        .max(county.villages.len().min(2));
    let flood_villages: Vec<u64> = county.villages.iter().copied().take(flooded).collect();
    let flood_day = county.options.days / 2;
    let county_code = COUNTY * 1_000_000;
    for &village in &flood_villages {
        regional.push(RegionalCase {
            scenario: "flood".into(),
            region_code: format!("{village:012}"),
            level: "village".into(),
            kind: RiskKind::Disaster,
            method: Method::DisasterDeclared,
            onset: county.options.start + Duration::days(i64::from(flood_day)),
            households: county
                .households
                .iter()
                .filter(|h| h.village == village)
                .count(),
        });
    }
    county.region_event(
        county_code,
        Kind::DisasterDeclared,
        flood_day,
        json!({"hazard": "flood", "level": "III", "region_codes": flood_villages.iter().map(|v| format!("{v:012}")).collect::<Vec<_>>()}),
    );
    for household in 0..county.households.len() {
        let row = &county.households[household];
        if row.reserved || !flood_villages.contains(&row.village) || !county.rng.chance(0.3) {
            continue;
        }
        let damage_draw = county.rng.unit();
        let damage = if damage_draw < 0.8 {
            "none"
        } else if damage_draw < 0.97 {
            "damaged"
        } else {
            "collapsed"
        };
        let loss = money(county.rng.lognormal(3_000.0, 1.0).min(200_000.0));
        let day = flood_day + county.rng.range(0, 4) as u32;
        county.household_event(
            household,
            Kind::DisasterImpact,
            day,
            json!({"hazard": "flood", "loss_yuan": loss, "house_damage": damage}),
        );
    }
    background_water(county);
    regional
}

/// Two drinking-water outages in random villages.
fn background_water(county: &mut County) {
    for _ in 0..2 {
        let village = *county.rng.pick(&county.villages.clone());
        let day = county.random_day();
        let affected = county.rng.range(20, 200);
        county.region_event(
            village,
            Kind::WaterOutage,
            day,
            json!({"households_affected": affected, "expected_days": 3}),
        );
    }
}

/// Regional scenarios after the background: a factory closure (layoffs from one
/// employer across one township's villages over three days) and a surge of 低保
/// applications in a township over six days, late in the span so the detectors have
/// history.
fn regional_scenarios(county: &mut County) -> Vec<RegionalCase> {
    let mut cases = Vec::new();
    if !county.options.planted || county.options.days < 40 {
        return cases;
    }
    let mut pick = county.rng.fork("regional");
    let townships = county.townships.clone();
    let factory_township = *pick.pick(&townships);
    let surge_township = townships
        .iter()
        .copied()
        .find(|&t| t != factory_township)
        .unwrap_or(factory_township);
    let start = county.options.start;
    let days = county.options.days;

    // Factory closure: 12 workers of one employer, 4 a day.
    let onset = days * 7 / 10;
    let workers = free_households(county, factory_township, 12, true);
    for (i, &household) in workers.iter().enumerate() {
        let worker = county.households[household]
            .members
            .iter()
            .copied()
            .find(|&p| county.persons[p].labour_capable)
            .unwrap_or(county.households[household].members[0]);
        let income = money(pick.lognormal(3_800.0, 0.2));
        county.person_event(
            worker,
            Kind::Unemployment,
            onset + (i % 3) as u32,
            json!({"reason": "business_closed", "employer_id": "E522425-F001", "industry": "manufacturing", "previous_monthly_income_yuan": income}),
        );
    }
    cases.push(RegionalCase {
        scenario: "factory_closure".into(),
        region_code: format!("{factory_township:012}"),
        level: "township".into(),
        kind: RiskKind::Unemployment,
        method: Method::MassLayoff,
        onset: start + Duration::days(i64::from(onset)),
        households: workers.len(),
    });

    // A surge of 低保 applications: 18 households over six days, 3 a day.
    let onset = days * 3 / 4;
    let applicants = free_households(county, surge_township, 18, false);
    for (i, &household) in applicants.iter().enumerate() {
        let head = county.households[household].members[0];
        county.person_event(
            head,
            Kind::AssistanceApplication,
            onset + (i / 3) as u32,
            json!({"program": "dibao", "decision": "applied"}),
        );
    }
    cases.push(RegionalCase {
        scenario: "dibao_surge".into(),
        region_code: format!("{surge_township:012}"),
        level: "township".into(),
        kind: RiskKind::LowIncome,
        method: Method::Cusum,
        onset: start + Duration::days(i64::from(onset)),
        households: applicants.len(),
    });
    cases
}

/// Up to `count` unreserved households of `township`, spread over its villages in turn
/// (with a labour-capable member when `workers`), reserved from now on.
fn free_households(county: &mut County, township: u64, count: usize, workers: bool) -> Vec<usize> {
    let mut by_village: Vec<Vec<usize>> = county
        .villages
        .iter()
        .filter(|&&v| v / 1000 * 1000 == township)
        .map(|&v| {
            (0..county.households.len())
                .filter(|&h| {
                    let row = &county.households[h];
                    row.village == v
                        && !row.reserved
                        && (!workers
                            || row
                                .members
                                .iter()
                                .any(|&p| county.persons[p].labour_capable))
                })
                .collect()
        })
        .collect();
    let mut chosen = Vec::new();
    let mut round = 0;
    while chosen.len() < count && by_village.iter().any(|list| list.len() > round) {
        for list in &mut by_village {
            if chosen.len() < count
                && let Some(&household) = list.get(round)
            {
                chosen.push(household);
            }
        }
        round += 1;
    }
    for &household in &chosen {
        county.households[household].reserved = true;
    }
    chosen
}

/// Events about persons of the neighbouring county (not in the registry).
fn unmatched(county: &mut County) -> u64 {
    let count = (county.events as f64 * county.options.unmatched_ratio).round() as u64;
    for _ in 0..count {
        let age = county.rng.range(20, 70) as u32;
        let id = county.resident_id(OTHER_COUNTY, age);
        let day = county.random_day();
        let occurred_at = county.day_time(day);
        let payload = county.settlement(300.0, false, "respiratory");
        county.push(
            "medical_insurance",
            occurred_at,
            json!({"kind": "medical_settlement", "person_id": id, "payload": payload}),
        );
    }
    count
}

/// Broken lines, one of each kind in turn, spread over the feeds.
fn bad_lines(county: &mut County) -> u64 {
    let count = (county.events as f64 * county.options.bad_line_ratio).ceil() as u64;
    let sources: Vec<&'static str> = {
        let mut names: Vec<&'static str> = county.feeds.keys().copied().collect();
        names.sort_unstable();
        names
    };
    for i in 0..count {
        let source = sources[(i as usize) % sources.len()];
        let day = county.random_day();
        let at = county.day_time(day);
        let id = county.persons[county.rng.range(0, county.persons.len() as u64) as usize]
            .id
            .clone();
        let mut wrong_digit = id.clone().into_bytes();
        wrong_digit[17] = if wrong_digit[17] == b'0' { b'1' } else { b'0' };
        let wrong_digit = String::from_utf8(wrong_digit).expect("ASCII");
        let text: Vec<u8> = match i % 6 {
            0 => format!(r#"{{"event_id":"BAD-{i}","source":"{source}","kind":"#).into_bytes(),
            1 => format!(
                r#"{{"event_id":"BAD-{i}","source":"education","kind":"school_dropout","occurred_at":"{t}","reported_at":"{t}","person_id":"{wrong_digit}","payload":{{"school_stage":"primary"}}}}"#,
                t = time_text(at)
            )
            .into_bytes(),
            2 => format!(
                r#"{{"event_id":"BAD-{i}","source":"water","kind":"weather_report","occurred_at":"{t}","reported_at":"{t}","region_code":"522425000000","payload":{{}}}}"#,
                t = time_text(at)
            )
            .into_bytes(),
            3 => format!(
                r#"{{"event_id":"BAD-{i}","source":"disabled_persons_federation","kind":"disability_certified","occurred_at":"{t}","reported_at":"{t}","person_id":"{id}","payload":{{"grade":"two","category":"physical"}}}}"#,
                t = time_text(at)
            )
            .into_bytes(),
            4 => format!(
                r#"{{"event_id":"BAD-{i}","source":"housing","kind":"housing_safety","occurred_at":"2099-01-01T00:00:00+08:00","reported_at":"2099-01-02T00:00:00+08:00","household_id":"{h}","payload":{{"rating":"C"}}}}"#,
                h = county.households[0].id
            )
            .into_bytes(),
            _ => {
                let mut bytes = format!(r#"{{"event_id":"BAD-{i}","note":""#).into_bytes();
                bytes.extend_from_slice(b"\xff\xfe\xfd");
                bytes.extend_from_slice(b"\"}");
                bytes
            }
        };
        county.feeds.entry(source).or_default().push(Line {
            reported_at: at,
            text,
        });
    }
    count
}

/// Generates a county into `out`: `regions.csv`, `households.csv`, `members.csv`,
/// `feeds/<source>.ndjson` and `expected.json`.
pub fn generate(out: &Path, options: &GenerateOptions) -> Result<AnswerKey, GenerateError> {
    let mut county = build_county(options);
    let (must_alert, must_not_alert, mut regional) = plant(&mut county);
    regional.extend(background(&mut county));
    regional.extend(regional_scenarios(&mut county));
    let unmatched = unmatched(&mut county);
    let bad_lines = bad_lines(&mut county);
    let duplicates = county.sequences.get("duplicates").copied().unwrap_or(0);

    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| GenerateError::Io {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(out.join("feeds")).map_err(io(out))?;
    write_regions(&county, &out.join("regions.csv")).map_err(io(&out.join("regions.csv")))?;
    write_households(&county, &out.join("households.csv"))
        .map_err(io(&out.join("households.csv")))?;
    write_members(&county, &out.join("members.csv")).map_err(io(&out.join("members.csv")))?;
    let mut feeds: Vec<(&'static str, Vec<Line>)> =
        std::mem::take(&mut county.feeds).into_iter().collect();
    feeds.sort_by_key(|(source, _)| *source);
    let mut feed_names = Vec::new();
    for (source, mut lines) in feeds {
        lines.sort_by_key(|line| line.reported_at);
        let name = format!("feeds/{source}.ndjson");
        let path = out.join(&name);
        let mut writer = BufWriter::new(File::create(&path).map_err(io(&path))?);
        for line in &lines {
            writer.write_all(&line.text).map_err(io(&path))?;
            writer.write_all(b"\n").map_err(io(&path))?;
            county.lines += 1;
        }
        writer.flush().map_err(io(&path))?;
        feed_names.push(name);
    }
    let key = AnswerKey {
        seed: options.seed,
        households: county.households.len(),
        persons: county.persons.len(),
        days: options.days,
        start: options.start,
        lines: county.lines,
        bad_lines,
        duplicates,
        unmatched,
        feeds: feed_names,
        must_alert,
        must_not_alert,
        regional,
    };
    if options.history_years > 0 {
        let path = out.join("history.csv");
        write_history(&county, &path).map_err(io(&path))?;
    }
    let path = out.join("expected.json");
    let text = serde_json::to_string_pretty(&key).expect("answer key serialises");
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(key)
}

/// Background risk events per registry household per year, by kind, for the history.
const HISTORY_RATES: [(RiskKind, f64); 7] = [
    (RiskKind::Unemployment, 0.05),
    (RiskKind::LowIncome, 0.02),
    (RiskKind::Illness, 0.04),
    (RiskKind::Disability, 0.005),
    (RiskKind::Disaster, 0.01),
    (RiskKind::Housing, 0.005),
    (RiskKind::Dropout, 0.003),
];

/// `history.csv`: `history_years` × 365 days of daily counts before the feeds start, for
/// every village, township and the county and every kind with a series. Not simulated
/// feeds: each village and kind draws Poisson counts around its households × the kind's
/// yearly rate, with a ±30 % annual season and fewer registrations at weekends;
/// townships, the county and `any_risk` are the sums (households are assumed to have one
/// risk kind a day). A fork of the seed's generator, so the feeds do not change with it.
fn write_history(county: &County, path: &Path) -> std::io::Result<()> {
    let mut rng = county.rng.fork("history");
    let mut households: HashMap<u64, usize> = HashMap::new();
    for household in &county.households {
        *households.entry(household.village).or_insert(0) += 1;
    }
    let days = 365 * i64::from(county.options.history_years);
    let first = county.options.start - Duration::days(days);
    let county_code = COUNTY * 1_000_000;
    let mut writer = BufWriter::new(File::create(path)?);
    writeln!(writer, "date,region,kind,count")?;
    // Weekday multipliers, Monday first.
    const WEEKDAY: [f64; 7] = [1.3, 1.2, 1.1, 1.1, 1.0, 0.7, 0.6];
    let phases: Vec<f64> = HISTORY_RATES
        .iter()
        .map(|_| rng.between(0.0, std::f64::consts::TAU))
        .collect();
    for offset in 0..days {
        let date = first + Duration::days(offset);
        let weekday = WEEKDAY[date.weekday().num_days_from_monday() as usize];
        let year_angle = std::f64::consts::TAU * f64::from(date.ordinal0()) / 365.0;
        let mut townships: HashMap<u64, [u64; 8]> = HashMap::new();
        let mut whole = [0u64; 8];
        for &village in &county.villages {
            let size = households.get(&village).copied().unwrap_or(0) as f64;
            let mut row = [0u64; 8];
            for (k, &(_, rate)) in HISTORY_RATES.iter().enumerate() {
                let season = 1.0 + 0.3 * (year_angle + phases[k]).sin();
                row[k] = rng.poisson(size * rate / 365.0 * season * weekday);
            }
            row[7] = row[..7].iter().sum();
            let township = townships.entry(village / 1000 * 1000).or_insert([0; 8]);
            for k in 0..8 {
                township[k] += row[k];
                whole[k] += row[k];
            }
            write_history_rows(&mut writer, date, village, &row)?;
        }
        for &township in &county.townships {
            if let Some(row) = townships.get(&township) {
                write_history_rows(&mut writer, date, township, row)?;
            }
        }
        write_history_rows(&mut writer, date, county_code, &whole)?;
    }
    writer.flush()
}

/// One day's rows of a region (zero counts left out: a missing day counts 0).
fn write_history_rows(
    writer: &mut impl Write,
    date: NaiveDate,
    region: u64,
    row: &[u64; 8],
) -> std::io::Result<()> {
    for (k, &count) in row.iter().enumerate() {
        if count > 0 {
            let kind = HISTORY_RATES
                .get(k)
                .map_or(RiskKind::AnyRisk, |&(kind, _)| kind);
            writeln!(writer, "{date},{region:012},{kind},{count}")?;
        }
    }
    Ok(())
}

fn write_regions(county: &County, path: &Path) -> std::io::Result<()> {
    let mut writer = BufWriter::new(File::create(path)?);
    writeln!(writer, "code,name,level,parent,longitude,latitude")?;
    let (lon, lat) = (105.77, 26.66);
    writeln!(
        writer,
        "{:012},示范县,county,{:012},{lon},{lat}",
        COUNTY * 1_000_000,
        COUNTY / 100 * 100_000_000
    )?;
    let township_count = county.townships.len();
    for (t, township) in county.townships.iter().enumerate() {
        let angle = std::f64::consts::TAU * t as f64 / township_count as f64;
        writeln!(
            writer,
            "{township:012},第{}镇,township,{:012},{:.4},{:.4}",
            t + 1,
            COUNTY * 1_000_000,
            lon + 0.2 * angle.cos(),
            lat + 0.2 * angle.sin()
        )?;
    }
    for (v, village) in county.villages.iter().enumerate() {
        let township = village / 1000 * 1000;
        let t = county
            .townships
            .iter()
            .position(|&x| x == township)
            .unwrap_or(0);
        let angle = std::f64::consts::TAU * t as f64 / township_count as f64;
        let jitter = (v as f64 * 2.399).sin() * 0.04;
        writeln!(
            writer,
            "{village:012},第{}村,village,{township:012},{:.4},{:.4}",
            v + 1,
            lon + 0.2 * angle.cos() + jitter,
            lat + 0.2 * angle.sin() - jitter
        )?;
    }
    writer.flush()
}

fn write_households(county: &County, path: &Path) -> std::io::Result<()> {
    let mut writer = BufWriter::new(File::create(path)?);
    writeln!(
        writer,
        "household_id,region_code,members,labour_capable,annual_net_income_yuan,status,monitoring_type,identified_on,risk_eliminated_on,safety_net,dibao,tekun"
    )?;
    for row in &county.households {
        let members = row.members.len();
        let earners = row
            .members
            .iter()
            .filter(|&&p| county.persons[p].labour_capable)
            .count();
        let opt = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        writeln!(
            writer,
            "{},{:012},{},{},{:.2},{},{},{},{},{},{},{}",
            row.id,
            row.village,
            members,
            earners,
            row.income_per_capita * members as f64,
            row.status,
            row.monitoring_type.map(|m| m.as_str()).unwrap_or_default(),
            opt(row.identified_on),
            opt(row.risk_eliminated_on),
            row.dibao || row.tekun,
            row.dibao,
            row.tekun
        )?;
    }
    writer.flush()
}

fn write_members(county: &County, path: &Path) -> std::io::Result<()> {
    let mut writer = BufWriter::new(File::create(path)?);
    writeln!(writer, "person_id,household_id,relation,labour_capable")?;
    for person in &county.persons {
        writeln!(
            writer,
            "{},{},{},{}",
            person.id,
            county.households[person.household].id,
            person.relation,
            person.labour_capable
        )?;
    }
    writer.flush()
}
