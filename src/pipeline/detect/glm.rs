//! The seasonal in-control mean μ0,t for the count CUSUM: a log-linear Poisson or
//! negative-binomial GLM, fitted by IRLS as `surveillance`'s `estimateGLRNbHook` does
//! (R `glm(..., poisson())` / `glm.nb`). Place: refitted per series when a model is due.
//! Input: a history of (day index, count); output: a [`SeasonalFit`] that predicts μ0,t for any
//! day. Fails only on invalid input or an empty history; short, all-zero or unfittable
//! histories fall back to a floored constant mean (see [`FitKind`]).

use serde::{Deserialize, Serialize};

use super::cusum::{CountFamily, FamilyKind};
use super::ears::DetectError;

fn default_harmonics() -> usize {
    1
}

fn default_period_days() -> f64 {
    365.0
}

/// The in-control model as written by a user (`deny_unknown_fields`):
///
/// ```text
/// log μ0,t = β0 [+ β1 t] + Σ_{s=1..S} (γ_s cos(2πst/P) + δ_s sin(2πst/P)) [+ day-of-week]
/// ```
///
/// The package's defaults are S = 1, no trend, P = the series frequency; no day-of-week
/// (that term is yujing's addition for daily data).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalSpec {
    /// S, the number of harmonics (0 = no seasonality).
    #[serde(default = "default_harmonics")]
    pub harmonics: usize,
    /// P, the seasonal period in days (time-index steps); default 365.
    #[serde(default = "default_period_days")]
    pub period_days: f64,
    /// Add a linear trend in t.
    #[serde(default)]
    pub trend: bool,
    /// Add a day-of-week effect: six indicators for `t mod 7` = 1..6 (treatment coding against
    /// residue 0, whatever weekday that is in the caller's day numbering).
    #[serde(default)]
    pub day_of_week: bool,
    /// Poisson, or negative binomial.
    #[serde(default)]
    pub family: FamilyKind,
    /// Negative binomial only: a fixed α, or `None` to estimate it by maximum likelihood as
    /// `glm.nb` does (α = 1/θ). Refused for the Poisson.
    #[serde(default)]
    pub alpha: Option<f64>,
}

impl Default for SeasonalSpec {
    fn default() -> Self {
        SeasonalSpec {
            harmonics: default_harmonics(),
            period_days: default_period_days(),
            trend: false,
            day_of_week: false,
            family: FamilyKind::Poisson,
            alpha: None,
        }
    }
}

/// How the dispersion is handled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Dispersion {
    /// Poisson (α = 0).
    Poisson,
    /// Negative binomial with this α (R: `glm(family = negative.binomial(1/α))`).
    Fixed(f64),
    /// Negative binomial with α estimated by maximum likelihood (R: `glm.nb`).
    Estimated,
}

/// A validated [`SeasonalSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeasonalModel {
    harmonics: usize,
    period_days: f64,
    trend: bool,
    day_of_week: bool,
    dispersion: Dispersion,
}

/// Why a fit is the floored constant mean rather than the GLM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FallbackReason {
    /// Every count in the history is zero: the GLM's MLE does not exist.
    AllZero,
    /// Fewer than 2·p days, or fewer non-zero days than the p coefficients.
    TooFewObservations,
    /// IRLS did not converge or met a singular weighted design.
    NotFitted,
}

/// Which model a [`SeasonalFit`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FitKind {
    /// The requested GLM, fitted by IRLS.
    Glm,
    /// The constant μ0 = max(ȳ, 1/(2n)): the history mean, floored at half an event over
    /// the n days (the Jeffreys-prior posterior mean of a Poisson rate with no events),
    /// so that a silent history still gives a positive, history-length-aware mean.
    MeanFallback(FallbackReason),
}

