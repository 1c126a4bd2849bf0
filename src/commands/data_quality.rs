//! `yujing data-quality`: the registry as stored -> the standing sweeps and the
//! consistency rules of [`crate::sweeps`] over every household, for one China
//! Standard Time day: counts by rule and by village, and the findings; the store's
//! events -> the department rules (subjects not on the roster, reporting delays).
//! Nothing is stored; fails only when the store cannot be read.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;
use serde::Serialize;

use super::CommandError;
use crate::app::App;
use crate::config::Settings;
use crate::domain::account::Scope;
use crate::domain::department_quality::{
    ReportingDelay, UnmatchedCounts, UnmatchedSubject, count_unmatched, late_limit_ms,
};
use crate::domain::ids::RegionCode;
use crate::domain::quality_finding::{QualityFinding, RecordOutcome};
use crate::domain::registry::Registry;
use crate::store::{Store, StoreError};
use crate::sweeps::quality::{LATE_REPORTING, UNMATCHED_PERSONS};
use crate::sweeps::{self, FindingRecord, RuleKind};

/// One rule's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleCount {
    /// Rule id.
    pub rule: &'static str,
    /// Sweep or consistency rule.
    pub kind: RuleKind,
    /// What it finds.
    pub title: &'static str,
    /// Households found.
    pub households: u64,
}

/// One village's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VillageCount {
    /// Village code.
    pub region_code: RegionCode,
    /// Its name, when the regions table has it.
    pub name: Option<String>,
    /// Findings per rule id (rules with none left out).
    pub by_rule: BTreeMap<&'static str, u64>,
}

/// What `yujing data-quality` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataQualityReport {
    /// The day judged.
    pub today: NaiveDate,
    /// Households evaluated.
    pub households: usize,
    /// Every rule, in report order, with its count.
    pub by_rule: Vec<RuleCount>,
    /// Villages with findings, by code.
    pub by_village: Vec<VillageCount>,
    /// Every finding, household by household.
    pub findings: Vec<FindingRecord>,
    /// `quality.unmatched_persons`: per department, the subjects not on the roster.
    pub unmatched: Vec<UnmatchedSubject>,
    /// Those counted by department, ID issuing area and village.
    pub unmatched_counts: UnmatchedCounts,
    /// `quality.late_reporting`: every department's delays (a finding where `late > 0`).
    pub reporting_delays: Vec<ReportingDelay>,
    /// Late events placed in a village, per village and department.
    pub late_by_village: BTreeMap<RegionCode, BTreeMap<&'static str, u64>>,
}

impl DataQualityReport {
    /// The departments with late events: the `quality.late_reporting` findings.
    pub fn late_departments(&self) -> impl Iterator<Item = &ReportingDelay> {
        self.reporting_delays.iter().filter(|d| d.late > 0)
    }
}

/// A department finding as one NDJSON line: the rule id, then its figures.
#[derive(Serialize)]
struct DepartmentLine<'a, T: Serialize> {
    rule: &'static str,
    kind: RuleKind,
    #[serde(flatten)]
    figures: &'a T,
    reason: String,
}

/// Loads the registry from the store and runs the full pass for `today`, and the
/// department rules over the stored events.
pub async fn data_quality(app: &App, today: NaiveDate) -> Result<DataQualityReport, CommandError> {
    Ok(report(&app.store, &app.settings, None, today).await?)
}

/// The consistency findings (`quality.*`) of `report`, as the store records them.
pub fn quality_findings(report: &DataQualityReport) -> Vec<QualityFinding> {
    let fields = |list: &[&str]| list.iter().map(|f| f.to_string()).collect();
    let households = report
        .findings
        .iter()
        .filter(|f| f.kind == RuleKind::Quality)
        .map(|f| QualityFinding {
            rule: f.rule.to_string(),
            subject: f.household_id.to_string(),
            region_code: Some(f.region_code),
            source: None,
            fields: fields(f.fields),
            reason: f.reason.clone(),
        });
    let unmatched = report.unmatched.iter().map(|u| QualityFinding {
        rule: UNMATCHED_PERSONS.id.to_string(),
        subject: u.subject_key(),
        region_code: u.region_code,
        source: Some(u.source),
        fields: fields(UNMATCHED_PERSONS.fields),
        reason: u.reason(),
    });
    let late = report.late_departments().map(|d| QualityFinding {
        rule: LATE_REPORTING.id.to_string(),
        subject: d.source.as_str().to_string(),
        region_code: None,
        source: Some(d.source),
        fields: fields(LATE_REPORTING.fields),
        reason: d.reason(),
    });
    households.chain(unmatched).chain(late).collect()
}

