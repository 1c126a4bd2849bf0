//! `[detect]` configuration: event-time lateness, the detectors per level of the region
//! hierarchy, the systemic rules and the signal lifecycle. Parsed by `config` with the
//! other sections; [`DetectSettings::problems`] lists every out-of-range value at once
//! (config's `Check` reports them). Defaults and their reasoning: `config/default.toml`.

use serde::Deserialize;

use crate::domain::alert::Level;
use crate::domain::ids::RegionLevel;
use crate::domain::signal::Method;

use super::cusum::FamilyKind;
use super::farrington::{Farrington, FarringtonParams, WEEKS_PER_YEAR};
use super::scan::{Scan, ScanSettings};

/// `[detect.ears]`: EARS C1–C3 parameters shared by every level.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EarsSettings {
    /// Baseline length B in days (package default 7, at least 3).
    pub baseline_days: usize,
    /// C1 alpha (package default 0.001, z ≈ 3.09).
    pub alpha_c1: f64,
    /// C2 alpha (package default 0.001).
    pub alpha_c2: f64,
    /// C3 alpha, both variants (package default 0.025, z ≈ 1.96).
    pub alpha_c3: f64,
}

/// `[detect.cusum]`: the count CUSUM and its in-control model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CusumSettings {
    /// κ = ln(μ1/μ0), the shift to detect quickly (ln 2: a doubling).
    pub kappa: f64,
    /// False alarms per region per year of daily monitoring, shared equally by the
    /// region's series (one per risk kind with a series): each chart is calibrated to
    /// ARL0 = 365 × kinds × `calibration_margin` / budget days.
    pub false_alarms_per_region_year: f64,
    /// The ARL0 target is multiplied by this (≥ 1) to cover the in-control model's
    /// estimation error: fitted on a year of sparse, seasonal counts, a chart calibrated
    /// exactly false-alarms about twice as often as nominal (`yujing evaluate`).
    pub calibration_margin: f64,
    /// Days of history the in-control model is fitted on.
    pub history_days: i64,
    /// The model is refitted (and the threshold recalibrated) every this many days, on
    /// a calendar grid; late events re-judge back to the start of the previous period.
    pub refit_days: i64,
    /// No CUSUM judgement before this many days of history exist.
    pub min_history_days: i64,
    /// Annual harmonics of the in-control model (used once the history spans a year).
    pub harmonics: usize,
    /// The harmonics' period in days.
    pub period_days: f64,
    /// Day-of-week effect in the in-control model.
    pub day_of_week: bool,
}

/// Which published Farrington parameter set `[detect.farrington]` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FarringtonPreset {
    /// Farrington et al. (1996): windows only, re-weighting above 1, the trend when
    /// significant, the 2/3-power bound.
    Original,
    /// Noufaily et al. (2013): 10 periods, 26 recent weeks left out, re-weighting above
    /// 2.58, the trend always, the negative-binomial quantile.
    Noufaily,
}

/// `[detect.farrington]`: Farrington Flexible on weekly sums (weeks end on Sunday, CST).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FarringtonSettings {
    /// `original` or `noufaily`.
    pub parameters: FarringtonPreset,
    /// One-sided level of the weekly bound.
    pub alpha: f64,
    /// b: years of reference windows; a series is judged once it has 52·b + w + 1 weeks.
    pub years_back: usize,
    /// w: half-window in weeks.
    pub half_window_weeks: usize,
}

impl FarringtonSettings {
    /// The detector's parameters: the preset with this α, b and w.
    pub fn params(&self) -> FarringtonParams {
        let base = match self.parameters {
            FarringtonPreset::Original => FarringtonParams::original(self.alpha),
            FarringtonPreset::Noufaily => FarringtonParams::noufaily(self.alpha),
        };
        FarringtonParams {
            years_back: self.years_back,
            half_window: self.half_window_weeks,
            past_weeks_not_included: match self.parameters {
                FarringtonPreset::Original => self.half_window_weeks,
                FarringtonPreset::Noufaily => base.past_weeks_not_included,
            },
            ..base
        }
    }

    /// Days of counts a judgement reads (its weeks).
    pub fn history_days(&self) -> i64 {
        7 * (WEEKS_PER_YEAR * self.years_back + self.half_window_weeks + 1) as i64
    }
}