/// A fitted in-control model. The GLM's predictions are not floored (as in R): a weekday with
/// no events in the whole history gets a mean near 0. Serialisable, so a checkpoint can carry
/// it (check a deserialised one with [`SeasonalFit::is_consistent`] before use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalFit {
    model: SeasonalModel,
    kind: FitKind,
    /// Coefficients in the internal parametrisation (trend centred and scaled).
    beta: Vec<f64>,
    trend_center: f64,
    trend_scale: f64,
    family: CountFamily,
    iterations: usize,
}

impl SeasonalModel {
    /// Validates a specification: P finite and > 0; α only with the negative binomial, and then
    /// finite and > 0.
    pub fn try_new(spec: &SeasonalSpec) -> Result<Self, DetectError> {
        if !(spec.period_days > 0.0 && spec.period_days.is_finite()) {
            return Err(DetectError::InvalidParameter {
                name: "period_days",
                value: spec.period_days,
                reason: "must be finite and > 0",
            });
        }
        let dispersion = match (spec.family, spec.alpha) {
            (FamilyKind::Poisson, None) => Dispersion::Poisson,
            (FamilyKind::Poisson, Some(alpha)) => {
                return Err(DetectError::InvalidParameter {
                    name: "alpha",
                    value: alpha,
                    reason: "a Poisson model takes no dispersion",
                });
            }
            (FamilyKind::NegativeBinomial, None) => Dispersion::Estimated,
            (FamilyKind::NegativeBinomial, Some(alpha)) => {
                CountFamily::negative_binomial(alpha)?;
                Dispersion::Fixed(alpha)
            }
        };
        Ok(SeasonalModel {
            harmonics: spec.harmonics,
            period_days: spec.period_days,
            trend: spec.trend,
            day_of_week: spec.day_of_week,
            dispersion,
        })
    }

    /// The number of coefficients p.
    pub fn coefficient_count(&self) -> usize {
        1 + usize::from(self.trend) + 2 * self.harmonics + if self.day_of_week { 6 } else { 0 }
    }

    /// Fits the model to `counts[i]` observed on day `times[i]` (any integer day numbering;
    /// the package uses 1, 2, … for the training days). Counts must be finite and ≥ 0.
    pub fn fit(&self, times: &[i64], counts: &[f64]) -> Result<SeasonalFit, DetectError> {
        if times.len() != counts.len() {
            return Err(DetectError::LengthMismatch {
                left: "times",
                left_len: times.len(),
                right: "counts",
                right_len: counts.len(),
            });
        }
        if let Some(&bad) = counts.iter().find(|y| !(**y >= 0.0 && y.is_finite())) {
            return Err(DetectError::InvalidInput {
                name: "count",
                value: bad,
                reason: "must be finite and non-negative",
            });
        }
        if counts.is_empty() {
            return Err(DetectError::EmptyHistory);
        }
        let n = counts.len();
        let p = self.coefficient_count();
        if counts.iter().all(|&y| y == 0.0) {
            return Ok(self.fallback(counts, FallbackReason::AllZero));
        }
        let nonzero = counts.iter().filter(|&&y| y > 0.0).count();
        if n < 2 * p || nonzero < p {
            return Ok(self.fallback(counts, FallbackReason::TooFewObservations));
        }

        let (trend_center, trend_scale) = trend_scaling(times);
        let design = Design::new(self, times, trend_center, trend_scale);
        let fitted = match self.dispersion {
            Dispersion::Poisson => irls(&design, counts, 0.0, None).map(|f| (f, 0.0)),
            Dispersion::Fixed(alpha) => irls(&design, counts, alpha, None).map(|f| (f, alpha)),
            Dispersion::Estimated => fit_negative_binomial(&design, counts),
        };
        let Some((irls_fit, alpha)) = fitted else {
            return Ok(self.fallback(counts, FallbackReason::NotFitted));
        };
        Ok(SeasonalFit {
            model: *self,
            kind: FitKind::Glm,
            beta: irls_fit.beta,
            trend_center,
            trend_scale,
            family: family_of(alpha),
            iterations: irls_fit.iterations,
        })
    }