/// Records the consistency findings of a full-pass `report` (see
/// [`Store::record_findings`]): new ones open, corrected ones resolve.
pub async fn record(app: &App, report: &DataQualityReport) -> Result<RecordOutcome, CommandError> {
    Ok(app
        .store
        .record_findings(report.today, &quality_findings(report))
        .await?)
}

/// The report over the households and events of `scope` (`None`: every one): what
/// `yujing data-quality` prints and `GET /api/data-quality` answers.
pub async fn report(
    store: &Store,
    settings: &Settings,
    scope: Option<Scope>,
    today: NaiveDate,
) -> Result<DataQualityReport, StoreError> {
    let registry = load_registry(store, scope).await?;
    let findings = sweeps::full_pass(&registry, today, settings);
    let counts = sweeps::count(&registry, &findings);
    let by_rule = sweeps::rules()
        .map(|rule| RuleCount {
            rule: rule.id,
            kind: rule.kind,
            title: rule.title,
            households: counts.by_rule.get(rule.id).copied().unwrap_or(0),
        })
        .collect();
    let by_village = counts
        .by_village
        .into_iter()
        .map(|(region_code, by_rule)| VillageCount {
            region_code,
            name: registry.region(region_code).map(|r| r.name.clone()),
            by_rule,
        })
        .collect();
    let unmatched = store.unmatched_subjects(scope).await?;
    let limit_days = settings.sweeps.late_report_days;
    let limit = late_limit_ms(limit_days);
    let reporting_delays = store
        .reporting_delays(scope, limit)
        .await?
        .iter()
        .map(|row| ReportingDelay::new(row, limit_days))
        .collect();
    let mut late_by_village: BTreeMap<RegionCode, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (village, source, events) in store.late_events_by_village(scope, limit).await? {
        late_by_village
            .entry(village)
            .or_default()
            .insert(source.as_str(), events);
    }
    Ok(DataQualityReport {
        today,
        households: registry.household_count(),
        by_rule,
        by_village,
        findings: findings.iter().map(|f| f.record(&registry)).collect(),
        unmatched_counts: count_unmatched(&unmatched),
        unmatched,
        reporting_delays,
        late_by_village,
    })
}

/// The registry as stored, with the households of `scope` only (all for `None`):
/// members of other households are skipped as they stream by.
async fn load_registry(store: &Store, scope: Option<Scope>) -> Result<Registry, StoreError> {
    let stored = store.load_households_and_regions().await?;
    let households = stored
        .households
        .into_iter()
        .filter(|h| scope.is_none_or(|scope| scope.contains(h.region_code)))
        .collect();
    let mut registry = Registry::with_households(households, stored.regions);
    let mut skipped = 0usize;
    store
        .for_each_member(&mut |key, household, labour_capable| {
            skipped += usize::from(!registry.add_member(key, household, labour_capable));
            Ok(())
        })
        .await?;
    if scope.is_none() && skipped > 0 {
        tracing::warn!(
            orphans = skipped,
            "registry members whose household is not in the registry were skipped"
        );
    }
    Ok(registry)
}