/// `[detect.village]`, `[detect.township]`, `[detect.county]`: what runs at a level.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LevelSettings {
    /// Detectors whose alarms raise signals at this level (`cusum`,
    /// `farrington_flexible`, `scan`, `ears_c1`, `ears_c2`, `ears_c3`, `ears_c3_textbook`).
    pub methods: Vec<Method>,
    /// EARS `minSigma` at this level (0 = the package default).
    pub ears_min_sigma: f64,
    /// The CUSUM's count family: `poisson`, or `negative_binomial` with α estimated
    /// from the history (falls back to the Poisson when the data show none).
    pub cusum_family: FamilyKind,
}

/// `[detect.rules]`: the systemic rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SystemicSettings {
    /// Mass layoff: at least this many households with an unemployment registration
    /// from one employer...
    pub mass_layoff_households: usize,
    /// ...within this many days, in one township (and, separately, one county).
    pub mass_layoff_window_days: i64,
    /// Failed industry project: at least this many registry households involved.
    pub industry_failure_households: usize,
    /// Village share: at least this share of a village's registry households...
    pub village_share: f64,
    /// ...with a new risk event within this many days...
    pub village_share_window_days: i64,
    /// ...and at least this many of them.
    pub village_share_min_households: usize,
}

/// `[detect.signals]`: severity, clearing and campaigns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SignalSettings {
    /// A signal clears after this many judged days without new evidence.
    pub clear_after_days: i64,
    /// Exceedance score (1 = at the bound) from which a detector finding is yellow,
    /// orange and red (below the first: blue). Each further level of the hierarchy
    /// that agrees raises it one step.
    pub severity_exceedance: Vec<f64>,
    /// Signals at or above this severity open a screening campaign.
    pub campaign_min_level: Level,
    /// Due date of a campaign task, days after it is opened.
    pub campaign_due_days: i64,
    /// A campaign task lists the village's households with risk events within this many
    /// days, to visit first (at most `dedupe_days`: older days are not kept).
    pub campaign_recent_days: i64,
}

/// Where the regional stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Inside the pipeline, over what this instance consumes: files and stdin, or one
    /// Kafka instance that holds every partition.
    Inline,
    /// In one instance elected through a lease in the store, over the events every
    /// instance committed: several Kafka instances sharing the partitions.
    Leader,
}

/// `[detect]`: regional detection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DetectSettings {
    /// Where the regional stage runs (`inline` or `leader`).
    pub placement: Placement,
    /// With `leader`: how long the lead lasts without a renewal before another
    /// instance may take it over.
    pub leader_lease_seconds: i64,
    /// Watermark = latest event time seen − this many days; a day is judged once the
    /// watermark passes its end (China Standard Time).
    pub allowed_lateness_days: i64,
    /// When no event has moved the latest event time for this long (processing time),
    /// the watermark advances on its own (see `stage`).
    pub idle_timeout_hours: i64,
    /// Days of (household, kind, day) records kept to count distinct households for
    /// late events and to run the windowed rules.
    pub dedupe_days: i64,
    /// `[detect.ears]`
    pub ears: EarsSettings,
    /// `[detect.cusum]`
    pub cusum: CusumSettings,
    /// `[detect.farrington]`
    pub farrington: FarringtonSettings,
    /// `[detect.scan]`
    pub scan: ScanSettings,
    /// `[detect.village]`
    pub village: LevelSettings,
    /// `[detect.township]`
    pub township: LevelSettings,
    /// `[detect.county]`
    pub county: LevelSettings,
    /// `[detect.rules]`
    pub rules: SystemicSettings,
    /// `[detect.signals]`
    pub signals: SignalSettings,
}

impl DetectSettings {
    /// The in-control ARL (days) each chart is calibrated to when the region's budget is
    /// shared by `series_per_region` series.
    pub fn target_arl0_days(&self, series_per_region: usize) -> f64 {
        365.0 * series_per_region.max(1) as f64 * self.cusum.calibration_margin
            / self.cusum.false_alarms_per_region_year
    }

    /// The settings of a level (province and city regions use the county's).
    pub fn level(&self, level: RegionLevel) -> &LevelSettings {
        match level {
            RegionLevel::Village => &self.village,
            RegionLevel::Township => &self.township,
            _ => &self.county,
        }
    }

