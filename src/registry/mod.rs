//! Registry import: the roster CSVs (households, members) and the regions file ->
//! validated typed rows for the store. Every bad row is reported with its line
//! number and the rest are imported; resident IDs are checked, pseudonymised and
//! masked on the spot, so the clear ID never reaches the store or a message. Files
//! saved by Chinese office software (GB18030 / GBK, Chinese column headers) are read
//! as they are ([`decoded`], [`HEADER_ALIASES`]).

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

/// How an import file's bytes are text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 when the file's start is UTF-8 (with or without a byte-order mark),
    /// GB18030 otherwise.
    #[default]
    Auto,
    /// UTF-8 (a byte-order mark is skipped).
    Utf8,
    /// GB18030, of which GBK and GB2312 are subsets: what Chinese office software
    /// saves "CSV" as.
    Gb18030,
}

/// How much of a file [`Encoding::Auto`] looks at.
const SNIFF_BYTES: usize = 64 * 1024;

/// `input` as UTF-8 text in `encoding`. With [`Encoding::Auto`], the first 64 KiB
/// decide: valid UTF-8 there (or a UTF-8 byte-order mark) reads the file as UTF-8,
/// anything else as GB18030.
pub fn decoded(
    mut input: Box<dyn Read + Send>,
    encoding: Encoding,
) -> std::io::Result<Box<dyn Read + Send>> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut input)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)?;
    let bom = head.starts_with(b"\xEF\xBB\xBF");
    let utf8 = match encoding {
        Encoding::Utf8 => true,
        Encoding::Gb18030 => false,
        Encoding::Auto => {
            bom || match std::str::from_utf8(&head) {
                Ok(_) => true,
                // A character cut at the end of the sample is still UTF-8.
                Err(error) => error.error_len().is_none() && head.len() == SNIFF_BYTES,
            }
        }
    };
    if utf8 {
        let mut head = std::io::Cursor::new(head);
        head.set_position(if bom { 3 } else { 0 });
        return Ok(Box::new(head.chain(input)));
    }
    Ok(Box::new(Gb18030Reader {
        input: Box::new(std::io::Cursor::new(head).chain(input)),
        decoder: encoding_rs::GB18030.new_decoder(),
        read: vec![0; 16 * 1024],
        text: Vec::new(),
        at: 0,
        done: false,
    }))
}

