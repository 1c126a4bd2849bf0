//! Registry import: the roster CSVs (households, members) and the regions file ->
//! validated typed rows for the store. Every bad row is reported with its line
//! number and the rest are imported; resident IDs are checked, pseudonymised and
//! masked on the spot, so the clear ID never reaches the store or a message.

use std::collections::HashSet;
use std::io::Read;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::domain::dead_letter::mask_text;
use crate::domain::ids::{HouseholdId, Pseudonymiser, RegionCode, RegionLevel, ResidentId};
use crate::domain::registry::{
    Household, HouseholdStatus, Member, MonitoringType, Region, Registry, Relation,
};

/// A row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong, naming the column; never a clear resident ID.
    pub message: String,
}

/// What an import read.
#[derive(Debug, Default)]
pub struct Parsed<T> {
    /// Good rows.
    pub rows: Vec<T>,
    /// Bad rows.
    pub errors: Vec<RowError>,
}

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Unreadable CSV or missing header column.
    #[error("{0}")]
    File(String),
}

/// The columns a CSV must have, found by name in its header.
struct Columns {
    indexes: Vec<usize>,
}

impl Columns {
    fn find(
        headers: &csv::StringRecord,
        required: &[&str],
        optional: &[&str],
    ) -> Result<Columns, ImportError> {
        let mut indexes = Vec::new();
        let mut missing = Vec::new();
        for name in required {
            match headers.iter().position(|h| h.trim() == *name) {
                Some(i) => indexes.push(i),
                None => missing.push(*name),
            }
        }
        for name in optional {
            indexes.push(
                headers
                    .iter()
                    .position(|h| h.trim() == *name)
                    .unwrap_or(usize::MAX),
            );
        }
        if missing.is_empty() {
            Ok(Columns { indexes })
        } else {
            Err(ImportError::File(format!(
                "missing column(s): {}",
                missing.join(", ")
            )))
        }
    }

    fn get<'r>(&self, record: &'r csv::StringRecord, column: usize) -> &'r str {
        record.get(self.indexes[column]).unwrap_or("").trim()
    }
}

fn reader(input: impl Read) -> csv::Reader<impl Read> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(input)
}

/// Parses a boolean cell: true/false, 1/0, yes/no, 是/否.
fn boolean(text: &str, column: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "是" => Ok(true),
        "false" | "0" | "no" | "n" | "否" => Ok(false),
        _ => Err(format!("{column}: expected true or false, got {text:?}")),
    }
}

fn optional_date(text: &str, column: &str) -> Result<Option<NaiveDate>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::from_str(text)
        .map(Some)
        .map_err(|_| format!("{column}: expected a date YYYY-MM-DD, got {text:?}"))
}

fn number<T: FromStr>(text: &str, column: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{column}: expected a number, got {text:?}"))
}

fn rows<T>(
    input: impl Read,
    required: &[&str],
    optional: &[&str],
    mut parse: impl FnMut(&Columns, &csv::StringRecord) -> Result<T, String>,
) -> Result<Parsed<T>, ImportError> {
    let mut reader = reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::File(format!("cannot read the header: {e}")))?
        .clone();
    let columns = Columns::find(&headers, required, optional)?;
    let mut parsed = Parsed {
        rows: Vec::new(),
        errors: Vec::new(),
    };
    for (index, record) in reader.records().enumerate() {
        let line = index as u64 + 2;
        match record {
            Ok(record) => {
                if record.iter().all(|cell| cell.trim().is_empty()) {
                    continue;
                }
                let line = record.position().map_or(line, |p| p.line());
                match parse(&columns, &record) {
                    Ok(row) => parsed.rows.push(row),
                    // Messages may quote a cell: resident IDs in them are masked.
                    Err(message) => parsed.errors.push(RowError {
                        line,
                        message: mask_text(&message),
                    }),
                }
            }
            Err(error) => parsed.errors.push(RowError {
                line: error.position().map_or(line, |p| p.line()),
                message: mask_text(&format!("unreadable row: {error}")),
            }),
        }
    }
    Ok(parsed)
}

