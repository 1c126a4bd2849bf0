//! `yujing detect --counts FILE.csv`: runs every detector (EARS C1, C2, C3 as the
//! package computes it, the textbook C3, the count CUSUM, Farrington Flexible on each
//! week ending on a Sunday) over a CSV of daily counts (`date,region,kind,count`) and the
//! space–time scan over each county's villages, and writes one row per judged day and
//! method (`date,region,kind,method,observed,expected,upper_bound,alarm`; the scan's rows
//! at the cluster's region), so analysts can try methods and settings on their own
//! history. Fails on unreadable or malformed input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;

use crate::domain::ids::{RegionCode, RegionLevel};
use crate::domain::signal::Method;
use crate::pipeline::detect::scan::{Scan, Unit, zones};
use crate::pipeline::detect::series::{Day, LevelDetectors, date_of, day_from_date, run_offline};
use crate::pipeline::detect::{DetectError, DetectSettings};

/// Why `yujing detect` failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectCommandError {
    /// The input could not be read.
    #[error("cannot read {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    /// A row is malformed.
    #[error("{path} line {line}: {reason}")]
    Row {
        /// File.
        path: String,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The settings' detector parameters are invalid (the config check refuses them).
    #[error(transparent)]
    Detector(#[from] DetectError),
}

/// What `yujing detect` did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DetectSummary {
    /// Series (region, kind) read.
    pub series: usize,
    /// First and last day of the input.
    pub first_day: Option<NaiveDate>,
    /// Last day.
    pub last_day: Option<NaiveDate>,
    /// Rows written.
    pub rows: u64,
    /// Alarms per method.
    pub alarms: BTreeMap<String, u64>,
}

/// Reads `input`, judges every day of every series from the first date in the file to
/// the last with each method at the settings of the region's level (missing days count
/// 0; rows of the same date, region and kind add up), and writes the judgements to
/// `out`. The CUSUM shares the false-alarm budget among the kinds in the file, as the
/// stream shares it among its risk kinds. `alarm` is `true`, `false` or `NA` (no
/// judgement possible: package C3 on a flat baseline); bounds print `NA` for NaN and
/// `-Inf` for the textbook C3's "any count alarms".
pub fn detect(
    settings: &DetectSettings,
    input: &Path,
    out: &mut dyn Write,
) -> Result<DetectSummary, DetectCommandError> {
    let path = input.display().to_string();
    let file = crate::pipeline::sources::open_for_reading(input).map_err(|source| {
        DetectCommandError::Io {
            path: path.clone(),
            source,
        }
    })?;
    let series = read_counts(file, &path)?;
    let mut summary = DetectSummary {
        series: series.len(),
        ..DetectSummary::default()
    };
    let (Some(first), Some(last)) = (
        series.values().flat_map(|c| c.keys()).min().copied(),
        series.values().flat_map(|c| c.keys()).max().copied(),
    ) else {
        write_header(out).map_err(output_error)?;
        return Ok(summary);
    };
    summary.first_day = Some(date_of(first));
    summary.last_day = Some(date_of(last));
    let kinds: BTreeSet<&str> = series.keys().map(|(_, kind)| kind.as_str()).collect();
    let target = settings.target_arl0_days(kinds.len());
    let mut by_level = BTreeMap::new();
    write_header(out).map_err(output_error)?;
    for ((region, kind), counts) in &series {
        let level = region.level();
        let detectors =
            match by_level.entry(level) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => entry.insert(
                    LevelDetectors::new(settings, level, Method::DETECTORS, target)?,
                ),
            };
        let mut failure = None;
        run_offline(detectors, counts, first, first, last, |day, judgements| {
            if failure.is_some() {
                return;
            }
            for (i, method) in Method::DETECTORS.iter().enumerate() {
                let Some(judgement) = judgements.by_method[i] else {
                    continue;
                };
                if judgement.alarm == Some(true) {
                    *summary.alarms.entry(method.to_string()).or_default() += 1;
                }
                summary.rows += 1;
                let written = writeln!(
                    out,
                    "{},{region},{},{method},{},{},{},{}",
                    date_of(day),
                    quote(kind),
                    number(judgement.observed),
                    number(judgement.expected),
                    number(judgement.upper_bound),
                    match judgement.alarm {
                        Some(true) => "true",
                        Some(false) => "false",
                        None => "NA",
                    }
                );
                if let Err(error) = written {
                    failure = Some(error);
                    return;
                }
            }
        });
        if let Some(error) = failure {
            return Err(output_error(error));
        }
    }
    if settings.scan.enabled {
        scan_villages(settings, &series, first, last, out, &mut summary)?;
    }
    out.flush().map_err(output_error)?;
    Ok(summary)
}

/// A village of the file and its counts by day.
type VillageCounts<'a> = (RegionCode, &'a BTreeMap<Day, u32>);

