//! `yujing evaluate`: how the detectors perform, on simulated daily series with injected
//! outbreaks of known size (after Noufaily et al. 2013 / `surveillance::sts_creation`,
//! made daily: seasonal negative-binomial baselines with a weekday pattern), for sparse
//! village-level, medium township-level and denser county-level series. Reports per
//! detector and level: probability of detection, false alarms per region-year, median
//! days to detection, as a Markdown table. Deterministic for a seed; fails only on output.

use std::io::Write;

use serde::Serialize;

use crate::domain::ids::RegionLevel;
use crate::domain::signal::{Method, RiskKind};
use crate::generate::rng::Rng;
use crate::pipeline::detect::DetectSettings;
use crate::pipeline::detect::scan::{Scan, Unit, zones};
use crate::pipeline::detect::series::{Day, Dense, LevelDetectors, method_bit, run_offline};
use crate::pipeline::detect::settings::FarringtonPreset;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateOptions {
    /// Seed.
    pub seed: u64,
    /// Regions (series) per level.
    pub regions_per_level: usize,
    /// Years of history before monitoring starts (baselines, model fits).
    pub history_years: u32,
    /// Years monitored (outbreaks are injected here).
    pub monitored_years: u32,
    /// Outbreaks per region per monitored year.
    pub outbreaks_per_region_year: u32,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        EvaluateOptions {
            seed: 2024,
            regions_per_level: 60,
            history_years: 6,
            monitored_years: 2,
            outbreaks_per_region_year: 3,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationRow {
    /// Level of the hierarchy.
    pub level: RegionLevel,
    /// Detector, with its variant (`minSigma`, calibration).
    pub detector: String,
    /// Injected outbreaks.
    pub outbreaks: u64,
    /// Outbreaks with an alarm during them (onset to two days after the last case; a
    /// weekly alarm counts when its week overlaps that span).
    pub detected: u64,
    /// detected / outbreaks.
    pub probability_of_detection: f64,
    /// Alarm days outside every outbreak.
    pub false_alarms: u64,
    /// Regions × monitored years.
    pub region_years: f64,
    /// false_alarms / region_years.
    pub false_alarms_per_region_year: f64,
    /// Median days from onset to the first alarm, over detected outbreaks.
    pub median_days_to_detection: Option<f64>,
}

/// A level's simulation design.
struct Design {
    level: RegionLevel,
    /// Range of the mean daily count of a region.
    mean_range: (f64, f64),
}

const DESIGNS: [Design; 3] = [
    Design {
        level: RegionLevel::Village,
        mean_range: (0.03, 0.3),
    },
    Design {
        level: RegionLevel::Township,
        mean_range: (0.3, 2.0),
    },
    Design {
        level: RegionLevel::County,
        mean_range: (2.0, 8.0),
    },
];

/// Negative-binomial overdispersion of the baselines (Var = μ + αμ²).
const ALPHA: f64 = 0.2;
/// Weekday multipliers, Monday first (mean 1): departments register fewer events at
/// weekends.
const WEEKDAY: [f64; 7] = [1.3, 1.2, 1.1, 1.1, 1.0, 0.7, 0.6];
/// Outbreak size multiples of the weekly baseline standard deviation (Noufaily's k).
const SIZE_MULTIPLES: [f64; 4] = [2.0, 3.0, 5.0, 8.0];
/// An outbreak's cases fall within this many days of its onset (log-normal delays).
const MAX_SPREAD_DAYS: Day = 13;

/// One simulated region: its counts and its outbreaks.
struct Simulated {
    counts: Vec<f64>,
    /// (onset, last case day) in series days.
    outbreaks: Vec<(Day, Day)>,
}

fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    // Marsaglia & Tsang (2000); shape < 1 via the boost u^(1/shape).
    if shape < 1.0 {
        let boost = rng.unit().max(f64::MIN_POSITIVE).powf(1.0 / shape);
        return gamma(rng, shape + 1.0) * boost;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.unit();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn negative_binomial(rng: &mut Rng, mean: f64) -> f64 {
    let size = 1.0 / ALPHA;
    let rate = gamma(rng, size) * mean / size;
    rng.poisson(rate) as f64
}

fn simulate(
    rng: &mut Rng,
    design: &Design,
    first: Day,
    days: usize,
    monitor_from: usize,
    options: &EvaluateOptions,
) -> Simulated {
    let base = rng.between(design.mean_range.0, design.mean_range.1);
    let phase = rng.between(0.0, std::f64::consts::TAU);
    let mean_at = |i: usize| {
        let day = first + i as Day;
        let season = 1.0 + 0.3 * (std::f64::consts::TAU * f64::from(day) / 365.0 + phase).sin();
        // 1970-01-01 (day 0) was a Thursday: Monday is residue 4.
        let weekday = (day + 3).rem_euclid(7) as usize;
        base * season * WEEKDAY[weekday]
    };
    let mut counts: Vec<f64> = (0..days)
        .map(|i| negative_binomial(rng, mean_at(i)))
        .collect();
    let monitored = days - monitor_from;
    let wanted = options.outbreaks_per_region_year as usize * monitored / 365;
    // Non-overlapping onsets: one per slot of the monitored span, placed within it.
    let mut outbreaks = Vec::new();
    if let Some(slot) = monitored.checked_div(wanted) {
        for k in 0..wanted {
            let room = slot.saturating_sub(MAX_SPREAD_DAYS as usize + 16).max(1);
            let onset = monitor_from + k * slot + rng.range(0, room as u64) as usize;
            let mean = mean_at(onset);
            let weekly_sd = (7.0 * mean * (1.0 + ALPHA * mean)).sqrt();
            let multiple = *rng.pick(&SIZE_MULTIPLES);
            let size = rng.poisson(multiple * weekly_sd).max(1);
            let mut last = onset;
            for _ in 0..size {
                let delay =
                    (rng.lognormal(1.5, 0.6).floor() as usize).min(MAX_SPREAD_DAYS as usize);
                let day = (onset + delay).min(days - 1);
                counts[day] += 1.0;
                last = last.max(day);
            }
            outbreaks.push((onset as Day, last as Day));
        }
    }
    Simulated { counts, outbreaks }
}

/// A detector configuration under evaluation.
struct Candidate {
    name: String,
    /// The methods whose alarms count (bits of [`method_bit`]).
    mask: u8,
    detectors: LevelDetectors,
}

fn candidates(settings: &DetectSettings, level: RegionLevel) -> Vec<Candidate> {
    let mut out = Vec::new();
    let configured = settings.level(level).ears_min_sigma;
    let mut sigmas = vec![0.0];
    if configured > 0.0 {
        sigmas.push(configured);
    }
    let ears = [
        Method::EarsC1,
        Method::EarsC2,
        Method::EarsC3,
        Method::EarsC3Textbook,
    ];
    for &sigma in &sigmas {
        let mut variant = settings.clone();
        match level {
            RegionLevel::Village => variant.village.ears_min_sigma = sigma,
            RegionLevel::Township => variant.township.ears_min_sigma = sigma,
            _ => variant.county.ears_min_sigma = sigma,
        }
        for method in ears {
            if let Ok(detectors) = LevelDetectors::new(&variant, level, &[method], 365.0) {
                out.push(Candidate {
                    name: format!("{method} (minSigma {sigma})"),
                    mask: method_bit(method),
                    detectors,
                });
            }
        }
    }
    let family = settings.level(level).cusum_family;
    let kinds = RiskKind::SERIES.len();
    for (label, target) in [
        (
            format!(
                "cusum ({family:?}, ARL0 {:.0} d: the budget for one series)",
                settings.target_arl0_days(1)
            ),
            settings.target_arl0_days(1),
        ),
        (
            format!(
                "cusum ({family:?}, ARL0 {:.0} d: the budget shared by {kinds} kinds, as streamed)",
                settings.target_arl0_days(kinds)
            ),
            settings.target_arl0_days(kinds),
        ),
    ] {
        if let Ok(detectors) = LevelDetectors::new(settings, level, &[Method::Cusum], target) {
            out.push(Candidate {
                name: label,
                mask: method_bit(Method::Cusum),
                detectors,
            });
        }
    }
    for preset in [FarringtonPreset::Noufaily, FarringtonPreset::Original] {
        let mut variant = settings.clone();
        variant.farrington.parameters = preset;
        if let Ok(detectors) =
            LevelDetectors::new(&variant, level, &[Method::FarringtonFlexible], 365.0)
        {
            out.push(Candidate {
                name: format!(
                    "farrington_flexible ({preset:?}, α {}, weekly)",
                    variant.farrington.alpha
                ),
                mask: method_bit(Method::FarringtonFlexible),
                detectors,
            });
        }
    }
    let configured = &settings.level(level).methods;
    let series_methods: Vec<Method> = configured
        .iter()
        .copied()
        .filter(|m| Method::DETECTORS.contains(m))
        .collect();
    if series_methods.len() > 1
        && let Ok(detectors) = LevelDetectors::new(
            settings,
            level,
            &series_methods,
            settings.target_arl0_days(RiskKind::SERIES.len()),
        )
    {
        let names: Vec<String> = series_methods.iter().map(|m| m.to_string()).collect();
        out.push(Candidate {
            name: format!("configured, combined as signals: {}", names.join(" + ")),
            mask: series_methods.iter().fold(0, |m, &x| m | method_bit(x)),
            detectors,
        });
    }
    out
}

/// Simulates, judges and writes the Markdown table to `out`; returns its rows.
pub fn evaluate(
    settings: &DetectSettings,
    options: &EvaluateOptions,
    out: &mut dyn Write,
) -> std::io::Result<Vec<EvaluationRow>> {
    let rng = Rng::new(options.seed);
    let history = 365 * options.history_years as usize;
    let days = history + 365 * options.monitored_years.max(1) as usize;
    // Series start on a Monday in 2021 (any fixed day works; it fixes the refit grid).
    let first: Day = 18_631;
    let mut rows = Vec::new();
    for design in &DESIGNS {
        let mut level_rng = rng.fork(design.level.as_str());
        let regions: Vec<Simulated> = (0..options.regions_per_level)
            .map(|_| simulate(&mut level_rng, design, first, days, history, options))
            .collect();
        let weekly = method_bit(Method::FarringtonFlexible);
        for mut candidate in candidates(settings, design.level) {
            let bit = candidate.mask;
            let mut row = EvaluationRow {
                level: design.level,
                detector: candidate.name.clone(),
                outbreaks: 0,
                detected: 0,
                probability_of_detection: 0.0,
                false_alarms: 0,
                region_years: (options.regions_per_level * (days - history)) as f64 / 365.0,
                false_alarms_per_region_year: 0.0,
                median_days_to_detection: None,
            };
            let mut delays = Vec::new();
            for region in &regions {
                let dense = Dense {
                    first,
                    values: &region.counts,
                };
                let mut alarm_days = Vec::new();
                run_offline(
                    &mut candidate.detectors,
                    &dense,
                    first,
                    first + history as Day,
                    first + days as Day - 1,
                    |day, judgements| {
                        let bits = judgements.alarms() & bit;
                        if bits != 0 {
                            // A weekly alarm (Sunday) speaks for its whole week.
                            let from = if bits & weekly != 0 { day - 6 } else { day };
                            alarm_days.push((day - first, from - first));
                        }
                    },
                );
                let within = |(day, from): (Day, Day), onset: Day, last: Day| {
                    day >= onset && from <= last + 2
                };
                let during = |alarm: (Day, Day)| {
                    region
                        .outbreaks
                        .iter()
                        .any(|&(onset, last)| within(alarm, onset, last))
                };
                row.false_alarms += alarm_days.iter().filter(|&&a| !during(a)).count() as u64;
                for &(onset, last) in &region.outbreaks {
                    row.outbreaks += 1;
                    if let Some(&(first_alarm, _)) =
                        alarm_days.iter().find(|&&a| within(a, onset, last))
                    {
                        row.detected += 1;
                        delays.push(f64::from(first_alarm - onset));
                    }
                }
            }
            row.probability_of_detection = row.detected as f64 / row.outbreaks.max(1) as f64;
            row.false_alarms_per_region_year = row.false_alarms as f64 / row.region_years;
            delays.sort_by(f64::total_cmp);
            row.median_days_to_detection = median(&delays);
            rows.push(row);
        }
    }
    if settings.scan.enabled {
        let mut scan_rng = rng.fork("scan");
        if let Some(row) = evaluate_scan(settings, options, &mut scan_rng) {
            rows.push(row);
        }
    }
    write_table(out, options, &rows)?;
    Ok(rows)
}

/// Villages per township in the scan's simulated county.
const SCAN_TOWNSHIP_VILLAGES: usize = 10;

/// The space–time scan on a simulated county: `regions_per_level` villages (100
/// households each) on a grid, ten to a township, with the village design's baselines;
/// clustered outbreaks (4 × `outbreaks_per_region_year` per county-year, one at a time) in
/// one to three neighbouring villages of a township, sized like the others on the
/// cluster's weekly sd. Each monitored day is scanned (early stopping, as streamed); an
/// outbreak is detected by a signal during it whose cluster holds one of its villages; any
/// other signal is one false alarm (per village-year: the villages × monitored years).
fn evaluate_scan(
    settings: &DetectSettings,
    options: &EvaluateOptions,
    rng: &mut Rng,
) -> Option<EvaluationRow> {
    let scan = Scan::try_new(&settings.scan).ok()?;
    let villages = options.regions_per_level.max(2);
    let study = settings.scan.study_days;
    let monitored = 365 * options.monitored_years.max(1) as usize;
    let days = study + monitored;
    let units: Vec<Unit> = (0..villages)
        .map(|v| Unit {
            position: Some((
                105.0 + 0.02 * (v % 10) as f64,
                26.0 + 0.02 * (v / 10) as f64,
            )),
            households: 100,
            township: v / SCAN_TOWNSHIP_VILLAGES,
        })
        .collect();
    let candidate_zones = zones(&units, settings.scan.max_household_share);
    let design = &DESIGNS[0];
    let means: Vec<f64> = (0..villages)
        .map(|_| rng.between(design.mean_range.0, design.mean_range.1))
        .collect();
    let mut counts: Vec<Vec<u32>> = means
        .iter()
        .map(|&mean| {
            (0..days)
                .map(|d| {
                    let weekday = WEEKDAY[d % 7];
                    negative_binomial(rng, mean * weekday) as u32
                })
                .collect()
        })
        .collect();
    // Outbreaks one after another: (villages, onset, last case day).
    let wanted = 4 * options.outbreaks_per_region_year as usize * monitored / 365;
    let slot = monitored / wanted.max(1);
    let mut outbreaks: Vec<(Vec<usize>, usize, usize)> = Vec::new();
    for k in 0..wanted {
        let room = slot.saturating_sub(MAX_SPREAD_DAYS as usize + 16).max(1);
        let onset = study + k * slot + rng.range(0, room as u64) as usize;
        let centre = rng.range(0, villages as u64) as usize;
        let size = 1 + rng.range(0, 3) as usize;
        let township = centre / SCAN_TOWNSHIP_VILLAGES;
        let members: Vec<usize> = candidate_zones[centre]
            .units
            .iter()
            .copied()
            .filter(|&v| v / SCAN_TOWNSHIP_VILLAGES == township)
            .take(size)
            .collect();
        let mean: f64 = members.iter().map(|&v| means[v]).sum();
        let weekly_sd = (7.0 * mean * (1.0 + ALPHA * mean)).sqrt();
        let multiple = *rng.pick(&SIZE_MULTIPLES);
        let cases = rng.poisson(multiple * weekly_sd).max(1);
        let mut last = onset;
        for _ in 0..cases {
            let delay = (rng.lognormal(1.5, 0.6).floor() as usize).min(MAX_SPREAD_DAYS as usize);
            let day = (onset + delay).min(days - 1);
            let village = *rng.pick(&members);
            counts[village][day] += 1;
            last = last.max(day);
        }
        outbreaks.push((members, onset, last));
    }
    let mut detected = vec![None; outbreaks.len()];
    let mut false_alarms = 0u64;
    for t in study..days {
        let window: Vec<Vec<u32>> = counts
            .iter()
            .map(|c| c[t + 1 - study..=t].to_vec())
            .collect();
        let Some(cluster) = scan.analyse(&candidate_zones, &window, t as u64, true) else {
            continue;
        };
        if cluster.recurrence_days < settings.scan.recurrence_days {
            continue;
        }
        let mut true_alarm = false;
        for (i, (members, onset, last)) in outbreaks.iter().enumerate() {
            if t >= *onset && t <= last + 2 && cluster.units.iter().any(|u| members.contains(u)) {
                true_alarm = true;
                detected[i].get_or_insert(t - onset);
            }
        }
        false_alarms += u64::from(!true_alarm);
    }
    let mut delays: Vec<f64> = detected.iter().flatten().map(|&d| d as f64).collect();
    delays.sort_by(f64::total_cmp);
    let region_years = (villages * monitored) as f64 / 365.0;
    let found = delays.len() as u64;
    Some(EvaluationRow {
        level: RegionLevel::Village,
        detector: format!(
            "scan (space–time permutation, {villages} villages on a grid, recurrence ≥ {:.0} d, {} replicates)",
            settings.scan.recurrence_days, settings.scan.replicates
        ),
        outbreaks: outbreaks.len() as u64,
        detected: found,
        probability_of_detection: found as f64 / outbreaks.len().max(1) as f64,
        false_alarms,
        region_years,
        false_alarms_per_region_year: false_alarms as f64 / region_years,
        median_days_to_detection: median(&delays),
    })
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn write_table(
    out: &mut dyn Write,
    options: &EvaluateOptions,
    rows: &[EvaluationRow],
) -> std::io::Result<()> {
    writeln!(
        out,
        "Simulated daily series (seed {}): {} regions per level, {} year(s) of history then {} monitored year(s) with {} outbreaks per region-year; negative-binomial baselines (α = {ALPHA}), annual season ±30 %, weekday pattern; outbreak size Poisson(k × weekly sd), k ∈ {{2, 3, 5, 8}}, cases spread log-normally over up to {MAX_SPREAD_DAYS} days. Mean daily counts: village 0.03–0.3, township 0.3–2, county 2–8.\n",
        options.seed,
        options.regions_per_level,
        options.history_years,
        options.monitored_years,
        options.outbreaks_per_region_year,
    )?;
    writeln!(
        out,
        "| level | detector | outbreaks | POD | false alarms / region-year | median days to detection |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|")?;
    for row in rows {
        writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {} |",
            row.level.as_str(),
            row.detector,
            row.outbreaks,
            row.probability_of_detection,
            row.false_alarms_per_region_year,
            row.median_days_to_detection
                .map_or("–".to_string(), |d| format!("{d:.1}"))
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn deterministic_and_sane() {
        let options = EvaluateOptions {
            regions_per_level: 3,
            history_years: 1,
            monitored_years: 1,
            ..EvaluateOptions::default()
        };
        let settings = Settings::defaults().detect;
        let mut first = Vec::new();
        let rows = evaluate(&settings, &options, &mut first).expect("writes");
        let mut second = Vec::new();
        assert_eq!(
            evaluate(&settings, &options, &mut second).expect("writes"),
            rows
        );
        assert_eq!(first, second);
        let text = String::from_utf8(first).expect("UTF-8");
        assert!(text.contains("| level | detector |"));
        // 3 levels × (4 EARS × 2 minSigma + 2 CUSUM + 2 Farrington + the configured
        // methods combined), and the scan.
        assert_eq!(rows.len(), 3 * 13 + 1);
        for row in &rows {
            let expected = if row.detector.starts_with("scan") {
                12
            } else {
                9
            };
            assert_eq!(row.outbreaks, expected, "{row:?}");
            assert!((0.0..=1.0).contains(&row.probability_of_detection));
        }
    }

    #[test]
    fn gamma_mean() {
        let mut rng = Rng::new(3);
        for shape in [0.5, 5.0] {
            let n = 20_000;
            let mean = (0..n).map(|_| gamma(&mut rng, shape)).sum::<f64>() / f64::from(n);
            assert!(
                (mean - shape).abs() < 0.05 * shape.max(1.0),
                "{shape}: {mean}"
            );
        }
    }
}