/// Parses the households file. With `known_village` (the regions table holds
/// villages), a household whose village it denies is a bad row.
pub fn parse_households(
    input: impl Read,
    known_village: Option<&dyn Fn(&RegionCode) -> bool>,
) -> Result<Parsed<Household>, ImportError> {
    const REQUIRED: &[&str] = &[
        "household_id",
        "region_code",
        "members",
        "labour_capable",
        "annual_net_income_yuan",
        "status",
    ];
    const OPTIONAL: &[&str] = &[
        "monitoring_type",
        "identified_on",
        "risk_eliminated_on",
        "safety_net",
        "dibao",
        "tekun",
    ];
    let mut seen = HashSet::new();
    rows(input, REQUIRED, OPTIONAL, |c, r| {
        let household_id =
            HouseholdId::parse(c.get(r, 0)).map_err(|e| format!("household_id: {e}"))?;
        if !seen.insert(household_id.clone()) {
            return Err(format!(
                "household_id {household_id} appears twice in the file"
            ));
        }
        let region_code =
            RegionCode::parse(c.get(r, 1)).map_err(|e| format!("region_code: {e}"))?;
        if region_code.level() != RegionLevel::Village {
            return Err(format!(
                "region_code: {region_code} is a {} code; households belong to a village",
                region_code.level().as_str()
            ));
        }
        if let Some(known) = known_village
            && !known(&region_code)
        {
            return Err(format!(
                "region_code: village {region_code} is not in the regions table \
                 (add it to the regions file and run `yujing regions import` first)"
            ));
        }
        let members: u32 = number(c.get(r, 2), "members")?;
        let labour_capable: u32 = number(c.get(r, 3), "labour_capable")?;
        if members == 0 {
            return Err("members: must be at least 1".into());
        }
        if labour_capable > members {
            return Err(format!(
                "labour_capable: {labour_capable} is more than the {members} members"
            ));
        }
        let income: f64 = number(c.get(r, 4), "annual_net_income_yuan")?;
        if !income.is_finite() || income.abs() > 1e10 {
            return Err("annual_net_income_yuan: out of range".into());
        }
        let status = HouseholdStatus::parse(c.get(r, 5)).ok_or_else(|| {
            format!(
                "status: expected ordinary, lifted or monitored, got {:?}",
                c.get(r, 5)
            )
        })?;
        let monitoring_type = match c.get(r, 6) {
            "" => None,
            text => Some(MonitoringType::parse(text).ok_or_else(|| {
                format!("monitoring_type: expected unstable_lifted, marginal or sudden_hardship, got {text:?}")
            })?),
        };
        let identified_on = optional_date(c.get(r, 7), "identified_on")?;
        let risk_eliminated_on = optional_date(c.get(r, 8), "risk_eliminated_on")?;
        if status == HouseholdStatus::Monitored
            && (monitoring_type.is_none() || identified_on.is_none())
        {
            return Err("a monitored household needs monitoring_type and identified_on".into());
        }
        let flag = |column: usize, name: &str| -> Result<bool, String> {
            match c.get(r, column) {
                "" => Ok(false),
                text => boolean(text, name),
            }
        };
        Ok(Household {
            household_id,
            region_code,
            members,
            labour_capable,
            annual_net_income_yuan: income,
            status,
            monitoring_type,
            identified_on,
            risk_eliminated_on,
            safety_net: flag(9, "safety_net")?,
            dibao: flag(10, "dibao")?,
            tekun: flag(11, "tekun")?,
        })
    })
}

/// The in-memory registry of a roster's CSVs, without a store (the core's tests and
/// benchmarks): the rows that parse, members of unknown households left out.
pub fn registry_from_csv(
    households: impl Read,
    members: impl Read,
    regions: Vec<Region>,
    pseudonymiser: &Pseudonymiser,
) -> Result<Registry, ImportError> {
    let households = parse_households(households, None)?.rows;
    let known: HashSet<&str> = households.iter().map(|h| h.household_id.as_str()).collect();
    let today = chrono::Utc::now().date_naive();
    let members = parse_members(
        members,
        pseudonymiser,
        &|id| known.contains(id.as_str()),
        today,
    )?
    .rows;
    let (registry, _) = Registry::build(
        households,
        members
            .into_iter()
            .map(|m| (m.person_key, m.household_id, m.labour_capable)),
        regions,
    );
    Ok(registry)
}