    fn fallback(&self, counts: &[f64], reason: FallbackReason) -> SeasonalFit {
        let n = counts.len() as f64;
        let mean = counts.iter().sum::<f64>() / n;
        let floored = mean.max(0.5 / n);
        let alpha = match self.dispersion {
            Dispersion::Poisson => 0.0,
            Dispersion::Fixed(alpha) => alpha,
            // Method of moments: Var = μ + αμ², clamped at the Poisson.
            Dispersion::Estimated if counts.len() > 1 && mean > 0.0 => {
                let var = counts.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / (n - 1.0);
                ((var - mean) / (mean * mean)).max(0.0)
            }
            Dispersion::Estimated => 0.0,
        };
        let mut beta = vec![0.0; self.coefficient_count()];
        beta[0] = floored.ln();
        SeasonalFit {
            model: *self,
            kind: FitKind::MeanFallback(reason),
            beta,
            trend_center: 0.0,
            trend_scale: 1.0,
            family: family_of(alpha),
            iterations: 0,
        }
    }
}

fn family_of(alpha: f64) -> CountFamily {
    if alpha > 0.0 {
        CountFamily::NegativeBinomial { alpha }
    } else {
        CountFamily::Poisson
    }
}

impl SeasonalFit {
    /// μ0,t for day `t` (in the numbering used for fitting). Extrapolates a trend without limit,
    /// as the package does.
    pub fn mean_at(&self, t: i64) -> f64 {
        let mut row = [0.0; MAX_COEFFICIENTS];
        let p = self.beta.len();
        if p > MAX_COEFFICIENTS {
            // Only very many harmonics get here; take the allocating path.
            let row = design_row_vec(&self.model, t, self.trend_center, self.trend_scale);
            return dot(&row, &self.beta).exp();
        }
        fill_design_row(
            &self.model,
            t,
            self.trend_center,
            self.trend_scale,
            &mut row[..p],
        );
        dot(&row[..p], &self.beta).exp()
    }

    /// Whether the coefficients fit the model's design (a stored fit read back from a
    /// checkpoint could be corrupt; [`SeasonalFit::mean_at`] would panic on a short one).
    pub fn is_consistent(&self) -> bool {
        self.beta.len() == self.model.coefficient_count()
            && self.beta.iter().all(|b| b.is_finite())
            && self.trend_scale.is_finite()
            && self.trend_scale > 0.0
            && self.trend_center.is_finite()
    }

    /// The model kind: the GLM, or the fallback and why.
    pub fn kind(&self) -> FitKind {
        self.kind
    }

    /// The fitted family: Poisson, or NB with the fixed or estimated α. An estimated α that
    /// runs off to 0 (no overdispersion; θ beyond 10⁸) comes back as the Poisson.
    pub fn family(&self) -> CountFamily {
        self.family
    }

