//! Farrington Flexible (Farrington et al. 1996; Noufaily et al. 2013) on one weekly count
//! series, per (region, risk kind) in regional detection (DESIGN §6), judged once per closed
//! week. Input: the weekly sums up to week t0; output: a [`FarringtonOutcome`] for t0, as
//! R `surveillance::farringtonFlexible` 1.20.3 computes it with weeks numbered by index
//! (`sts` without dates, freq 52): the reference windows and the `noPeriods` factor of
//! `blocks`, the quasi-Poisson GLM by IRLS exactly as `glm.fit` iterates (start μ = y + 0.1,
//! relative deviance change < 1e-8, at most 25 iterations), the dispersion, the trend rule, the
//! Anscombe-residual re-weighting, the prediction with the package's standard error and both
//! thresholds. Fails only on invalid parameters; a week whose GLM does not converge (with or
//! without trend) is judged with `alarm: None`, as the package returns NA there.

use serde::{Deserialize, Serialize};

use super::ears::{DetectError, Judgement, normal_quantile};

/// Weeks per year in the index numbering (the package's `freq`).
pub const WEEKS_PER_YEAR: usize = 52;

/// R's `glm.control()`: `epsilon` and `maxit`.
const GLM_EPSILON: f64 = 1e-8;
const GLM_MAX_ITERATIONS: usize = 25;
/// R's log link floors μ and dμ/dη at `.Machine$double.eps`.
const DOUBLE_EPS: f64 = f64::EPSILON;

/// The power transformation of the "delta" threshold (`powertrans`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerTransform {
    /// y^(2/3), the package default (Farrington's choice: near symmetry for Poisson counts).
    TwoThirds,
    /// y^(1/2).
    Half,
    /// No transformation.
    None,
}

/// How the upper bound is computed from the prediction (`thresholdMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMethod {
    /// Original Farrington: a normal bound on the power-transformed scale, with the
    /// prediction's variance added to the dispersion ("delta").
    Delta,
    /// Noufaily: the (1 − α) quantile of the negative binomial with mean μ̂0 and variance
    /// φ̂ μ̂0 (the Poisson when φ̂ = 1), `nbPlugin`.
    NbPlugin,
    /// The same quantile at the upper (1 − α) confidence limit of μ̂0 (`muan`).
    Muan,
}

/// Farrington Flexible parameters, named as the package's `control` list. The two published
/// sets are [`FarringtonParams::original`] and [`FarringtonParams::noufaily`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FarringtonParams {
    /// `b`: years back (reference windows), ≥ 1.
    pub years_back: usize,
    /// `w`: half-window in weeks around each reference week.
    pub half_window: usize,
    /// `noPeriods`: 1 (windows only, no seasonal factor) or the number of levels of the
    /// zero-order spline (Noufaily: 10).
    pub no_periods: usize,
    /// `pastWeeksNotIncluded`: the most recent weeks (t0 − this … t0) left out of the fit.
    pub past_weeks_not_included: usize,
    /// `reweight`: down-weight past outbreaks by their Anscombe residuals.
    pub reweight: bool,
    /// `weightsThreshold`: residuals above it are down-weighted.
    pub weights_threshold: f64,
    /// `trend`: try a linear time trend.
    pub trend: bool,
    /// `pThresholdTrend`: keep the trend only when its p-value is below this.
    pub p_threshold_trend: f64,
    /// `alpha`: one-sided level of the bound.
    pub alpha: f64,
    /// `limit54[1]`: at least this many cases ...
    pub limit_cases: f64,
    /// `limit54[2]`: ... in this many weeks up to t0 (included), or no bound and no alarm.
    pub limit_weeks: usize,
    /// `powertrans` (used by [`ThresholdMethod::Delta`] only).
    pub power_transform: PowerTransform,
    /// `thresholdMethod`.
    pub threshold: ThresholdMethod,
}

impl FarringtonParams {
    /// The original Farrington (1996) set as `vignette("monitoringCounts")` gives it: b = 5,
    /// w = 3, no seasonal factor, the current window left out, re-weighting above 1, the trend
    /// when significant at 0.05, the 2/3-power "delta" bound.
    pub fn original(alpha: f64) -> Self {
        FarringtonParams {
            years_back: 5,
            half_window: 3,
            no_periods: 1,
            past_weeks_not_included: 3,
            reweight: true,
            weights_threshold: 1.0,
            trend: true,
            p_threshold_trend: 0.05,
            alpha,
            limit_cases: 5.0,
            limit_weeks: 4,
            power_transform: PowerTransform::TwoThirds,
            threshold: ThresholdMethod::Delta,
        }
    }

    /// The improved set of Noufaily et al. (2013): 10 periods, the last 26 weeks left out,
    /// re-weighting above 2.58, the trend always (when b ≥ 3 and it does not extrapolate),
    /// the negative-binomial quantile.
    pub fn noufaily(alpha: f64) -> Self {
        FarringtonParams {
            no_periods: 10,
            past_weeks_not_included: 26,
            weights_threshold: 2.58,
            p_threshold_trend: 1.0,
            threshold: ThresholdMethod::NbPlugin,
            ..FarringtonParams::original(alpha)
        }
    }
}

/// A validated [`FarringtonParams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Farrington {
    params: FarringtonParams,
    z: f64,
}

/// The verdict on one week, with what the fit found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FarringtonOutcome {
    /// observed = y0; expected = μ̂0 (NaN with the bound); upper_bound = U (NaN when fewer
    /// than `limit_cases` cases in the last `limit_weeks` weeks, as the package's NA);
    /// statistic = the package's score X = (y0 − pred)/(U − pred), pred = μ̂0 for "delta"
    /// and η̂0 = ln μ̂0 for the NB bounds (the package's quirk, mirrored); alarm iff X > 1 and
    /// y0 > 0 and enough cases; `None` when the GLM did not converge.
    pub judgement: Judgement,
    /// Whether the trend was kept.
    pub trend: bool,
    /// φ̂ of the final fit, floored at 1 (NaN without a fit).
    pub dispersion: f64,
    /// P(Y ≥ y0) under the threshold's distribution (the package's `pvalue`).
    pub p_value: f64,
}