/// Writes the findings as NDJSON, one per line.
pub fn write_ndjson(report: &DataQualityReport, out: &mut dyn Write) -> Result<(), CommandError> {
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        for finding in &report.findings {
            serde_json::to_writer(&mut *out, finding)?;
            out.write_all(b"\n")?;
        }
        for subject in &report.unmatched {
            serde_json::to_writer(
                &mut *out,
                &DepartmentLine {
                    rule: UNMATCHED_PERSONS.id,
                    kind: UNMATCHED_PERSONS.kind,
                    figures: subject,
                    reason: subject.reason(),
                },
            )?;
            out.write_all(b"\n")?;
        }
        for delay in report.late_departments() {
            serde_json::to_writer(
                &mut *out,
                &DepartmentLine {
                    rule: LATE_REPORTING.id,
                    kind: LATE_REPORTING.kind,
                    figures: delay,
                    reason: delay.reason(),
                },
            )?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write(out).map_err(|source| CommandError::Write {
        path: "stdout".into(),
        source,
    })
}

/// Writes the report as text: counts by rule, by village, then the list.
pub fn write_text(report: &DataQualityReport, out: &mut dyn Write) -> Result<(), CommandError> {
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "sweeps and data quality on {} (China Standard Time) over {} households: {} findings",
            report.today,
            report.households,
            report.findings.len()
        )?;
        writeln!(out, "\nby rule")?;
        for line in &report.by_rule {
            writeln!(
                out,
                "  {:<38} {:>8}  {}",
                line.rule, line.households, line.title
            )?;
        }
        writeln!(out, "\nby village")?;
        for village in &report.by_village {
            let parts: Vec<String> = village
                .by_rule
                .iter()
                .map(|(rule, n)| format!("{rule} {n}"))
                .collect();
            writeln!(
                out,
                "  {} {}: {}",
                village.region_code,
                village.name.as_deref().unwrap_or("-"),
                parts.join(", ")
            )?;
        }
        write_departments(report, out)?;
        writeln!(out, "\nfindings")?;
        for finding in &report.findings {
            writeln!(
                out,
                "  {} {} {}: {}",
                finding.rule, finding.household_id, finding.region_code, finding.reason
            )?;
        }
        for subject in &report.unmatched {
            writeln!(out, "  {} {}", UNMATCHED_PERSONS.id, subject.reason())?;
        }
        for delay in report.late_departments() {
            writeln!(
                out,
                "  {} {}: {}",
                LATE_REPORTING.id,
                delay.source,
                delay.reason()
            )?;
        }
        out.flush()
    };
    write(out).map_err(|source| CommandError::Write {
        path: "stdout".into(),
        source,
    })
}

/// The department rules' section: counts of the subjects not on the roster, and the
/// delay table.
fn write_departments(report: &DataQualityReport, out: &mut dyn Write) -> std::io::Result<()> {
    let counts = &report.unmatched_counts;
    writeln!(out, "\nby department")?;
    writeln!(
        out,
        "  {:<38} {:>8}  {} ({} events)",
        UNMATCHED_PERSONS.id, counts.all.subjects, UNMATCHED_PERSONS.title, counts.all.events
    )?;
    let tallies = |map: &BTreeMap<String, crate::domain::department_quality::SubjectTally>| {
        if map.is_empty() {
            return "none".to_string();
        }
        map.iter()
            .map(|(key, tally)| format!("{key} {} ({} events)", tally.subjects, tally.events))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "    by department: {}", tallies(&counts.by_source))?;
    writeln!(
        out,
        "    by ID issuing area: {}",
        tallies(&counts.by_id_area)
    )?;
    writeln!(out, "    by village: {}", tallies(&counts.by_village))?;
    let late = report.late_departments().count();
    let limit = report
        .reporting_delays
        .first()
        .map_or(String::new(), |d| format!(", beyond {} days", d.limit_days));
    writeln!(
        out,
        "  {:<38} {:>8}  {} (departments{limit})",
        LATE_REPORTING.id, late, LATE_REPORTING.title
    )?;
    writeln!(
        out,
        "    {:<28} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7}",
        "department", "events", "p50 h", "p90 h", "max h", "late", "share"
    )?;
    for delay in &report.reporting_delays {
        writeln!(
            out,
            "    {:<28} {:>9} {:>9.1} {:>9.1} {:>10.1} {:>8} {:>6.1}%",
            delay.source.as_str(),
            delay.events,
            delay.p50_hours,
            delay.p90_hours,
            delay.max_hours,
            delay.late,
            delay.late_share * 100.0
        )?;
    }
    Ok(())
}