/// Parses the members file, pseudonymising each resident ID. A member whose
/// household `household_known` denies is a bad row, and so is a resident ID whose birth date lies after `today` or before 1900 is a bad row
/// (a mistyped ID that happens to pass the check digit).
pub fn parse_members(
    input: impl Read,
    pseudonymiser: &Pseudonymiser,
    household_known: &dyn Fn(&HouseholdId) -> bool,
    today: NaiveDate,
) -> Result<Parsed<Member>, ImportError> {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default();
    const REQUIRED: &[&str] = &["person_id", "household_id", "relation", "labour_capable"];
    let mut seen = HashSet::new();
    rows(input, REQUIRED, &[], |c, r| {
        // The message must not repeat the clear ID: say what is wrong, not what it was.
        let id = ResidentId::parse(c.get(r, 0)).map_err(|e| format!("person_id: {e}"))?;
        // Neither the date nor the clear ID is repeated: the masked ID hides the date.
        let birth = id.birth_date();
        if birth > today {
            return Err(format!(
                "person_id {}: the birth date (digits 7-14) lies in the future",
                id.masked()
            ));
        }
        if birth < earliest {
            return Err(format!(
                "person_id {}: the birth date (digits 7-14) lies before 1900",
                id.masked()
            ));
        }
        let person_key = pseudonymiser.key(&id);
        if !seen.insert(person_key) {
            return Err(format!(
                "person_id {} appears twice in the file",
                id.masked()
            ));
        }
        let household_id =
            HouseholdId::parse(c.get(r, 1)).map_err(|e| format!("household_id: {e}"))?;
        if !household_known(&household_id) {
            return Err(format!(
                "household_id: {household_id} is not in the registry (person {})",
                id.masked()
            ));
        }
        let relation = Relation::parse(c.get(r, 2)).ok_or_else(|| {
            format!(
                "relation: expected head, spouse, child, parent, grandchild, sibling or other, got {:?}",
                c.get(r, 2)
            )
        })?;
        Ok(Member {
            person_key,
            person_masked: id.masked().to_string(),
            household_id,
            relation,
            labour_capable: boolean(c.get(r, 3), "labour_capable")?,
        })
    })
}