impl Farrington {
    /// Validates: b ≥ 1; α in (0, 1); p ≥ 1 and, for p > 1, gaps long enough for p − 1
    /// blocks (the package's "Number of factors too big!"); `past_weeks_not_included` ≥ w
    /// is not required (the package does not), but the fit must keep weeks: it must be
    /// below 52·b; `limit_weeks` ≥ 1; thresholds finite.
    pub fn try_new(params: &FarringtonParams) -> Result<Self, DetectError> {
        let invalid = |name, value: f64, reason| {
            Err(DetectError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if params.years_back == 0 {
            return invalid("years_back", 0.0, "must be at least 1");
        }
        if !(params.alpha > 0.0 && params.alpha < 1.0) {
            return invalid("alpha", params.alpha, "must be in (0, 1)");
        }
        if params.no_periods == 0 {
            return invalid("no_periods", 0.0, "must be at least 1");
        }
        let window = 2 * params.half_window + 1;
        if window >= WEEKS_PER_YEAR {
            return invalid(
                "half_window",
                params.half_window as f64,
                "windows must be shorter than a year",
            );
        }
        if params.no_periods > 1 {
            let gap = WEEKS_PER_YEAR - window;
            if gap < params.no_periods - 1 {
                return invalid(
                    "no_periods",
                    params.no_periods as f64,
                    "more periods than weeks between the windows",
                );
            }
        }
        if params.past_weeks_not_included >= WEEKS_PER_YEAR * params.years_back {
            return invalid(
                "past_weeks_not_included",
                params.past_weeks_not_included as f64,
                "must leave weeks to fit",
            );
        }
        if params.limit_weeks == 0 {
            return invalid("limit_weeks", 0.0, "must be at least 1");
        }
        if !(params.limit_cases >= 0.0 && params.limit_cases.is_finite()) {
            return invalid("limit_cases", params.limit_cases, "must be finite and ≥ 0");
        }
        if !params.weights_threshold.is_finite() {
            return invalid(
                "weights_threshold",
                params.weights_threshold,
                "must be finite",
            );
        }
        if params.p_threshold_trend.is_nan() {
            return invalid("p_threshold_trend", f64::NAN, "must be a number");
        }
        Ok(Farrington {
            params: *params,
            z: normal_quantile(1.0 - params.alpha),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &FarringtonParams {
        &self.params
    }

    /// The first judgeable week index (0-based): 52·b + w, the package's default `range`.
    pub fn first_index(&self) -> usize {
        WEEKS_PER_YEAR * self.params.years_back + self.params.half_window
    }

    /// Weeks of history a judgement reads, t0 included.
    pub fn history_weeks(&self) -> usize {
        self.first_index() + 1
    }

    /// Judges week `t` of `weekly` (index 0 = the first week; counts finite and ≥ 0).
    /// `None` before [`Farrington::first_index`] or past the end of the series.
    pub fn judge(&self, weekly: &[f64], t: usize) -> Option<FarringtonOutcome> {
        if t < self.first_index() || t >= weekly.len() {
            return None;
        }
        let data = self.glm_data(weekly, t);
        let y0 = weekly[t];
        let Some(model) = self.final_model(&data) else {
            return Some(FarringtonOutcome {
                judgement: Judgement {
                    observed: y0,
                    expected: f64::NAN,
                    upper_bound: f64::NAN,
                    statistic: f64::NAN,
                    alarm: None,
                },
                trend: false,
                dispersion: f64::NAN,
                p_value: f64::NAN,
            });
        };
        let bound = self.threshold(&model, y0);
        let from = t + 1 - self.params.limit_weeks.min(t + 1);
        let recent: f64 = weekly[from..=t].iter().sum();
        let enough_cases = recent >= self.params.limit_cases;
        let score = if enough_cases { bound.score } else { f64::NAN };
        let alarm = !score.is_nan() && score > 1.0 && y0 != 0.0;
        let mu0 = match self.params.threshold {
            ThresholdMethod::Delta => model.fit,
            ThresholdMethod::NbPlugin | ThresholdMethod::Muan => model.fit.exp(),
        };
        let upper = if enough_cases { bound.upper } else { f64::NAN };
        Some(FarringtonOutcome {
            judgement: Judgement {
                observed: y0,
                expected: if upper.is_nan() { f64::NAN } else { mu0 },
                upper_bound: upper,
                statistic: bound.score,
                alarm: Some(alarm),
            },
            trend: model.trend,
            dispersion: model.phi,
            p_value: bound.p_value,
        })
    }

    /// Judges every week from [`Farrington::first_index`] on (the package's default range).
    pub fn judge_series(&self, weekly: &[f64]) -> Vec<Option<FarringtonOutcome>> {
        (0..weekly.len()).map(|t| self.judge(weekly, t)).collect()
    }

    /// `algo.farrington.data.glm` with `blocks`: the weeks of the fit, their block level and
    /// their time (weeks since the first of them).
    fn glm_data(&self, weekly: &[f64], t0: usize) -> GlmData {
        let p = self.params.no_periods;
        let w = self.params.half_window;
        let b = self.params.years_back;
        // Factor level per week index (0 = not used), as `blocks` assigns them.
        let first = t0 - WEEKS_PER_YEAR * b - w;
        let mut level = vec![0usize; t0 + 1 - first];
        let at = |i: usize| i - first;
        for i in t0 - w..=t0 {
            level[at(i)] = p;
        }
        for year in 1..=b {
            let reference = t0 - WEEKS_PER_YEAR * year;
            let later = t0 - WEEKS_PER_YEAR * (year - 1);
            for i in reference - w..=reference + w {
                level[at(i)] = p;
            }
            if p != 1 {
                // Weeks between this window and the next one, in p − 1 blocks of near-equal
                // length, the remainder added to the first blocks.
                let period = later - 2 * w - 1 - reference;
                let (length, rest) = (period / (p - 1), period % (p - 1));
                let mut start = reference + w + 1;
                for block in 1..p {
                    let len = length + usize::from(block <= rest);
                    for i in start..start + len {
                        level[at(i)] = block;
                    }
                    start += len;
                }
            }
        }
        // pastWeeksNotIncluded: t0 − that … t0 out of the fit.
        let cut = t0.saturating_sub(self.params.past_weeks_not_included);
        let mut data = GlmData::default();
        let mut first_used = None;
        for i in first..=t0 {
            if i >= cut || level[at(i)] == 0 {
                continue;
            }
            let origin = *first_used.get_or_insert(i);
            data.y.push(weekly[i]);
            data.time.push((i - origin) as f64);
            data.raw_level.push(level[at(i)]);
        }
        data.now_time = first_used.map_or(0.0, |origin| (t0 - origin) as f64);
        data.now_raw_level = p;
        data.index_levels();
        data
    }

    /// `algo.farrington.glm`: the fit with the trend rule, then the prediction at t0.
    fn final_model(&self, data: &GlmData) -> Option<FinalModel> {
        if data.y.is_empty() {
            return None;
        }
        let mut model = self.fit_flexible(data, self.params.trend)?;
        let mut trend = false;
        if model.has_trend {
            let prediction = model.predict(data, true);
            let significant = model.trend_p_value() < self.params.p_threshold_trend;
            let at_least_three_years = self.params.years_back >= 3;
            let max_response = data.y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let no_extrapolation = prediction.fit <= max_response;
            trend = at_least_three_years && significant && no_extrapolation;
            if !trend {
                model = self.fit_flexible(data, false)?;
            }
        }
        let response = matches!(self.params.threshold, ThresholdMethod::Delta);
        let prediction = model.predict(data, response);
        Some(FinalModel {
            fit: prediction.fit,
            se_fit: prediction.se_fit,
            phi: model.phi,
            trend,
        })
    }

    /// `algo.farrington.fitGLM.flexible`: fit (falling back to no trend when it does not
    /// converge), floored dispersion, re-weighting and refit. `None` when no model converges.
    fn fit_flexible(&self, data: &GlmData, with_trend: bool) -> Option<Fitted> {
        let mut design = Design::new(data, with_trend);
        let mut fit = irls(&design, data, None);
        if !fit.converged {
            if with_trend {
                design = Design::new(data, false);
                fit = irls(&design, data, None);
            }
            if !fit.converged {
                return None;
            }
        }
        let mut phi = fit.dispersion.max(1.0);
        if phi.is_nan() {
            return None;
        }
        let mut summary_dispersion = fit.dispersion;
        if self.params.reweight {
            let residuals = anscombe_residuals(&fit, &design, data, phi);
            let weights = assign_weights(&residuals, self.params.weights_threshold)?;
            // The package does not check the convergence of the re-weighted fit.
            fit = irls(&design, data, Some(&weights));
            phi = fit.dispersion.max(1.0);
            if phi.is_nan() {
                return None;
            }
            // The package then stores ω in the model's `$weights`, where `summary.glm` reads
            // the working weights: every later summary (the trend's t-test, the prediction's
            // standard error) takes Σ ω ((y − μ)/μ)² / (n − p) as its dispersion. Mirrored.
            summary_dispersion = (0..data.y.len())
                .map(|i| {
                    let r = (data.y[i] - fit.mu[i]) / fit.mu[i];
                    weights[i] * r * r
                })
                .sum::<f64>()
                / fit.df_residual;
        }
        Some(Fitted {
            has_trend: design.trend,
            design,
            fit,
            phi,
            summary_dispersion,
        })
    }

    /// The package's threshold functions.
    fn threshold(&self, model: &FinalModel, y: f64) -> Bound {
        match self.params.threshold {
            ThresholdMethod::Delta => delta_threshold(
                model.fit,
                model.se_fit,
                model.phi,
                self.params.power_transform,
                self.z,
                y,
            ),
            ThresholdMethod::NbPlugin | ThresholdMethod::Muan => {
                let eta0 = model.fit;
                let mean = match self.params.threshold {
                    ThresholdMethod::NbPlugin => eta0.exp(),
                    _ => (eta0 + self.z * model.se_fit).exp(),
                };
                nb_threshold(eta0, mean, model.phi, self.params.alpha, y)
            }
        }
    }
}

/// What the fit sees: the weeks used, their time and factor level.
#[derive(Debug, Default)]
struct GlmData {
    y: Vec<f64>,
    time: Vec<f64>,
    /// `blocks`' level per week (1..=p).
    raw_level: Vec<usize>,
    /// Index of the level among the levels present (0 = the lowest, the reference).
    level: Vec<usize>,
    /// Levels present, sorted (`as.factor` on numbers).
    levels: Vec<usize>,
    now_time: f64,
    now_raw_level: usize,
}

impl GlmData {
    fn index_levels(&mut self) {
        let mut levels = self.raw_level.clone();
        levels.sort_unstable();
        levels.dedup();
        self.level = self
            .raw_level
            .iter()
            .map(|l| levels.binary_search(l).unwrap_or(0))
            .collect();
        self.levels = levels;
    }
}

/// The design `response ~ 1 [+ wtime] [+ seasgroups]` (treatment contrasts against the
/// lowest level). Columns: intercept, the trend (centred, which leaves every fitted value
/// and test unchanged), then one indicator per level after the first.
#[derive(Debug, Clone)]
struct Design {
    trend: bool,
    center: f64,
    levels: usize,
    columns: usize,
}

impl Design {
    fn new(data: &GlmData, trend: bool) -> Self {
        let n = data.time.len().max(1) as f64;
        let center = if trend {
            data.time.iter().sum::<f64>() / n
        } else {
            0.0
        };
        let levels = data.levels.len().max(1);
        Design {
            trend,
            center,
            levels,
            columns: 1 + usize::from(trend) + levels - 1,
        }
    }

    /// Column of level `level` (≥ 1).
    fn level_column(&self, level: usize) -> usize {
        usize::from(self.trend) + level
    }

    /// Writes the design row of (time, level index) into `row` (`columns` long).
    fn row(&self, time: f64, level: Option<usize>, row: &mut [f64]) {
        row.iter_mut().for_each(|v| *v = 0.0);
        row[0] = 1.0;
        if self.trend {
            row[1] = time - self.center;
        }
        if let Some(level) = level.filter(|&l| l > 0 && l < self.levels) {
            row[self.level_column(level)] = 1.0;
        }
    }

    fn eta(&self, beta: &[f64], time: f64, level: usize) -> f64 {
        let mut eta = beta[0];
        if self.trend {
            eta += beta[1] * (time - self.center);
        }
        if level > 0 {
            eta += beta[self.level_column(level)];
        }
        eta
    }
}

/// A fitted GLM, as `glm.fit` leaves it.
#[derive(Debug, Clone)]
struct GlmFit {
    beta: Vec<f64>,
    /// Fitted means from the final coefficients (floored at ε).
    mu: Vec<f64>,
    /// Working weights from the start of the last iteration (`glm`'s `$weights`).
    working_weights: Vec<f64>,
    /// (XᵀWX)⁻¹ with those weights (`summary.glm`'s `cov.unscaled`), p×p row-major.
    cov_unscaled: Vec<f64>,
    /// The unfloored Pearson dispersion (`summary.glm`'s `dispersion`).
    dispersion: f64,
    /// Residual degrees of freedom n − p.
    df_residual: f64,
    converged: bool,
}

/// The Poisson deviance with prior weights (`quasipoisson()$dev.resids`).
fn deviance(y: &[f64], mu: &[f64], prior: Option<&[f64]>) -> f64 {
    let mut sum = 0.0;
    for i in 0..y.len() {
        let wt = prior.map_or(1.0, |p| p[i]);
        sum += if y[i] > 0.0 {
            wt * (y[i] * (y[i] / mu[i]).ln() - (y[i] - mu[i]))
        } else {
            mu[i] * wt
        };
    }
    2.0 * sum
}

fn link_inverse(eta: f64) -> f64 {
    eta.exp().max(DOUBLE_EPS)
}

/// `glm.fit` for the quasi-Poisson with log link, iterate for iterate: start at μ = y + 0.1,
/// weighted least squares on the working response, stop when the relative deviance change
/// falls below 1e-8 or after 25 iterations (then `converged` is false), halve the step when
/// the deviance is not finite. The normal equations are accumulated per factor level (the
/// design has at most the intercept, the trend and indicators), so an iteration costs O(n)
/// plus a Cholesky of p×p.
fn irls(design: &Design, data: &GlmData, prior: Option<&[f64]>) -> GlmFit {
    let n = data.y.len();
    let p = design.columns;
    let y = &data.y;
    let mut eta: Vec<f64> = y.iter().map(|&v| (v + 0.1).ln()).collect();
    let mut mu: Vec<f64> = eta.iter().map(|&e| link_inverse(e)).collect();
    let mut dev_old = deviance(y, &mu, prior);
    let mut beta = vec![0.0; p];
    let mut beta_old: Option<Vec<f64>> = None;
    let mut working = vec![0.0; n];
    let mut converged = false;
    let mut matrix = vec![0.0; p * p];
    let mut rhs = vec![0.0; p];
    let mut factor_ok = false;
    // Sums per level: w, w·t, w·t², w·z, w·t·z.
    let levels = design.levels;
    let mut sums = vec![[0.0f64; 5]; levels];
    for _ in 0..GLM_MAX_ITERATIONS {
        sums.iter_mut().for_each(|s| *s = [0.0; 5]);
        for i in 0..n {
            let mu_eta = link_inverse(eta[i]);
            let z = eta[i] + (y[i] - mu[i]) / mu_eta;
            // weights · (dμ/dη)² / V(μ) with V(μ) = μ.
            let w = prior.map_or(1.0, |p| p[i]) * mu_eta * mu_eta / mu[i];
            working[i] = w;
            let t = if design.trend {
                data.time[i] - design.center
            } else {
                0.0
            };
            let s = &mut sums[data.level[i].min(levels - 1)];
            s[0] += w;
            s[1] += w * t;
            s[2] += w * t * t;
            s[3] += w * z;
            s[4] += w * t * z;
        }
        normal_equations(design, &sums, &mut matrix, &mut rhs);
        let Some(solution) = cholesky_solve(&mut matrix, &rhs, p) else {
            factor_ok = false;
            break;
        };
        factor_ok = true;
        let mut candidate = solution;
        let mut halvings = 0;
        let dev = loop {
            for i in 0..n {
                eta[i] = design.eta(&candidate, data.time[i], data.level[i]);
                mu[i] = link_inverse(eta[i]);
            }
            let dev = deviance(y, &mu, prior);
            if dev.is_finite() && mu.iter().all(|m| m.is_finite()) {
                break Some(dev);
            }
            let Some(old) = &beta_old else {
                break None;
            };
            halvings += 1;
            if halvings > GLM_MAX_ITERATIONS {
                break None;
            }
            for (c, o) in candidate.iter_mut().zip(old) {
                *c = (*c + o) / 2.0;
            }
        };
        beta = candidate;
        let Some(dev) = dev else {
            break;
        };
        if (dev - dev_old).abs() / (dev.abs() + 0.1) < GLM_EPSILON {
            converged = true;
            break;
        }
        dev_old = dev;
        beta_old = Some(beta.clone());
    }
    // summary.glm: cov.unscaled from the last weighted fit, the Pearson dispersion from its
    // working weights and the final working residuals (y − μ)/μ.
    let cov_unscaled = if factor_ok {
        cholesky_inverse(&matrix, p)
    } else {
        vec![f64::NAN; p * p]
    };
    let df_residual = n as f64 - p as f64;
    let pearson: f64 = (0..n)
        .filter(|&i| working[i] > 0.0)
        .map(|i| {
            let r = (y[i] - mu[i]) / link_inverse(eta[i]);
            working[i] * r * r
        })
        .sum();
    let dispersion = if df_residual > 0.0 {
        pearson / df_residual
    } else {
        f64::NAN
    };
    GlmFit {
        beta,
        mu,
        working_weights: working,
        cov_unscaled,
        dispersion,
        df_residual,
        converged: converged && factor_ok,
    }
}

/// XᵀWX (lower triangle) and XᵀWz from the per-level sums.
fn normal_equations(design: &Design, sums: &[[f64; 5]], matrix: &mut [f64], rhs: &mut [f64]) {
    let p = design.columns;
    matrix.iter_mut().for_each(|v| *v = 0.0);
    rhs.iter_mut().for_each(|v| *v = 0.0);
    for (level, s) in sums.iter().enumerate() {
        matrix[0] += s[0];
        rhs[0] += s[3];
        if design.trend {
            matrix[p] += s[1];
            matrix[p + 1] += s[2];
            rhs[1] += s[4];
        }
        if level > 0 {
            let c = design.level_column(level);
            matrix[c * p] += s[0];
            if design.trend {
                matrix[c * p + 1] += s[1];
            }
            matrix[c * p + c] += s[0];
            rhs[c] += s[3];
        }
    }
}

/// Cholesky A = LLᵀ in place (lower triangle) and the solution of A x = b; `None` when A is
/// not numerically positive definite.
fn cholesky_solve(a: &mut [f64], b: &[f64], p: usize) -> Option<Vec<f64>> {
    for j in 0..p {
        let mut diag = a[j * p + j];
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        if diag.is_nan() || diag <= 1e-300 {
            return None;
        }
        let diag = diag.sqrt();
        a[j * p + j] = diag;
        for i in j + 1..p {
            let mut v = a[i * p + j];
            for k in 0..j {
                v -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = v / diag;
        }
    }
    let mut x = b.to_vec();
    for i in 0..p {
        for k in 0..i {
            x[i] -= a[i * p + k] * x[k];
        }
        x[i] /= a[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            x[i] -= a[k * p + i] * x[k];
        }
        x[i] /= a[i * p + i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// (LLᵀ)⁻¹ from the factor L (lower triangle of `l`), full p×p row-major.
fn cholesky_inverse(l: &[f64], p: usize) -> Vec<f64> {
    // L⁻¹ by forward substitution, then (L⁻¹)ᵀ L⁻¹.
    let mut inv = vec![0.0; p * p];
    for col in 0..p {
        for i in col..p {
            let mut v = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                v -= l[i * p + k] * inv[k * p + col];
            }
            inv[i * p + col] = v / l[i * p + i];
        }
    }
    let mut out = vec![0.0; p * p];
    for a in 0..p {
        for b in 0..=a {
            let v: f64 = (a.max(b)..p).map(|k| inv[k * p + a] * inv[k * p + b]).sum();
            out[a * p + b] = v;
            out[b * p + a] = v;
        }
    }
    out
}

/// xᵀ C x for a symmetric p×p C.
fn quadratic_form(c: &[f64], x: &[f64]) -> f64 {
    let p = x.len();
    let mut sum = 0.0;
    for a in 0..p {
        if x[a] == 0.0 {
            continue;
        }
        for b in 0..p {
            sum += x[a] * c[a * p + b] * x[b];
        }
    }
    sum
}

/// `anscombe.residuals`: (3/2)(y^{2/3} μ^{−1/6} − μ^{1/2}) / sqrt(φ (1 − h)), h the hat values
/// of the weighted fit (`hatvalues`, with its rounding of h to 1 above 1 − 10ε).
fn anscombe_residuals(fit: &GlmFit, design: &Design, data: &GlmData, phi: f64) -> Vec<f64> {
    let p = design.columns;
    let mut row = vec![0.0; p];
    (0..data.y.len())
        .map(|i| {
            design.row(data.time[i], Some(data.level[i]), &mut row);
            let mut h = fit.working_weights[i] * quadratic_form(&fit.cov_unscaled, &row);
            if h > 1.0 - 10.0 * f64::EPSILON {
                h = 1.0;
            }
            let (y, mu) = (data.y[i], fit.mu[i]);
            let a = 1.5 * (y.powf(2.0 / 3.0) * mu.powf(-1.0 / 6.0) - mu.sqrt());
            a / (phi * (1.0 - h)).sqrt()
        })
        .collect()
}

/// `algo.farrington.assign.weights`: ω = γ s⁻² above the threshold, γ otherwise, with γ such
/// that Σω = n. `None` when a residual is not a number (the package's glm would fail on NA
/// weights).
fn assign_weights(residuals: &[f64], threshold: f64) -> Option<Vec<f64>> {
    if residuals.iter().any(|s| s.is_nan()) {
        return None;
    }
    let denominator: f64 = residuals
        .iter()
        .map(|&s| if s > threshold { s.powi(-2) } else { 1.0 })
        .sum();
    let gamma = residuals.len() as f64 / denominator;
    Some(
        residuals
            .iter()
            .map(|&s| {
                if s > threshold {
                    gamma * s.powi(-2)
                } else {
                    gamma
                }
            })
            .collect(),
    )
}

/// A fit from [`Farrington::fit_flexible`].
#[derive(Debug, Clone)]
struct Fitted {
    has_trend: bool,
    design: Design,
    fit: GlmFit,
    /// The floored dispersion (`model$phi`).
    phi: f64,
    /// What `summary.glm` of the returned model takes as dispersion (see `fit_flexible`).
    summary_dispersion: f64,
}

struct Prediction {
    fit: f64,
    se_fit: f64,
}

impl Fitted {
    /// `predict.glm(..., se.fit = TRUE)` at t0, level p: on the response scale
    /// (μ̂0, μ̂0·se(η̂0)) or the link scale (η̂0, se(η̂0)). The package passes its floored φ as a
    /// column of `newdata`, which `predict.glm` ignores: the standard error uses the
    /// summary dispersion, unfloored (and after re-weighting the quirky one of
    /// `fit_flexible`; both mirrored).
    fn predict(&self, data: &GlmData, response: bool) -> Prediction {
        let p = self.design.columns;
        let mut row = vec![0.0; p];
        let level = data.levels.binary_search(&data.now_raw_level).ok();
        self.design.row(data.now_time, level, &mut row);
        let eta: f64 = row.iter().zip(&self.fit.beta).map(|(x, b)| x * b).sum();
        let se_eta =
            (self.summary_dispersion * quadratic_form(&self.fit.cov_unscaled, &row)).sqrt();
        if response {
            let mu = link_inverse(eta);
            Prediction {
                fit: mu,
                se_fit: se_eta * mu,
            }
        } else {
            Prediction {
                fit: eta,
                se_fit: se_eta,
            }
        }
    }

    /// `summary.glm`'s p-value of the trend: two-sided t-test with the unfloored dispersion
    /// and n − p degrees of freedom.
    fn trend_p_value(&self) -> f64 {
        let p = self.design.columns;
        let se = (self.summary_dispersion * self.fit.cov_unscaled[p + 1]).sqrt();
        let t = self.fit.beta[1] / se;
        2.0 * student_t_lower(-t.abs(), self.fit.df_residual)
    }
}

struct FinalModel {
    /// μ̂0 (response) or η̂0 (link), as the threshold method wants it.
    fit: f64,
    se_fit: f64,
    phi: f64,
    trend: bool,
}

struct Bound {
    upper: f64,
    score: f64,
    p_value: f64,
}

/// `algo.farrington.threshold.farrington`: U = (μ0^e + z·se)^{1/e} with
/// se² = (the transform's delta-method variance) of φ + se(μ̂0)²/μ̂0.
fn delta_threshold(
    mu0: f64,
    se_fit: f64,
    phi: f64,
    transform: PowerTransform,
    z: f64,
    y: f64,
) -> Bound {
    let tau = phi + se_fit * se_fit / mu0;
    let (se, exponent) = match transform {
        PowerTransform::None => ((mu0 * tau).sqrt(), 1.0),
        PowerTransform::Half => ((0.25 * tau).sqrt(), 0.5),
        PowerTransform::TwoThirds => ((4.0 / 9.0 * mu0.powf(1.0 / 3.0) * tau).sqrt(), 2.0 / 3.0),
    };
    let centre = mu0.powf(exponent);
    let lower = (centre - z * se).powf(1.0 / exponent);
    let upper = (centre + z * se).powf(1.0 / exponent);
    // R sorts the two (NaN first); the larger is the upper bound.
    let upper = if lower.is_nan() {
        upper
    } else {
        upper.max(lower)
    };
    let p_value = normal_upper_tail((y.powf(exponent) - centre) / se);
    let score = if upper.is_nan() {
        f64::NAN
    } else {
        (y - mu0) / (upper - mu0)
    };
    Bound {
        upper,
        score,
        p_value,
    }
}

/// `algo.farrington.threshold.noufaily`: U = qNB(1 − α; size μ/(φ − 1), prob 1/φ) for φ > 1,
/// qPois(1 − α; μ) otherwise; the score against η̂0 (the package's quirk).
fn nb_threshold(eta0: f64, mean: f64, phi: f64, alpha: f64, y: f64) -> Bound {
    if mean == f64::INFINITY || mean.is_nan() {
        return Bound {
            upper: f64::NAN,
            score: f64::NAN,
            p_value: f64::NAN,
        };
    }
    let distribution = if phi > 1.0 {
        Discrete::NegativeBinomial {
            size: mean / (phi - 1.0),
            prob: 1.0 / phi,
        }
    } else {
        Discrete::Poisson { mean }
    };
    let upper = distribution.quantile(1.0 - alpha);
    let p_value = distribution.upper_tail(y);
    Bound {
        upper,
        score: (y - eta0) / (upper - eta0),
        p_value,
    }
}

/// The two count distributions of the NB threshold.
#[derive(Debug, Clone, Copy)]
enum Discrete {
    Poisson { mean: f64 },
    NegativeBinomial { size: f64, prob: f64 },
}

impl Discrete {
    /// ln P(X = 0) and the log ratio P(X = x + 1)/P(X = x).
    fn log_pmf0(&self) -> f64 {
        match *self {
            Discrete::Poisson { mean } => -mean,
            Discrete::NegativeBinomial { size, prob } => size * prob.ln(),
        }
    }

    fn log_ratio(&self, x: f64) -> f64 {
        match *self {
            Discrete::Poisson { mean } => mean.ln() - (x + 1.0).ln(),
            Discrete::NegativeBinomial { size, prob } => {
                (x + size).ln() - (x + 1.0).ln() + (-prob).ln_1p()
            }
        }
    }

    fn mean(&self) -> f64 {
        match *self {
            Discrete::Poisson { mean } => mean,
            Discrete::NegativeBinomial { size, prob } => size * (1.0 - prob) / prob,
        }
    }

    /// R's `qpois` / `qnbinom` (lower tail): the smallest x with P(X ≤ x) ≥ q, q fuzzed by
    /// (1 − 64ε) as R does for left continuity. The pmf is summed from 0 in log space, so
    /// large means do not underflow P(X = 0).
    fn quantile(&self, q: f64) -> f64 {
        if self.mean() == 0.0 {
            return 0.0;
        }
        let target = q * (1.0 - 64.0 * f64::EPSILON);
        let mut log_pmf = self.log_pmf0();
        let mut cdf = log_pmf.exp();
        let mut x = 0.0;
        // Far beyond any bound a weekly count needs; only guards against a runaway loop.
        let limit = 1e7_f64.max(100.0 * self.mean());
        while cdf < target && x < limit {
            log_pmf += self.log_ratio(x);
            x += 1.0;
            cdf += log_pmf.exp();
        }
        x
    }

    /// P(X ≥ y) = 1 − P(X ≤ y − 1) (R's `ppois(y − 1, lower.tail = FALSE)`).
    fn upper_tail(&self, y: f64) -> f64 {
        if y <= 0.0 {
            return 1.0;
        }
        let mut log_pmf = self.log_pmf0();
        let mut cdf = log_pmf.exp();
        let mut x = 0.0;
        while x + 1.0 < y {
            log_pmf += self.log_ratio(x);
            x += 1.0;
            cdf += log_pmf.exp();
        }
        (1.0 - cdf).max(0.0)
    }
}

/// P(Z > z) for the standard normal.
fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// erfc by the continued-fraction-free Chebyshev fit of Numerical Recipes (erfcc, relative
/// error below 1.2e-7): only the reported p-value uses it, never a bound or an alarm.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom (t ≤ 0 here): ½ I_{df/(df+t²)}(df/2, ½).
fn student_t_lower(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    let x = df / (df + t * t);
    let half = 0.5 * regularized_beta(x, df / 2.0, 0.5);
    if t <= 0.0 { half } else { 1.0 - half }
}

/// I_x(a, b) by the continued fraction (Lentz), with the symmetry for x beyond the mean.
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms; relative error about 1e-15).
#[allow(clippy::excessive_precision)]
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_93,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_13,
        -176.615_029_162_140_59,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_571_6e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
    }

    /// Fit data of the given counts at times 0, 1, …, with the given levels (1-based).
    fn data(y: &[f64], levels: &[usize]) -> GlmData {
        let mut data = GlmData {
            y: y.to_vec(),
            time: (0..y.len()).map(|i| i as f64).collect(),
            raw_level: levels.to_vec(),
            now_time: y.len() as f64,
            now_raw_level: *levels.iter().max().unwrap_or(&1),
            ..GlmData::default()
        };
        data.index_levels();
        data
    }

    #[test]
    fn intercept_only_fit_is_the_mean_with_the_pearson_dispersion() {
        let y = [3.0, 7.0, 1.0, 4.0, 0.0, 9.0, 5.0];
        let d = data(&y, &[1; 7]);
        let design = Design::new(&d, false);
        let fit = irls(&design, &d, None);
        assert!(fit.converged);
        let mean = y.iter().sum::<f64>() / 7.0;
        assert!(close(fit.beta[0], mean.ln(), 1e-9), "{}", fit.beta[0]);
        // By hand: Σ (y − ȳ)² / ȳ / (n − 1).
        let pearson = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / mean / 6.0;
        // R takes the working weights from the start of the last iteration (a step short
        // of the MLE, within its deviance tolerance), and so do we.
        assert!(
            close(fit.dispersion, pearson, 1e-4),
            "{} {pearson}",
            fit.dispersion
        );
        // Var(β̂0) = 1/(n ȳ) for the Poisson.
        assert!(close(fit.cov_unscaled[0], 1.0 / (7.0 * mean), 1e-4));
    }

    #[test]
    fn factor_levels_fit_their_own_means() {
        let y = [2.0, 4.0, 3.0, 10.0, 12.0, 14.0, 1.0, 0.0, 2.0];
        let levels = [1, 1, 1, 2, 2, 2, 3, 3, 3];
        let d = data(&y, &levels);
        let design = Design::new(&d, false);
        let fit = irls(&design, &d, None);
        assert!(fit.converged);
        let (m1, m2, m3) = (3.0f64, 12.0f64, 1.0f64);
        assert!(close(fit.beta[0], m1.ln(), 1e-9));
        assert!(close(fit.beta[1], (m2 / m1).ln(), 1e-9));
        assert!(close(fit.beta[2], (m3 / m1).ln(), 1e-8));
        // Pearson by hand over the three groups, n − p = 6.
        let pearson: f64 = y
            .iter()
            .zip(levels)
            .map(|(v, l)| {
                let m = [m1, m2, m3][l - 1];
                (v - m).powi(2) / m
            })
            .sum::<f64>()
            / 6.0;
        assert!(
            close(fit.dispersion, pearson, 1e-4),
            "{} {pearson}",
            fit.dispersion
        );
    }

    #[test]
    fn trend_fit_matches_r_glm_and_solves_the_score_equations() {
        // R 4.2.2: glm(y ~ t, family = quasipoisson) on t = 1..8 gives (Intercept)
        // 0.14924410129608273, t 0.15637487369363837, dispersion 0.88940794618785013.
        let y = [2.0, 0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 3.0];
        let d = data(&y, &[1; 8]);
        let design = Design::new(&d, true);
        let fit = irls(&design, &d, None);
        assert!(fit.converged);
        let slope = fit.beta[1];
        // Our time is t − 1 centred at 3.5: intercept at t = 0 is β0 − slope·(3.5 + 1).
        let intercept = fit.beta[0] - slope * (design.center + 1.0);
        assert!(close(slope, 0.156_374_873_693_638_37, 1e-7), "{slope}");
        assert!(
            close(intercept, 0.149_244_101_296_082_73, 1e-6),
            "{intercept}"
        );
        assert!(close(fit.dispersion, 0.889_407_946_187_850_1, 1e-6));
        // The MLE: Xᵀ(y − μ) = 0.
        let score0: f64 = (0..8).map(|i| y[i] - fit.mu[i]).sum();
        let score1: f64 = (0..8).map(|i| (y[i] - fit.mu[i]) * i as f64).sum();
        assert!(
            score0.abs() < 1e-6 && score1.abs() < 1e-6,
            "{score0} {score1}"
        );
    }

    #[test]
    fn weights_sum_to_n_and_shrink_only_large_residuals() {
        let residuals = [0.5, -1.0, 3.0, 0.2, 6.0];
        let omega = assign_weights(&residuals, 2.58).expect("numbers");
        let n = residuals.len() as f64;
        assert!(close(omega.iter().sum::<f64>(), n, 1e-12));
        // γ = n / (3 + 1/9 + 1/36) by hand.
        let gamma = n / (3.0 + 1.0 / 9.0 + 1.0 / 36.0);
        assert!(close(omega[0], gamma, 1e-12));
        assert!(close(omega[2], gamma / 9.0, 1e-12));
        assert!(close(omega[4], gamma / 36.0, 1e-12));
        assert!(assign_weights(&[1.0, f64::NAN], 1.0).is_none());
    }

    #[test]
    fn reweighting_discounts_a_past_outbreak_in_the_window() {
        // A flat series with an outbreak in last year's reference window.
        let mut weekly = vec![10.0; 300];
        for (i, w) in weekly.iter_mut().enumerate() {
            *w += [0.0, 2.0, -1.0, 1.0, -2.0][i % 5];
        }
        let t0 = 290;
        for count in &mut weekly[t0 - 52 - 1..=t0 - 52 + 1] {
            *count = 60.0;
        }
        let flat = FarringtonParams {
            trend: false,
            ..FarringtonParams::original(0.05)
        };
        let with = Farrington::try_new(&flat).expect("valid");
        let without = Farrington::try_new(&FarringtonParams {
            reweight: false,
            ..flat
        })
        .expect("valid");
        let a = with.judge(&weekly, t0).expect("judged").judgement;
        let b = without.judge(&weekly, t0).expect("judged").judgement;
        assert!(a.expected < b.expected, "{} vs {}", a.expected, b.expected);
        assert!(a.upper_bound < b.upper_bound);
        // Down-weighted, the outbreak barely moves the expectation off the usual 10.
        assert!((a.expected - 10.0).abs() < 1.5, "{}", a.expected);
        // The Anscombe residuals of the outbreak weeks are the large ones.
        let data = with.glm_data(&weekly, t0);
        let design = Design::new(&data, false);
        let fit = irls(&design, &data, None);
        let s = anscombe_residuals(&fit, &design, &data, fit.dispersion.max(1.0));
        let (big, small): (Vec<_>, Vec<_>) = s.iter().zip(&data.y).partition(|(_, y)| **y == 60.0);
        assert!(big.iter().all(|(s, _)| **s > 1.0));
        assert!(small.iter().all(|(s, _)| **s < 1.0));
    }

    #[test]
    fn delta_threshold_by_hand() {
        let (mu0, se, phi, z) = (4.0_f64, 0.8_f64, 1.5_f64, 1.644_853_626_951_472_2);
        let bound = delta_threshold(mu0, se, phi, PowerTransform::TwoThirds, z, 9.0);
        let tau = phi + se * se / mu0;
        let expected =
            (mu0.powf(2.0 / 3.0) + z * (4.0 / 9.0 * mu0.powf(1.0 / 3.0) * tau).sqrt()).powf(1.5);
        assert!(close(bound.upper, expected, 1e-14));
        assert!(close(bound.score, (9.0 - mu0) / (expected - mu0), 1e-14));
        let none = delta_threshold(mu0, se, phi, PowerTransform::None, z, 9.0);
        assert!(close(none.upper, mu0 + z * (mu0 * tau).sqrt(), 1e-14));
        let half = delta_threshold(mu0, se, phi, PowerTransform::Half, z, 9.0);
        assert!(close(
            half.upper,
            (2.0 + z * (tau / 4.0).sqrt()).powi(2),
            1e-14
        ));
    }

    #[test]
    fn nb_and_poisson_quantiles_are_rs() {
        // R: qpois(0.95, 2) = 5, qnbinom(0.95, 3, 0.4) = 11, qpois(0.99, 10.5) = 19,
        // qnbinom(0.99, size = 8, prob = 1/1.5) = 11.
        assert_eq!(Discrete::Poisson { mean: 2.0 }.quantile(0.95), 5.0);
        let nb = Discrete::NegativeBinomial {
            size: 3.0,
            prob: 0.4,
        };
        assert_eq!(nb.quantile(0.95), 11.0);
        assert_eq!(Discrete::Poisson { mean: 10.5 }.quantile(0.99), 19.0);
        let nb = Discrete::NegativeBinomial {
            size: 8.0,
            prob: 1.0 / 1.5,
        };
        assert_eq!(nb.quantile(0.99), 11.0);
        // φ = 1.5, μ = 4 through the threshold function.
        assert_eq!(nb_threshold(4f64.ln(), 4.0, 1.5, 0.01, 3.0).upper, 11.0);
        // A zero mean: the bound is 0; a huge one does not underflow P(X = 0).
        assert_eq!(Discrete::Poisson { mean: 0.0 }.quantile(0.95), 0.0);
        let q = Discrete::Poisson { mean: 2000.0 }.quantile(0.5);
        assert!((1995.0..=2005.0).contains(&q), "{q}");
    }

    #[test]
    fn student_t_matches_r() {
        // R: pt(-2.1, 17) = 0.025479923614567006.
        assert!(close(
            student_t_lower(-2.1, 17.0),
            0.025_479_923_614_567_006,
            1e-10
        ));
        assert!(close(student_t_lower(0.0, 5.0), 0.5, 1e-14));
    }

    #[test]
    fn no_history_is_not_judged() {
        let f = Farrington::try_new(&FarringtonParams::noufaily(0.05)).expect("valid");
        assert_eq!(f.first_index(), 52 * 5 + 3);
        let weekly = vec![3.0; 263];
        assert!(f.judge(&weekly, 262).is_none());
        assert!(f.judge(&weekly, 263).is_none(), "past the end");
        let weekly = vec![3.0; 264];
        assert!(f.judge(&weekly, 263).is_some());
    }

    #[test]
    fn zero_counts_as_the_package_judges_them() {
        // R 1.20.3 on 300 zero weeks: the Noufaily fit does not converge in 25 iterations
        // (alarm NA); the original one converges, and fewer than 5 cases in 4 weeks leave
        // the bound NA and no alarm.
        let weekly = vec![0.0; 300];
        let noufaily = Farrington::try_new(&FarringtonParams::noufaily(0.05)).expect("valid");
        let verdict = noufaily.judge(&weekly, 280).expect("judged").judgement;
        assert_eq!(verdict.alarm, None);
        let original = Farrington::try_new(&FarringtonParams::original(0.05)).expect("valid");
        let verdict = original.judge(&weekly, 280).expect("judged").judgement;
        assert_eq!(verdict.alarm, Some(false));
        assert!(verdict.upper_bound.is_nan());
        // A burst after silence: enough cases, a bound near 0, an alarm.
        let mut weekly = vec![0.0; 300];
        weekly[100] = 1.0;
        weekly[200] = 1.0;
        weekly[280] = 6.0;
        let verdict = original.judge(&weekly, 280).expect("judged").judgement;
        assert_eq!(verdict.alarm, Some(true), "{verdict:?}");
        // The same burst spread thinner than limit54: no alarm.
        weekly[280] = 2.0;
        let verdict = original.judge(&weekly, 280).expect("judged").judgement;
        assert_eq!(verdict.alarm, Some(false));
        assert!(verdict.upper_bound.is_nan());
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = |params: FarringtonParams| Farrington::try_new(&params).is_err();
        let base = FarringtonParams::noufaily(0.05);
        assert!(bad(FarringtonParams { alpha: 0.0, ..base }));
        assert!(bad(FarringtonParams {
            years_back: 0,
            ..base
        }));
        assert!(bad(FarringtonParams {
            no_periods: 60,
            ..base
        }));
        assert!(bad(FarringtonParams {
            half_window: 30,
            ..base
        }));
        assert!(bad(FarringtonParams {
            past_weeks_not_included: 52 * 5,
            ..base
        }));
    }
}