    /// Every out-of-range value, one line each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut require = |ok: bool, message: &str| {
            if !ok {
                problems.push(message.to_string());
            }
        };
        require(
            self.allowed_lateness_days >= 0,
            "detect.allowed_lateness_days: must not be negative",
        );
        require(
            self.idle_timeout_hours >= 1,
            "detect.idle_timeout_hours: must be at least 1",
        );
        let ears = &self.ears;
        require(
            ears.baseline_days >= 3,
            "detect.ears.baseline_days: must be at least 3 (as earsC requires)",
        );
        for (name, alpha) in [
            ("alpha_c1", ears.alpha_c1),
            ("alpha_c2", ears.alpha_c2),
            ("alpha_c3", ears.alpha_c3),
        ] {
            require(
                alpha > 0.0 && alpha < 1.0,
                &format!("detect.ears.{name}: must lie strictly between 0 and 1"),
            );
        }
        let cusum = &self.cusum;
        require(
            cusum.kappa > 0.0 && cusum.kappa.is_finite(),
            "detect.cusum.kappa: must be finite and > 0",
        );
        require(
            cusum.false_alarms_per_region_year > 0.0 && cusum.false_alarms_per_region_year <= 365.0,
            "detect.cusum.false_alarms_per_region_year: must be > 0 and at most 365",
        );
        require(
            cusum.calibration_margin >= 1.0 && cusum.calibration_margin.is_finite(),
            "detect.cusum.calibration_margin: must be finite and at least 1",
        );
        require(
            cusum.refit_days >= 7,
            "detect.cusum.refit_days: must be at least 7",
        );
        require(
            cusum.min_history_days >= 7,
            "detect.cusum.min_history_days: must be at least 7",
        );
        require(
            cusum.history_days >= cusum.min_history_days,
            "detect.cusum.history_days: must be at least min_history_days",
        );
        require(
            cusum.period_days > 0.0 && cusum.period_days.is_finite(),
            "detect.cusum.period_days: must be finite and > 0",
        );
        require(cusum.harmonics <= 4, "detect.cusum.harmonics: at most 4");
        let scan = Scan::try_new(&self.scan);
        require(
            scan.is_ok(),
            &format!(
                "detect.scan: {}",
                scan.err().map(|e| e.to_string()).unwrap_or_default()
            ),
        );
        let farrington = Farrington::try_new(&self.farrington.params());
        require(
            farrington.is_ok(),
            &format!(
                "detect.farrington: {}",
                farrington.err().map(|e| e.to_string()).unwrap_or_default()
            ),
        );
        require(
            self.dedupe_days >= 2 * cusum.refit_days + ears.baseline_days as i64 + 4
                && self.dedupe_days >= self.rules.mass_layoff_window_days
                && self.dedupe_days >= self.rules.village_share_window_days,
            "detect.dedupe_days: must cover two refit periods plus the EARS window, and the rule windows",
        );
        for (name, level) in [
            ("village", &self.village),
            ("township", &self.township),
            ("county", &self.county),
        ] {
            for method in &level.methods {
                require(
                    method.is_detector(),
                    &format!(
                        "detect.{name}.methods: `{method}` is a systemic rule, not a detector"
                    ),
                );
                require(
                    *method != Method::Scan,
                    &format!(
                        "detect.{name}.methods: the scan covers every level at once; enable it with detect.scan.enabled"
                    ),
                );
            }
            require(
                level.ears_min_sigma >= 0.0 && level.ears_min_sigma.is_finite(),
                &format!("detect.{name}.ears_min_sigma: must be finite and not negative"),
            );
        }
        let rules = &self.rules;
        require(
            rules.mass_layoff_households >= 2,
            "detect.rules.mass_layoff_households: must be at least 2",
        );
        require(
            rules.mass_layoff_window_days >= 1,
            "detect.rules.mass_layoff_window_days: must be at least 1",
        );
        require(
            rules.industry_failure_households >= 1,
            "detect.rules.industry_failure_households: must be at least 1",
        );
        require(
            rules.village_share > 0.0 && rules.village_share <= 1.0,
            "detect.rules.village_share: must be in (0, 1]",
        );
        require(
            rules.village_share_window_days >= 1,
            "detect.rules.village_share_window_days: must be at least 1",
        );
        let signals = &self.signals;
        require(
            signals.clear_after_days >= 1,
            "detect.signals.clear_after_days: must be at least 1",
        );
        require(
            signals.severity_exceedance.len() == 3
                && signals.severity_exceedance.windows(2).all(|w| w[0] <= w[1])
                && signals.severity_exceedance.iter().all(|x| *x >= 1.0),
            "detect.signals.severity_exceedance: three non-decreasing scores ≥ 1 (yellow, orange, red)",
        );
        require(
            self.leader_lease_seconds >= 1,
            "detect.leader_lease_seconds: must be at least 1",
        );
        require(
            signals.campaign_due_days >= 1,
            "detect.signals.campaign_due_days: must be at least 1",
        );
        require(
            signals.campaign_recent_days >= 1 && signals.campaign_recent_days <= self.dedupe_days,
            "detect.signals.campaign_recent_days: must be at least 1 and at most detect.dedupe_days",
        );
        problems
    }
}