/// GB18030 bytes in, UTF-8 out (malformed bytes become U+FFFD, which the row's
/// checks then refuse).
struct Gb18030Reader {
    input: Box<dyn Read + Send>,
    decoder: encoding_rs::Decoder,
    read: Vec<u8>,
    text: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for Gb18030Reader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.text.len() {
            if self.done {
                return Ok(0);
            }
            let n = self.input.read(&mut self.read)?;
            let last = n == 0;
            let room = self.decoder.max_utf8_buffer_length(n).unwrap_or(4 * n + 16);
            self.text.resize(room, 0);
            let (_, _, written, _) =
                self.decoder
                    .decode_to_utf8(&self.read[..n], &mut self.text, last);
            self.text.truncate(written);
            self.at = 0;
            self.done = last;
        }
        let n = out.len().min(self.text.len() - self.at);
        out[..n].copy_from_slice(&self.text[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The Chinese column headers accepted beside the English ones, as office software
/// exports them (the README's registry section lists them).
pub const HEADER_ALIASES: &[(&str, &[&str])] = &[
    ("household_id", &["户编号"]),
    ("region_code", &["村代码", "行政区划代码"]),
    ("members", &["家庭人口数"]),
    ("labour_capable", &["劳动力人数", "是否劳动力"]),
    ("annual_net_income_yuan", &["家庭年纯收入"]),
    ("status", &["户类型"]),
    ("monitoring_type", &["监测对象类别"]),
    ("identified_on", &["识别日期"]),
    ("risk_eliminated_on", &["风险消除日期"]),
    ("safety_net", &["是否兜底保障"]),
    ("dibao", &["是否低保"]),
    ("tekun", &["是否特困"]),
    (
        "developmental_assistance",
        &["是否已实施开发式帮扶", "已实施开发式帮扶"],
    ),
    ("person_id", &["身份证号"]),
    ("relation", &["与户主关系"]),
    ("code", &["区划代码"]),
    ("name", &["名称"]),
    ("level", &["级别"]),
    ("parent", &["上级区划代码"]),
    ("longitude", &["经度"]),
    ("latitude", &["纬度"]),
];

fn chinese_names(name: &str) -> Option<&'static [&'static str]> {
    HEADER_ALIASES
        .iter()
        .find(|(english, _)| *english == name)
        .map(|(_, chinese)| *chinese)
}

/// Whether header cell `cell` names column `name` (in English or in Chinese, a unit
/// in brackets after it such as `（元）` allowed).
fn header_is(cell: &str, name: &str) -> bool {
    let cell = cell.trim().trim_start_matches('\u{feff}').trim();
    if cell == name {
        return true;
    }
    let bare = cell.split(['（', '(']).next().unwrap_or(cell).trim();
    chinese_names(name).is_some_and(|chinese| chinese.contains(&bare))
}

/// A CSV error's text, with what to do when the bytes are not UTF-8.
fn csv_problem(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { .. } => format!(
            "{error}: the file is not UTF-8 here; if it was saved as GBK or GB18030, give --encoding gb18030"
        ),
        _ => error.to_string(),
    }
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
        let mut missing: Vec<String> = Vec::new();
        for name in required {
            match headers.iter().position(|h| header_is(h, name)) {
                Some(i) => indexes.push(i),
                None => missing.push(match chinese_names(name) {
                    Some(chinese) => format!("{name} ({})", chinese.join(" or ")),
                    None => name.to_string(),
                }),
            }
        }
        for name in optional {
            indexes.push(
                headers
                    .iter()
                    .position(|h| header_is(h, name))
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
        .map_err(|e| ImportError::File(format!("cannot read the header: {}", csv_problem(&e))))?
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
                message: mask_text(&format!("unreadable row: {}", csv_problem(&error))),
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
        "developmental_assistance",
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
            developmental_assistance: flag(12, "developmental_assistance")?,
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
    fn developmental_assistance_is_read_when_its_column_is_there() {
        let csv = "household_id,region_code,members,labour_capable,annual_net_income_yuan,status,developmental_assistance\n\
H1,522425101201,3,2,30000,ordinary,是\n\
H2,522425101201,3,2,30000,ordinary,\n\
H3,522425101201,3,2,30000,ordinary,perhaps\n";
        let parsed = parse_households(csv.as_bytes(), None).unwrap();
        let marked: Vec<bool> = parsed
            .rows
            .iter()
            .map(|h| h.developmental_assistance)
            .collect();
        assert_eq!(marked, vec![true, false]);
        assert_eq!(parsed.errors.len(), 1);
        assert!(
            parsed.errors[0]
                .message
                .contains("developmental_assistance")
        );
        // Files without the column read as before: nothing marked.
        let csv = "户编号,村代码,家庭人口数,劳动力人数,家庭年纯收入,户类型,是否已实施开发式帮扶\n\
H1,522425101201,3,2,30000,ordinary,是\n";
        assert!(parse_households(csv.as_bytes(), None).unwrap().rows[0].developmental_assistance);
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

    fn read_all(bytes: Vec<u8>, encoding: Encoding) -> String {
        let mut text = String::new();
        decoded(Box::new(std::io::Cursor::new(bytes)), encoding)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn files_are_read_as_utf_8_or_gb18030() {
        let text = "code,name,level,parent\n522425000000,织金县,county,\n";
        let (gb, _, _) = encoding_rs::GB18030.encode(text);
        assert_ne!(gb.as_ref(), text.as_bytes());
        assert_eq!(read_all(gb.to_vec(), Encoding::Auto), text);
        assert_eq!(read_all(gb.to_vec(), Encoding::Gb18030), text);
        assert_eq!(read_all(text.as_bytes().to_vec(), Encoding::Auto), text);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(text.as_bytes());
        assert_eq!(read_all(bom.clone(), Encoding::Auto), text);
        assert_eq!(read_all(bom, Encoding::Utf8), text);
        // Larger than the sample, and cut inside a character at every size.
        let long: String = (0..20_000).map(|i| format!("{i},织金县\n")).collect();
        let (gb, _, _) = encoding_rs::GB18030.encode(&long);
        assert_eq!(read_all(gb.to_vec(), Encoding::Auto), long);
        assert_eq!(read_all(long.clone().into_bytes(), Encoding::Auto), long);
    }

    #[test]
    fn chinese_headers_are_accepted_beside_the_english_ones() {
        let csv = "户编号,村代码,家庭人口数,劳动力人数,家庭年纯收入（元）,户类型\n\
H1,522425101201,3,2,30000,ordinary\n";
        let parsed = parse_households(csv.as_bytes(), None).unwrap();
        assert_eq!(parsed.rows.len(), 1, "{:?}", parsed.errors);
        assert_eq!(parsed.rows[0].members, 3);
        let csv = "身份证号,户编号,与户主关系,是否劳动力\n11010519491231002X,H1,head,是\n";
        let known = |id: &HouseholdId| id.as_str() == "H1";
        let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let parsed =
            parse_members(csv.as_bytes(), &Pseudonymiser::new(b"k"), &known, today).unwrap();
        assert_eq!(parsed.rows.len(), 1, "{:?}", parsed.errors);
        let csv =
            "区划代码,名称,级别,上级区划代码,经度,纬度\n522425000000,织金县,county,,105.77,26.66\n";
        assert_eq!(parse_regions(csv.as_bytes()).unwrap().rows.len(), 1);
        // A header neither language knows still names what is missing, in English.
        let error = parse_regions("代码,名称\n".as_bytes()).unwrap_err();
        assert!(error.to_string().contains("code"), "{error}");
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