    /// IRLS iterations of the final fit (0 for the fallback).
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The coefficients on the scale of the formula, in this order: intercept, trend (if
    /// any), then cos and sin for s = 1..S, then day-of-week residues 1..6 (if any).
    pub fn coefficients(&self) -> Vec<f64> {
        let mut out = self.beta.clone();
        if self.model.trend {
            let slope = self.beta[1] / self.trend_scale;
            out[0] = self.beta[0] - slope * self.trend_center;
            out[1] = slope;
        }
        out
    }
}

/// Design rows live on the stack up to this width (intercept, trend, 6 DOW, 16 harmonics).
const MAX_COEFFICIENTS: usize = 40;

/// Centre and scale for the trend column, so that XᵀWX stays well conditioned for day numbers
/// in the tens of thousands.
fn trend_scaling(times: &[i64]) -> (f64, f64) {
    let n = times.len() as f64;
    let center = times.iter().map(|&t| t as f64).sum::<f64>() / n;
    let spread = (times
        .iter()
        .map(|&t| (t as f64 - center).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    (center, if spread > 0.0 { spread } else { 1.0 })
}

fn fill_design_row(model: &SeasonalModel, t: i64, center: f64, scale: f64, row: &mut [f64]) {
    let tf = t as f64;
    let mut k = 0;
    row[k] = 1.0;
    k += 1;
    if model.trend {
        row[k] = (tf - center) / scale;
        k += 1;
    }
    for s in 1..=model.harmonics {
        let angle = 2.0 * std::f64::consts::PI * s as f64 * tf / model.period_days;
        row[k] = angle.cos();
        row[k + 1] = angle.sin();
        k += 2;
    }
    if model.day_of_week {
        let residue = t.rem_euclid(7) as usize;
        for level in 1..7 {
            row[k] = if residue == level { 1.0 } else { 0.0 };
            k += 1;
        }
    }
}

fn design_row_vec(model: &SeasonalModel, t: i64, center: f64, scale: f64) -> Vec<f64> {
    let mut row = vec![0.0; model.coefficient_count()];
    fill_design_row(model, t, center, scale, &mut row);
    row
}

/// The n×p design matrix, row-major.
struct Design {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
}

impl Design {
    fn new(model: &SeasonalModel, times: &[i64], center: f64, scale: f64) -> Self {
        let cols = model.coefficient_count();
        let mut values = vec![0.0; times.len() * cols];
        for (row, &t) in values.chunks_exact_mut(cols).zip(times) {
            fill_design_row(model, t, center, scale, row);
        }
        Design {
            rows: times.len(),
            cols,
            values,
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct IrlsFit {
    beta: Vec<f64>,
    eta: Vec<f64>,
    deviance: f64,
    iterations: usize,
}

const IRLS_MAX_ITERATIONS: usize = 100;
/// Relative deviance change that ends IRLS. R's `glm` stops at 1e-8, which is at the MLE for
/// the Poisson (canonical link, quadratic convergence) but leaves a fixed-θ NB fit (log link not
/// canonical, linear convergence) ~1e-6 short of it; we converge fully in both cases.
const IRLS_TOLERANCE: f64 = 1e-12;

/// Log-link IRLS for the Poisson (α = 0) or the negative binomial with known α, started like
/// R's `poisson()` family (μ = y + 0.1) or from a previous fit's linear predictor.
/// `None` when the weighted design is singular or the iteration does not settle.
fn irls(design: &Design, y: &[f64], alpha: f64, eta_start: Option<&[f64]>) -> Option<IrlsFit> {
    let (n, p) = (design.rows, design.cols);
    let mut eta: Vec<f64> = match eta_start {
        Some(eta) => eta.to_vec(),
        None => y.iter().map(|&v| (v + 0.1).ln()).collect(),
    };
    let mut mu: Vec<f64> = eta.iter().map(|e| e.exp()).collect();
    let mut deviance = family_deviance(y, &mu, alpha);
    let mut beta = vec![0.0; p];
    let mut xtwx = vec![0.0; p * p];
    let mut xtwz = vec![0.0; p];
    for iteration in 1..=IRLS_MAX_ITERATIONS {
        xtwx.iter_mut().for_each(|v| *v = 0.0);
        xtwz.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..n {
            // Log link: dμ/dη = μ, Var = μ(1 + αμ), so the working weight is μ/(1 + αμ).
            let weight = mu[i] / (1.0 + alpha * mu[i]);
            let working = eta[i] + (y[i] - mu[i]) / mu[i];
            let row = design.row(i);
            for a in 0..p {
                let wa = weight * row[a];
                xtwz[a] += wa * working;
                for b in 0..=a {
                    xtwx[a * p + b] += wa * row[b];
                }
            }
        }
        let mut candidate = solve_spd(&mut xtwx, &xtwz, p)?;
        // Step-halving as R does when the deviance is not finite.
        let mut halvings = 0;
        let (new_eta, new_mu, new_deviance) = loop {
            let new_eta: Vec<f64> = (0..n).map(|i| dot(design.row(i), &candidate)).collect();
            let new_mu: Vec<f64> = new_eta.iter().map(|e| e.exp()).collect();
            let new_deviance = family_deviance(y, &new_mu, alpha);
            if new_deviance.is_finite() && new_mu.iter().all(|m| *m > 0.0 && m.is_finite()) {
                break (new_eta, new_mu, new_deviance);
            }
            halvings += 1;
            if halvings > 30 {
                return None;
            }
            for (c, b) in candidate.iter_mut().zip(&beta) {
                *c = (*c + b) / 2.0;
            }
        };
        let change = (new_deviance - deviance).abs() / (new_deviance.abs() + 0.1);
        // With huge counts the deviance of a near-perfect fit is rounding noise; a standstill of
        // the coefficients then ends the iteration instead.
        let standstill = candidate
            .iter()
            .zip(&beta)
            .all(|(new, old)| (new - old).abs() <= 1e-13 * new.abs().max(1.0));
        beta = candidate;
        eta = new_eta;
        mu = new_mu;
        deviance = new_deviance;
        if change < IRLS_TOLERANCE || (standstill && iteration > 1) {
            return Some(IrlsFit {
                beta,
                eta,
                deviance,
                iterations: iteration,
            });
        }
    }
    None
}

/// The deviance of the Poisson (α = 0) or negative binomial (θ = 1/α).
fn family_deviance(y: &[f64], mu: &[f64], alpha: f64) -> f64 {
    let ylogy = |y: f64, m: f64| if y > 0.0 { y * (y / m).ln() } else { 0.0 };
    let sum: f64 = if alpha > 0.0 {
        let theta = 1.0 / alpha;
        y.iter()
            .zip(mu)
            .map(|(&y, &m)| ylogy(y, m) - (y + theta) * ((y + theta) / (m + theta)).ln())
            .sum()
    } else {
        y.iter().zip(mu).map(|(&y, &m)| ylogy(y, m) - (y - m)).sum()
    };
    2.0 * sum
}

/// Solves A x = b for symmetric positive-definite A (lower triangle filled) by Cholesky,
/// in place. `None` when A is not numerically positive definite (a singular design).
fn solve_spd(a: &mut [f64], b: &[f64], p: usize) -> Option<Vec<f64>> {
    for j in 0..p {
        let mut diag = a[j * p + j];
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        if diag.is_nan() || diag <= 1e-12 * a[j * p + j].abs().max(f64::MIN_POSITIVE) {
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

/// θ beyond this is "no overdispersion": the fit becomes the Poisson.
const THETA_MAX: f64 = 1e8;

/// `glm.nb`: alternate the NB IRLS at fixed θ and the ML θ at fixed μ until both settle.
/// Returns the fit and α = 1/θ (0 when the data show no overdispersion).
fn fit_negative_binomial(design: &Design, y: &[f64]) -> Option<(IrlsFit, f64)> {
    let poisson = irls(design, y, 0.0, None)?;
    let mu: Vec<f64> = poisson.eta.iter().map(|e| e.exp()).collect();
    let Some(mut theta) = theta_ml(y, &mu, None) else {
        return Some((poisson, 0.0));
    };
    let mut fit = poisson;
    for _ in 0..100 {
        let next = irls(design, y, 1.0 / theta, Some(&fit.eta))?;
        let mu: Vec<f64> = next.eta.iter().map(|e| e.exp()).collect();
        let deviance_change = (next.deviance - fit.deviance).abs() / (next.deviance.abs() + 0.1);
        fit = next;
        let Some(next_theta) = theta_ml(y, &mu, Some(theta)) else {
            // θ ran off to infinity: no overdispersion left once μ is refitted.
            return irls(design, y, 0.0, Some(&fit.eta)).map(|f| (f, 0.0));
        };
        let theta_change = (next_theta - theta).abs() / theta;
        theta = next_theta;
        if theta_change < 1e-10 && deviance_change < 1e-10 {
            return Some((fit, 1.0 / theta));
        }
    }
    None
}

/// The ML estimate of the NB size θ for fixed means (MASS `theta.ml`): Newton on the profile
/// score, with MASS's moment start n / Σ(y/μ − 1)², kept positive by halving in log θ.
/// `None` when the likelihood increases without bound in θ (no overdispersion).
fn theta_ml(y: &[f64], mu: &[f64], start: Option<f64>) -> Option<f64> {
    let n = y.len() as f64;
    let moment = n / y
        .iter()
        .zip(mu)
        .map(|(&y, &m)| (y / m - 1.0).powi(2))
        .sum::<f64>();
    let mut theta = start.unwrap_or(moment);
    if !(theta > 0.0 && theta.is_finite()) {
        theta = 1.0;
    }
    for _ in 0..200 {
        let (score, info) = theta_score_info(y, mu, theta);
        if info.is_nan() || info <= 0.0 {
            // Outside the concave region: walk towards larger or smaller θ along the score.
            theta = if score > 0.0 {
                theta * 4.0
            } else {
                theta / 4.0
            };
        } else {
            let step = score / info;
            let mut next = theta + step;
            // Keep θ positive and moves moderate on the log scale.
            if next <= theta / 16.0 {
                next = theta / 16.0;
            } else if next > theta * 16.0 {
                next = theta * 16.0;
            }
            if (next - theta).abs() <= 1e-12 * theta {
                theta = next;
                return (theta <= THETA_MAX).then_some(theta);
            }
            theta = next;
        }
        if theta > THETA_MAX {
            return None;
        }
        if theta < 1e-8 {
            return Some(1e-8);
        }
    }
    (theta <= THETA_MAX).then_some(theta)
}

/// The profile score ∂ℓ/∂θ and the observed information −∂²ℓ/∂θ² (MASS's `theta.ml`):
/// Σ ψ(θ+y) − ψ(θ) − ln(1 + μ/θ) + (μ − y)/(μ + θ), and
/// Σ ψ'(θ) − ψ'(θ+y) − 1/θ + 2/(μ+θ) − (y+θ)/(μ+θ)².
fn theta_score_info(y: &[f64], mu: &[f64], theta: f64) -> (f64, f64) {
    let mut score = 0.0;
    let mut info = 0.0;
    for (&y, &m) in y.iter().zip(mu) {
        let (dig, trig) = digamma_trigamma_shift(theta, y);
        score += dig - (m / theta).ln_1p() + (m - y) / (m + theta);
        info += trig - 1.0 / theta + 2.0 / (m + theta) - (y + theta) / ((m + theta) * (m + theta));
    }
    (score, info)
}

/// ψ(θ + y) − ψ(θ) and ψ'(θ) − ψ'(θ + y). For whole y (counts) as the finite sums
/// Σ_{j<y} 1/(θ+j) and Σ 1/(θ+j)², exact where the difference of two ψ values would cancel
/// (large θ).
fn digamma_trigamma_shift(theta: f64, y: f64) -> (f64, f64) {
    if y == y.trunc() && y < 10_000.0 {
        let mut dig = 0.0;
        let mut trig = 0.0;
        for j in 0..y as u64 {
            let v = 1.0 / (theta + j as f64);
            dig += v;
            trig += v * v;
        }
        (dig, trig)
    } else {
        (
            digamma(theta + y) - digamma(theta),
            trigamma(theta) - trigamma(theta + y),
        )
    }
}

/// ψ(x) for x > 0: recurrence up to x ≥ 20, then the asymptotic series to x⁻¹⁰
/// (truncation error below 1e-17).
fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 20.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv2 = 1.0 / (x * x);
    acc + x.ln()
        - 0.5 / x
        - inv2
            * (1.0 / 12.0
                - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}

/// ψ'(x) for x > 0: recurrence up to x ≥ 20, then the asymptotic series to x⁻⁹
/// (truncation error below 1e-15 relative).
fn trigamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 20.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    acc + inv
        + inv2 / 2.0
        + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 * (1.0 / 42.0 - inv2 / 30.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(spec: SeasonalSpec) -> SeasonalModel {
        SeasonalModel::try_new(&spec).expect("valid spec")
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn special_functions() {
        let euler = 0.577_215_664_901_532_9;
        assert!(close(digamma(1.0), -euler, 1e-14));
        assert!(close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-14));
        assert!(close(digamma(10.0), 2.251_752_589_066_721, 1e-14));
        assert!(close(
            trigamma(1.0),
            std::f64::consts::PI.powi(2) / 6.0,
            1e-14
        ));
        assert!(close(
            trigamma(0.5),
            std::f64::consts::PI.powi(2) / 2.0,
            1e-14
        ));
        let (d, t) = digamma_trigamma_shift(2.5, 3.0);
        assert!(close(d, digamma(5.5) - digamma(2.5), 1e-13));
        assert!(close(t, trigamma(2.5) - trigamma(5.5), 1e-13));
    }

    /// Noise-free data (y = μ exactly) make the Poisson MLE the true coefficients.
    #[test]
    fn recovers_known_coefficients() {
        let spec = SeasonalSpec {
            harmonics: 2,
            period_days: 365.0,
            trend: true,
            day_of_week: true,
            ..SeasonalSpec::default()
        };
        let m = model(spec);
        let truth = [
            // Day numbers near 19 000 (days since 1970): the intercept offsets the trend.
            -27.3, 0.0015, 0.4, -0.3, 0.1, 0.05, 0.2, -0.1, 0.3, 0.0, -0.25, 0.15,
        ];
        assert_eq!(m.coefficient_count(), truth.len());
        let times: Vec<i64> = (19_000..19_730).collect();
        let counts: Vec<f64> = times
            .iter()
            .map(|&t| dot(&design_row_vec(&m, t, 0.0, 1.0), &truth).exp())
            .collect();
        let fit = m.fit(&times, &counts).expect("fits");
        assert_eq!(fit.kind(), FitKind::Glm);
        assert_eq!(fit.family(), CountFamily::Poisson);
        for (got, want) in fit.coefficients().iter().zip(truth) {
            assert!(close(*got, want, 1e-8), "{got} vs {want}");
        }
        for &t in &[19_000, 19_500, 20_000] {
            let want = dot(&design_row_vec(&m, t, 0.0, 1.0), &truth).exp();
            assert!(close(fit.mean_at(t), want, 1e-8));
        }
    }

    #[test]
    fn intercept_only_is_the_mean() {
        let m = model(SeasonalSpec {
            harmonics: 0,
            ..SeasonalSpec::default()
        });
        let counts = [0.0, 3.0, 1.0, 0.0, 2.0, 5.0, 1.0, 0.0];
        let times: Vec<i64> = (1..=8).collect();
        let fit = m.fit(&times, &counts).expect("fits");
        assert_eq!(fit.kind(), FitKind::Glm);
        assert!(close(fit.mean_at(100), 1.5, 1e-12));
    }

    #[test]
    fn all_zero_and_short_histories_fall_back() {
        let m = model(SeasonalSpec::default());
        let zeros = vec![0.0; 200];
        let times: Vec<i64> = (1..=200).collect();
        let fit = m.fit(&times, &zeros).expect("falls back");
        assert_eq!(fit.kind(), FitKind::MeanFallback(FallbackReason::AllZero));
        assert!(close(fit.mean_at(5), 0.5 / 200.0, 1e-15));
        assert!(close(fit.mean_at(5000), 0.5 / 200.0, 1e-15));

        let fit = m.fit(&[1, 2, 3], &[2.0, 0.0, 4.0]).expect("falls back");
        assert_eq!(
            fit.kind(),
            FitKind::MeanFallback(FallbackReason::TooFewObservations)
        );
        assert!(close(fit.mean_at(4), 2.0, 1e-15));

        // One event in a year: fewer non-zero days than coefficients.
        let mut sparse = vec![0.0; 365];
        sparse[100] = 1.0;
        let times: Vec<i64> = (1..=365).collect();
        let fit = m.fit(&times, &sparse).expect("falls back");
        assert!(matches!(fit.kind(), FitKind::MeanFallback(_)));
        assert!(close(fit.mean_at(1), 1.0 / 365.0, 1e-15));

        assert_eq!(m.fit(&[], &[]), Err(DetectError::EmptyHistory));
        assert!(m.fit(&[1], &[-1.0]).is_err());
        assert!(m.fit(&[1, 2], &[1.0]).is_err());
    }

    /// A weekday that never has events: the MLE for its effect is −∞. IRLS still settles
    /// (the deviance converges) with a tiny mean there, as R's glm does.
    #[test]
    fn separated_weekday_still_fits() {
        let m = model(SeasonalSpec {
            day_of_week: true,
            ..SeasonalSpec::default()
        });
        let times: Vec<i64> = (0..364).collect();
        let counts: Vec<f64> = times
            .iter()
            .map(|&t| if t % 7 == 3 { 0.0 } else { (2 + t % 5) as f64 })
            .collect();
        let fit = m.fit(&times, &counts).expect("fits");
        assert_eq!(fit.kind(), FitKind::Glm);
        assert!(fit.mean_at(3) < 1e-6);
        assert!(fit.mean_at(4) > 1.0);
    }

    /// NB with estimated α on overdispersed data recovers α roughly (sampling error only);
    /// on Poisson-like data α goes to 0 and the fit is the Poisson.
    #[test]
    fn negative_binomial_dispersion() {
        let m = model(SeasonalSpec {
            family: FamilyKind::NegativeBinomial,
            ..SeasonalSpec::default()
        });
        // Gamma-Poisson mixture with α = 0.5 around μ = 6, from a small deterministic PRNG.
        let mut state = 7u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let n = 2000;
        let times: Vec<i64> = (1..=n).collect();
        let counts: Vec<f64> = (0..n)
            .map(|_| {
                // Gamma(shape 2, scale 3) as the sum of two exponentials: mean 6, CV² = 0.5.
                let lambda = -3.0 * (uniform().ln() + uniform().ln());
                let mut k = 0.0;
                let mut p = uniform();
                let limit = (-lambda).exp();
                while p > limit {
                    k += 1.0;
                    p *= uniform();
                }
                k
            })
            .collect();
        let fit = m.fit(&times, &counts).expect("fits");
        match fit.family() {
            CountFamily::NegativeBinomial { alpha } => {
                assert!((alpha - 0.5).abs() < 0.1, "alpha {alpha}")
            }
            other => panic!("expected NB, got {other:?}"),
        }

        let flat: Vec<f64> = (0..n).map(|i| (3 + i % 3) as f64).collect();
        let fit = m.fit(&times, &flat).expect("fits");
        assert_eq!(fit.family(), CountFamily::Poisson);
    }

    #[test]
    fn refuses_bad_specs() {
        let bad_period = SeasonalSpec {
            period_days: 0.0,
            ..SeasonalSpec::default()
        };
        assert!(SeasonalModel::try_new(&bad_period).is_err());
        let poisson_alpha = SeasonalSpec {
            alpha: Some(0.3),
            ..SeasonalSpec::default()
        };
        assert!(SeasonalModel::try_new(&poisson_alpha).is_err());
        let nb_zero = SeasonalSpec {
            family: FamilyKind::NegativeBinomial,
            alpha: Some(0.0),
            ..SeasonalSpec::default()
        };
        assert!(SeasonalModel::try_new(&nb_zero).is_err());
    }
}