/// The space–time scan over each county's villages in the file, per kind, every day with
/// a full study window: one row per day with a cluster (at its village, township or
/// county; `upper_bound` NA, `alarm` whether its recurrence interval reaches the
/// configured one). Without coordinates the zones are the hierarchy's units.
fn scan_villages(
    settings: &DetectSettings,
    series: &Series,
    first: Day,
    last: Day,
    out: &mut dyn Write,
    summary: &mut DetectSummary,
) -> Result<(), DetectCommandError> {
    let scan = Scan::try_new(&settings.scan)?;
    let study = settings.scan.study_days as Day;
    let mut groups: BTreeMap<(RegionCode, &str), Vec<VillageCounts<'_>>> = BTreeMap::new();
    for ((region, kind), counts) in series {
        if region.level() == RegionLevel::Village {
            groups
                .entry((region.county(), kind.as_str()))
                .or_default()
                .push((*region, counts));
        }
    }
    for ((county, kind), villages) in groups {
        if villages.len() < 2 {
            continue;
        }
        let mut townships: Vec<RegionCode> = villages.iter().map(|(v, _)| v.township()).collect();
        townships.dedup();
        let units: Vec<Unit> = villages
            .iter()
            .map(|(village, _)| Unit {
                position: None,
                households: 1,
                township: townships.binary_search(&village.township()).unwrap_or(0),
            })
            .collect();
        let zones = zones(&units, settings.scan.max_household_share);
        for t in first + study - 1..=last {
            let counts: Vec<Vec<u32>> = villages
                .iter()
                .map(|(_, days)| {
                    (t - study + 1..=t)
                        .map(|d| days.get(&d).copied().unwrap_or(0))
                        .collect()
                })
                .collect();
            let stream =
                (u64::from(t as u32) << 32) ^ county.to_string().parse::<u64>().unwrap_or(0);
            let Some(cluster) = scan.analyse(&zones, &counts, stream, true) else {
                continue;
            };
            let members: Vec<RegionCode> = cluster.units.iter().map(|&u| villages[u].0).collect();
            let region = match members.as_slice() {
                [one] => *one,
                [head, rest @ ..] if rest.iter().all(|v| v.township() == head.township()) => {
                    head.township()
                }
                _ => county,
            };
            let alarm = cluster.recurrence_days >= settings.scan.recurrence_days;
            if alarm {
                *summary.alarms.entry(Method::Scan.to_string()).or_default() += 1;
            }
            summary.rows += 1;
            writeln!(
                out,
                "{},{region},{},{},{},{},NA,{alarm}",
                date_of(t),
                quote(kind),
                Method::Scan,
                number(cluster.observed),
                number(cluster.expected),
            )
            .map_err(output_error)?;
        }
    }
    Ok(())
}

fn output_error(source: std::io::Error) -> DetectCommandError {
    DetectCommandError::Write(source)
}

fn write_header(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "date,region,kind,method,observed,expected,upper_bound,alarm"
    )
}

/// Numbers as R writes them: shortest round-trip digits, `NA`, `Inf`, `-Inf`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NA".into()
    } else if value == f64::INFINITY {
        "Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn quote(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

type Series = BTreeMap<(RegionCode, String), BTreeMap<Day, u32>>;

/// One row of a `date,region,kind,count` file, with the date and region read; the
/// kind and the count are left as text for the caller's own rules.
pub(crate) struct CountsRow<'a> {
    /// Day.
    pub date: NaiveDate,
    /// Region.
    pub region: RegionCode,
    /// The kind as written.
    pub kind: &'a str,
    /// The count as written.
    pub count: &'a str,
}

/// Reads a `date,region,kind,count` file (columns by name, any order, extra columns
/// ignored), handing each row to `each`; the first bad row ends it with its line
/// and reason (`each` refuses a row with a reason, for the row's line).
pub(crate) fn read_count_rows(
    reader: impl std::io::Read,
    each: &mut dyn FnMut(CountsRow<'_>) -> Result<(), String>,
) -> Result<(), (u64, String)> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv.headers().map_err(|e| (1, e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            (
                1,
                format!("missing column `{name}` (need date,region,kind,count)"),
            )
        })
    };
    let (date_at, region_at, kind_at, count_at) = (
        column("date")?,
        column("region")?,
        column("kind")?,
        column("count")?,
    );
    for (i, record) in csv.records().enumerate() {
        let line = i as u64 + 2;
        let record = record.map_err(|e| (line, e.to_string()))?;
        let field = |at: usize| record.get(at).unwrap_or("");
        let date = NaiveDate::parse_from_str(field(date_at), "%Y-%m-%d")
            .map_err(|_| (line, format!("date `{}` is not YYYY-MM-DD", field(date_at))))?;
        let region = RegionCode::parse(field(region_at))
            .map_err(|e| (line, format!("region `{}`: {e}", field(region_at))))?;
        each(CountsRow {
            date,
            region,
            kind: field(kind_at),
            count: field(count_at),
        })
        .map_err(|reason| (line, reason))?;
    }
    Ok(())
}