/// Parses the regions file.
pub fn parse_regions(input: impl Read) -> Result<Parsed<Region>, ImportError> {
    const REQUIRED: &[&str] = &["code", "name", "level", "parent"];
    const OPTIONAL: &[&str] = &["longitude", "latitude"];
    rows(input, REQUIRED, OPTIONAL, |c, r| {
        let code = RegionCode::parse(c.get(r, 0)).map_err(|e| format!("code: {e}"))?;
        let name = c.get(r, 1);
        if name.is_empty() || name.chars().count() > 100 {
            return Err("name: must be 1-100 characters".into());
        }
        let level = RegionLevel::parse(c.get(r, 2)).ok_or_else(|| {
            format!(
                "level: expected province, city, county, township or village, got {:?}",
                c.get(r, 2)
            )
        })?;
        if code.level() != level {
            return Err(format!(
                "level: code {code} is a {} code, not a {}",
                code.level().as_str(),
                level.as_str()
            ));
        }
        let parent = match c.get(r, 3) {
            "" => None,
            text => {
                let parent = RegionCode::parse(text).map_err(|e| format!("parent: {e}"))?;
                if !code.is_within(parent) || parent == code {
                    return Err(format!("parent: {code} does not lie within {parent}"));
                }
                Some(parent)
            }
        };
        let coordinate = |column: usize, name: &str, bound: f64| -> Result<Option<f64>, String> {
            match c.get(r, column) {
                "" => Ok(None),
                text => {
                    let value: f64 = number(text, name)?;
                    if value.abs() > bound {
                        Err(format!("{name}: must be within ±{bound}"))
                    } else {
                        Ok(Some(value))
                    }
                }
            }
        };
        Ok(Region {
            code,
            name: name.to_string(),
            level,
            parent,
            longitude: coordinate(4, "longitude", 180.0)?,
            latitude: coordinate(5, "latitude", 90.0)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn households_report_bad_rows_with_line_numbers() {
        let csv = "household_id,region_code,members,labour_capable,annual_net_income_yuan,status,monitoring_type,identified_on,risk_eliminated_on,safety_net,dibao,tekun\n\
H1,522425101201,3,2,30000,ordinary,,,,false,false,false\n\
H2,522425101000,3,2,30000,ordinary,,,,false,false,false\n\
H3,522425101201,3,4,30000,ordinary,,,,false,false,false\n\
H4,522425101201,3,1,9000,monitored,marginal,2023-04-01,,false,true,false\n\
H5,522425101201,2,1,9000,monitored,,,,false,false,false\n\
H1,522425101201,3,2,30000,ordinary,,,,false,false,false\n";
        let parsed = parse_households(csv.as_bytes(), None).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        let lines: Vec<u64> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 6, 7]);
        assert!(parsed.errors[0].message.contains("village"));
    }

    #[test]
    fn members_never_echo_the_clear_id() {
        let csv = "person_id,household_id,relation,labour_capable\n\
11010519491231002X,H1,head,true\n\
110105194912310021,H1,spouse,true\n\
11010519491231002X,H1,child,false\n";
        let csv = format!("{csv}110105194912310038,H9,head,true\n");
        let known = |id: &HouseholdId| id.as_str() == "H1";
        let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let parsed =
            parse_members(csv.as_bytes(), &Pseudonymiser::new(b"k"), &known, today).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.errors.len(), 3);
        assert!(parsed.errors[2].message.contains("not in the registry"));
        assert_eq!(parsed.rows[0].person_masked, "110105********002X");
        for error in &parsed.errors {
            assert!(
                !error.message.contains("11010519491231002"),
                "{}",
                error.message
            );
        }
        assert_eq!(parsed.errors[0].line, 3);
        assert!(parsed.errors[0].message.contains("check digit"));
        assert!(parsed.errors[1].message.contains("twice"));
    }

    /// An ID with a valid check digit for `first17`.
    fn id_with(first17: &str) -> String {
        let check = crate::domain::ids::check_character(first17.as_bytes()) as char;
        format!("{first17}{check}")
    }

    #[test]
    fn members_born_in_the_future_or_before_1900_are_refused_with_their_line() {
        let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let csv = format!(
            "person_id,household_id,relation,labour_capable\n{},H1,head,true\n{},H1,spouse,true\n{},H1,child,false\n{},H1,parent,false\n{},H1,other,false\n",
            id_with("11010520240501001"), // born today: accepted
            id_with("11010520240502002"), // tomorrow
            id_with("11010519000101003"), // 1 January 1900: accepted
            id_with("11010518991231004"), // the day before
            id_with("11010520990101005"), // far ahead
        );
        let known = |id: &HouseholdId| id.as_str() == "H1";
        let parsed =
            parse_members(csv.as_bytes(), &Pseudonymiser::new(b"k"), &known, today).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        let lines: Vec<u64> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 5, 6]);
        assert!(
            parsed.errors[0].message.contains("future"),
            "{:?}",
            parsed.errors
        );
        assert!(parsed.errors[1].message.contains("before 1900"));
        assert!(parsed.errors[2].message.contains("future"));
        for error in &parsed.errors {
            assert!(!error.message.contains("2024"), "{}", error.message);
            assert!(!error.message.contains("1899"), "{}", error.message);
        }
    }

    #[test]
    fn households_of_an_unknown_village_are_refused_when_villages_are_known() {
        let csv = "household_id,region_code,members,labour_capable,annual_net_income_yuan,status\n\
H1,522425101201,3,2,30000,ordinary\n\
H2,522425101299,3,2,30000,ordinary\n";
        let known = |code: &RegionCode| code.to_string() == "522425101201";
        let parsed = parse_households(csv.as_bytes(), Some(&known)).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].line, 3);
        assert!(
            parsed.errors[0]
                .message
                .contains("522425101299 is not in the regions table"),
            "{}",
            parsed.errors[0].message
        );
        // Without a regions table, villages are not checked.
        assert_eq!(
            parse_households(csv.as_bytes(), None).unwrap().rows.len(),
            2
        );
    }

    #[test]
    fn regions_check_level_and_parent() {
        let csv = "code,name,level,parent,longitude,latitude\n\
522425000000,织金县,county,,105.77,26.66\n\
522425101000,城关镇,township,522425000000,,\n\
522425101201,一村,township,522425101000,,\n\
522425101202,二村,village,522426101000,,\n";
        let parsed = parse_regions(csv.as_bytes()).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.errors.len(), 2);
    }

    #[test]
    fn a_missing_column_fails_the_file() {
        let error = parse_regions("code,name\n".as_bytes()).unwrap_err();
        assert!(error.to_string().contains("level"));
    }
}
