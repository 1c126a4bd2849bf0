//! `yujing data-quality`: the registry as stored -> the standing sweeps and the
//! consistency rules of [`crate::sweeps`] over every household, for one China
//! Standard Time day: counts by rule and by village, and the findings. Nothing is
//! stored; fails only when the store cannot be read.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;
use serde::Serialize;

use super::CommandError;
use crate::app::App;
use crate::domain::ids::RegionCode;
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
}

/// Loads the registry from the store and runs the full pass for `today`.
pub async fn data_quality(app: &App, today: NaiveDate) -> Result<DataQualityReport, CommandError> {
    let registry = app.load_registry().await?;
    let findings = sweeps::full_pass(&registry, today, &app.settings);
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
    Ok(DataQualityReport {
        today,
        households: registry.household_count(),
        by_rule,
        by_village,
        findings: findings.iter().map(|f| f.record(&registry)).collect(),
    })
}

/// Writes the findings as NDJSON, one per line.
pub fn write_ndjson(report: &DataQualityReport, out: &mut dyn Write) -> Result<(), CommandError> {
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        for finding in &report.findings {
            serde_json::to_writer(&mut *out, finding)?;
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
        writeln!(out, "\nfindings")?;
        for finding in &report.findings {
            writeln!(
                out,
                "  {} {} {}: {}",
                finding.rule, finding.household_id, finding.region_code, finding.reason
            )?;
        }
        out.flush()
    };
    write(out).map_err(|source| CommandError::Write {
        path: "stdout".into(),
        source,
    })
}