fn read_counts(reader: impl std::io::Read, path: &str) -> Result<Series, DetectCommandError> {
    let mut series = Series::new();
    read_count_rows(reader, &mut |row| {
        if row.kind.is_empty() {
            return Err("kind is empty".into());
        }
        let count: f64 = row
            .count
            .parse()
            .map_err(|_| format!("count `{}` is not a number", row.count))?;
        if !(count >= 0.0 && count.fract() == 0.0 && count <= f64::from(u32::MAX)) {
            return Err(format!("count `{}` is not a whole number ≥ 0", row.count));
        }
        *series
            .entry((row.region, row.kind.to_string()))
            .or_default()
            .entry(day_from_date(row.date))
            .or_insert(0) += count as u32;
        Ok(())
    })
    .map_err(|(line, reason)| DetectCommandError::Row {
        path: path.to_string(),
        line,
        reason,
    })?;
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use chrono::Datelike;

    fn run(csv: &str) -> Result<(DetectSummary, String), DetectCommandError> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("counts.csv");
        std::fs::write(&path, csv).expect("written");
        let mut out = Vec::new();
        let summary = detect(&Settings::defaults().detect, &path, &mut out)?;
        Ok((summary, String::from_utf8(out).expect("UTF-8")))
    }

    /// A spike on day 20 of a flat series: C1 (with the county's minSigma 0.5) alarms on it;
    /// the package's C3 a day later; every judged row is written.
    #[test]
    fn judges_every_day_with_every_method() {
        let mut csv = String::from("date,region,kind,count\n");
        for day in 0..30 {
            let date = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap() + chrono::Duration::days(day);
            let count = if day == 20 { 9 } else { 1 + day % 2 };
            csv.push_str(&format!("{date},522425000000,unemployment,{count}\n"));
        }
        let (summary, out) = run(&csv).expect("runs");
        assert_eq!(summary.series, 1);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "date,region,kind,method,observed,expected,upper_bound,alarm"
        );
        // C1 judges days 7..29 (23), C2 9..29 (21), both C3s 11..29 (19 each); the CUSUM
        // needs 28 days of history in a refit period: none here.
        assert_eq!(summary.rows, 23 + 21 + 19 + 19);
        assert!(out.contains("2024-03-21,522425000000,unemployment,ears_c1,9,"));
        let alarm = |method: &str, date: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(date) && l.contains(&format!(",{method},")))
                .map(|l| l.ends_with(",true"))
        };
        assert_eq!(alarm("ears_c1", "2024-03-21"), Some(true));
        assert_eq!(alarm("ears_c3", "2024-03-21"), Some(false));
        assert_eq!(alarm("ears_c3", "2024-03-22"), Some(true));
        assert_eq!(alarm("ears_c3_textbook", "2024-03-21"), Some(true));
    }

    /// Six years of twelve villages' counts: Farrington judges the last year's Sundays, and
    /// the scan finds the two-day cluster planted in one village at the end.
    #[test]
    fn farrington_weeks_and_scan_clusters_are_written() {
        let mut csv = String::from("date,region,kind,count\n");
        let start = NaiveDate::from_ymd_opt(2018, 1, 1).unwrap();
        // Three townships of four villages.
        let villages: Vec<String> = (0..12)
            .map(|v| format!("52242510{}20{}", v / 4 + 1, v % 4 + 1))
            .collect();
        let days = 6 * 365;
        for day in 0..days {
            let date = start + chrono::Duration::days(day);
            for (v, village) in villages.iter().enumerate() {
                let mut count = i64::from((day * 7 + v as i64 * 5) % 3 == 0);
                if v == 2 && day >= days - 2 {
                    count += 6;
                }
                if count > 0 {
                    csv.push_str(&format!("{date},{village},illness,{count}\n"));
                }
            }
        }
        let (summary, out) = run(&csv).expect("runs");
        let farrington: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(",farrington_flexible,"))
            .collect();
        // 313 weeks from the first Sunday; judged from week 52·5 + 3 on, per village.
        assert!(farrington.len() >= 12 * 45, "{}", farrington.len());
        for line in &farrington {
            let date = NaiveDate::parse_from_str(&line[..10], "%Y-%m-%d").unwrap();
            assert_eq!(date.weekday(), chrono::Weekday::Sun, "{line}");
        }
        let last = start + chrono::Duration::days(days - 1);
        let cluster = out
            .lines()
            .find(|l| l.starts_with(&last.to_string()) && l.contains(",scan,"))
            .expect("a scan row on the last day");
        assert!(
            cluster.starts_with(&format!("{last},522425101203,illness,scan,")),
            "{cluster}"
        );
        assert!(cluster.ends_with(",NA,true"), "{cluster}");
        assert!(summary.alarms.get("scan").copied().unwrap_or(0) >= 1);
    }

    #[test]
    fn missing_days_count_zero_and_bad_rows_are_reported() {
        let (summary, _) = run(
            "date,region,kind,count\n2024-01-01,522425101201,x,1\n2024-03-01,522425101201,x,2\n",
        )
        .expect("runs");
        assert_eq!(summary.first_day, NaiveDate::from_ymd_opt(2024, 1, 1));
        assert!(summary.rows > 0);
        let error = run("date,region,kind,count\n2024-01-01,522425101201,x,-1\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        let error = run("date,region,count\n").unwrap_err();
        assert!(error.to_string().contains("kind"), "{error}");
    }
}
