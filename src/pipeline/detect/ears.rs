//! EARS C1 / C2 / C3 (CDC Early Aberration Reporting System) on one daily count series, per
//! (region, risk kind) in regional detection (DESIGN §6). Also home of the shared
//! [`DetectError`] and [`Judgement`].
//! Input: the counts up to day t; output: a [`Judgement`] for day t, exactly as R
//! `surveillance::earsC` 1.20.3 computes it, plus the textbook C3 of Fricker et al.
//! Fails only on invalid parameters; days the package cannot judge carry `alarm: None`.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in `pipeline::detect`: all of it is the caller's fault
/// (bad configuration or bad input values), never transient, so nothing here is worth a retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    /// `earsC` refuses baselines shorter than 3 days, and so do we.
    #[error("EARS baseline must be at least 3 days, got {0}")]
    BaselineTooShort(usize),
    /// A numeric parameter outside its domain (e.g. alpha not in (0, 1), a negative sigma).
    #[error("parameter `{name}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The configuration field name.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// An observation or in-control mean that cannot enter the arithmetic
    /// (negative, NaN or infinite).
    #[error("input `{name}` = {value} is invalid: {reason}")]
    InvalidInput {
        /// Which input (`count`, `mu0`, `time`, ...).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// Inputs whose lengths must agree do not.
    #[error("length mismatch: {left} has {left_len} values, {right} has {right_len}")]
    LengthMismatch {
        /// Name of the first input.
        left: &'static str,
        /// Its length.
        left_len: usize,
        /// Name of the second input.
        right: &'static str,
        /// Its length.
        right_len: usize,
    },
    /// A model was asked to learn from no data at all.
    #[error("cannot fit an in-control model to an empty history")]
    EmptyHistory,
    /// No threshold within the calibrator's search range reaches the target ARL0.
    #[error("no CUSUM threshold up to {max_threshold} reaches ARL0 {target_arl0} (mean {mean})")]
    CalibrationOutOfRange {
        /// The requested in-control average run length.
        target_arl0: f64,
        /// The in-control mean the chart was calibrated for.
        mean: f64,
        /// The largest threshold that was examined.
        max_threshold: f64,
    },
}

/// The verdict of a detector on one day of one series. Shared by EARS and the CUSUM so the
/// signal stage handles every method alike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judgement {
    /// The count on the judged day.
    pub observed: f64,
    /// What the method expected: the baseline mean for EARS, μ0,t for the CUSUM.
    pub expected: f64,
    /// The method's threshold on the count: the day alarms iff `observed > upper_bound`
    /// (strict, as in the package). NaN where the package's bound is NA (then `alarm` is
    /// `None`); `-inf` for the textbook C3 when the two previous days alone already exceed
    /// the threshold (every count alarms).
    pub upper_bound: f64,
    /// The method's test statistic (see [`EarsMethod`] and `cusum::LrCusum` for which one).
    pub statistic: f64,
    /// `Some(true)` alarm, `Some(false)` no alarm, `None` no judgement possible: the package
    /// returns NA there (package C3 when a baseline has zero spread and `min_sigma` is 0).
    pub alarm: Option<bool>,
}

/// Which EARS variant to run. All use the sample standard deviation (divisor B − 1) of a
/// B-day baseline and alarm strictly (`>`), as `earsC` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EarsMethod {
    /// C1 ("mild"): baseline t−B … t−1, no guard band. U = Ȳ + z·max(S, min_sigma);
    /// statistic (y − Ȳ)/max(S, min_sigma). First judged day: index B (0-based).
    C1,
    /// C2 ("medium"): baseline t−B−2 … t−3, days t−1 and t−2 are a guard band; otherwise as C1.
    /// First judged day: index B + 2.
    C2,
    /// C3 as the package computes it (every version up to at least 1.26.0):
    /// U = max(0, y + σ(t)·(z − L)), L = max(0, C2(t−1) − 1) + max(0, C2(t−2) − 1), so it
    /// alarms iff L > z and **ignores the current day's C2**: a spike at t is flagged at t+1
    /// and t+2, not at t. Mirrored on purpose (bit-parity with the reference); statistic = L.
    /// NaN arithmetic is mirrored too: a zero-spread baseline with `min_sigma` = 0 gives
    /// `alarm: None`. First judged day: index B + 4.
    C3,
    /// C3 as published (Hutwagner et al.; Fricker, Hegler & Dunfee 2008):
    /// C3(t) = Σ_{i=t−2..t} max(0, C2(i) − 1), alarm iff C3(t) > z. A spike at t is flagged
    /// at t, t+1 and t+2. Statistic = C3(t); U = Ȳ2 + σ(t)·(1 + z − L) inverts it for the count
    /// (−inf when L > z: every count alarms). yujing's choices where the formula is 0/0: a day
    /// equal to a zero-spread baseline contributes 0 ("no excess"), a day above it contributes
    /// +inf, so this variant always judges. First judged day: index B + 4.
    C3Textbook,
}

impl EarsMethod {
    /// The package's default alpha: 0.001 for C1/C2 (z ≈ 3.09, "3σ"), 0.025 for C3 (z ≈ 1.96).
    pub fn default_alpha(self) -> f64 {
        match self {
            EarsMethod::C1 | EarsMethod::C2 => 0.001,
            EarsMethod::C3 | EarsMethod::C3Textbook => 0.025,
        }
    }

    /// Days before the judged day that the method reads, beyond the baseline itself:
    /// 0 for C1, the 2-day guard band for C2, and two more C2 days for C3.
    fn lag_beyond_baseline(self) -> usize {
        match self {
            EarsMethod::C1 => 0,
            EarsMethod::C2 => 2,
            EarsMethod::C3 | EarsMethod::C3Textbook => 4,
        }
    }
}

fn default_baseline() -> usize {
    7
}

/// EARS configuration as written by a user (`deny_unknown_fields`); turn it into a runnable
/// [`Ears`] with [`Ears::try_new`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EarsParams {
    /// The variant.
    pub method: EarsMethod,
    /// Baseline length B in days (default 7, at least 3).
    #[serde(default = "default_baseline")]
    pub baseline: usize,
    /// One-sided false-alarm level; `None` means the package default for the method
    /// ([`EarsMethod::default_alpha`]). z = Φ⁻¹(1 − alpha).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Floor on the standard deviation (Burkom's `minSigma`, default 0; 0.5–1 tames sparse
    /// series whose baselines are often all zero).
    #[serde(default)]
    pub min_sigma: f64,
}

impl EarsParams {
    /// The package defaults for `method`: B = 7, default alpha, `min_sigma` = 0.
    pub fn new(method: EarsMethod) -> Self {
        EarsParams {
            method,
            baseline: default_baseline(),
            alpha: None,
            min_sigma: 0.0,
        }
    }
}

/// A validated EARS detector. Cheap to copy; judging a day allocates nothing.
///
/// Batch use: [`Ears::judge_series`]. Streaming use: keep the last [`Ears::history_len`]
/// counts of a series and call [`Ears::judge_latest`] when a day closes; [`Ears::judge`] reads
/// only `series[..=t]`, so both give identical results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ears {
    method: EarsMethod,
    baseline: usize,
    z: f64,
    min_sigma: f64,
}

impl Ears {
    /// Validates `params` and precomputes z = Φ⁻¹(1 − alpha) the way R's `qnorm` does.
    pub fn try_new(params: &EarsParams) -> Result<Self, DetectError> {
        if params.baseline < 3 {
            return Err(DetectError::BaselineTooShort(params.baseline));
        }
        let alpha = params
            .alpha
            .unwrap_or_else(|| params.method.default_alpha());
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(DetectError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "must lie strictly between 0 and 1",
            });
        }
        if !(params.min_sigma >= 0.0 && params.min_sigma.is_finite()) {
            return Err(DetectError::InvalidParameter {
                name: "min_sigma",
                value: params.min_sigma,
                reason: "must be finite and non-negative",
            });
        }
        Ok(Ears {
            method: params.method,
            baseline: params.baseline,
            // `earsC` computes qnorm(1 - alpha), not qnorm(alpha, lower.tail = FALSE); the
            // rounding of 1 - alpha is part of the reference value.
            z: normal_quantile(1.0 - alpha),
            min_sigma: params.min_sigma,
        })
    }

    /// The variant.
    pub fn method(&self) -> EarsMethod {
        self.method
    }

    /// The threshold z = Φ⁻¹(1 − alpha).
    pub fn z(&self) -> f64 {
        self.z
    }

    /// The first judged day (0-based), as in the package's default `range`:
    /// B for C1, B + 2 for C2, B + 4 for both C3s.
    pub fn first_index(&self) -> usize {
        self.baseline + self.method.lag_beyond_baseline()
    }

    /// How many trailing days a streaming caller must keep (the judged day included).
    pub fn history_len(&self) -> usize {
        self.first_index() + 1
    }

    /// Judges day `t` of `series` using only `series[..=t]`. `None` when `t` is before
    /// [`Ears::first_index`] or past the end of `series`. Counts are not validated: a NaN
    /// propagates like R's NA (`alarm: None`).
    pub fn judge(&self, series: &[f64], t: usize) -> Option<Judgement> {
        if t < self.first_index() || t >= series.len() {
            return None;
        }
        let observed = series[t];
        let judgement = match self.method {
            EarsMethod::C1 => self.shewhart(observed, self.window_stats(series, t, 0)),
            EarsMethod::C2 => self.shewhart(observed, self.window_stats(series, t, 2)),
            EarsMethod::C3 => self.c3_package(series, t),
            EarsMethod::C3Textbook => self.c3_textbook(series, t),
        };
        Some(judgement)
    }

    /// Judges the last day of `recent` (the streaming entry point). `recent` should hold at
    /// least [`Ears::history_len`] days; fewer gives `None`.
    pub fn judge_latest(&self, recent: &[f64]) -> Option<Judgement> {
        let t = recent.len().checked_sub(1)?;
        self.judge(recent, t)
    }

    /// Judges every day of `series`; entry t is `judge(series, t)`.
    pub fn judge_series(&self, series: &[f64]) -> Vec<Option<Judgement>> {
        (0..series.len()).map(|t| self.judge(series, t)).collect()
    }

    /// Mean and floored sd of the B days ending `guard + 1` days before `t`.
    fn window_stats(&self, series: &[f64], t: usize, guard: usize) -> Baseline {
        let end = t - guard; // exclusive
        let window = &series[end - self.baseline..end];
        let (mean, sd) = mean_sd(window);
        Baseline {
            mean,
            // R's pmax keeps NaN (a NaN count in the window); f64::max would drop it.
            sigma: r_pmax(sd, self.min_sigma),
        }
    }

    /// C1 and C2: U = Ȳ + z·σ.
    fn shewhart(&self, observed: f64, base: Baseline) -> Judgement {
        let upper_bound = base.mean + self.z * base.sigma;
        Judgement {
            observed,
            expected: base.mean,
            upper_bound,
            statistic: score_or_zero(observed, base),
            alarm: r_greater(observed, upper_bound),
        }
    }

    /// The package's C3, operation for operation (including IEEE NaN/inf propagation), so that
    /// its NA days are exactly ours.
    fn c3_package(&self, series: &[f64], t: usize) -> Judgement {
        let observed = series[t];
        let base = self.window_stats(series, t, 2);
        let lag2 = r_pmax(self.c2_raw(series, t - 2) - 1.0, 0.0);
        let lag1 = r_pmax(self.c2_raw(series, t - 1) - 1.0, 0.0);
        let lag_sum = lag2 + lag1;
        let upper_bound = r_pmax(observed + base.sigma * (self.z - lag_sum), 0.0);
        Judgement {
            observed,
            expected: base.mean,
            upper_bound,
            statistic: lag_sum,
            alarm: r_greater(observed, upper_bound),
        }
    }

    fn c3_textbook(&self, series: &[f64], t: usize) -> Judgement {
        let observed = series[t];
        let base = self.window_stats(series, t, 2);
        let excess = |i: usize| {
            let c2 = self.c2_raw(series, i);
            // 0/0 (count equal to a flat baseline) is "no excess", not "unknown".
            if c2.is_nan() {
                0.0
            } else {
                (c2 - 1.0).max(0.0)
            }
        };
        let lagged = excess(t - 2) + excess(t - 1);
        let statistic = lagged + excess(t);
        let upper_bound = if lagged > self.z {
            f64::NEG_INFINITY
        } else {
            base.mean + base.sigma * (1.0 + self.z - lagged)
        };
        Judgement {
            observed,
            expected: base.mean,
            upper_bound,
            statistic,
            alarm: if observed.is_nan() {
                None
            } else {
                Some(statistic > self.z)
            },
        }
    }

    /// C2(i) = (y_i − Ȳ2(i)) / max(S2(i), min_sigma) with plain IEEE division (±inf, NaN),
    /// as the package's C3 computes it.
    fn c2_raw(&self, series: &[f64], i: usize) -> f64 {
        let base = self.window_stats(series, i, 2);
        (series[i] - base.mean) / base.sigma
    }
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    mean: f64,
    sigma: f64,
}

/// (y − Ȳ)/σ, but 0 rather than NaN when both are 0 (a count equal to a flat baseline).
fn score_or_zero(observed: f64, base: Baseline) -> f64 {
    let diff = observed - base.mean;
    if diff == 0.0 && base.sigma == 0.0 {
        0.0
    } else {
        diff / base.sigma
    }
}

/// Sample mean and standard deviation (divisor n − 1), two-pass like R's `mean`/`var`
/// (the mean is refined by the mean residual, as R's summary.c does).
fn mean_sd(window: &[f64]) -> (f64, f64) {
    let n = window.len() as f64;
    let rough = window.iter().sum::<f64>() / n;
    let mean = rough + window.iter().map(|x| x - rough).sum::<f64>() / n;
    let ss: f64 = window.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// R's `pmax(a, b)` for scalars: NaN in either argument gives NaN.
fn r_pmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// R's `a > b`: NA when either side is NaN.
fn r_greater(a: f64, b: f64) -> Option<bool> {
    if a.is_nan() || b.is_nan() {
        None
    } else {
        Some(a > b)
    }
}

/// The standard normal quantile Φ⁻¹(p), Wichura's AS 241 (PPND16) exactly as R's `qnorm`
/// (R 4.2) evaluates it, so thresholds agree with the reference to the last bit or two.
/// NaN outside [0, 1]; ±inf at 0 and 1.
#[allow(clippy::excessive_precision)] // R's literals, digit for digit
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((r * 2509.0809287301226727 + 33430.575583588128105) * r
                + 67265.770927008700853)
                * r
                + 45921.953931549871457)
                * r
                + 13731.693765509461125)
                * r
                + 1971.5909503065514427)
                * r
                + 133.14166789178437745)
                * r
                + 3.387132872796366608)
            / (((((((r * 5226.495278852854561 + 28729.085735721942674) * r
                + 39307.89580009271061)
                * r
                + 21213.794301586595867)
                * r
                + 5394.1960214247511077)
                * r
                + 687.1870074920579083)
                * r
                + 42.313330701600911252)
                * r
                + 1.0);
    }
    // R: r = sqrt(-log(q > 0 ? 1 - p : p)), with 1 - p written (0.5 - p + 0.5).
    let tail = if q > 0.0 { 0.5 - p + 0.5 } else { p };
    let mut r = (-tail.ln()).sqrt();
    let val = if r <= 5.0 {
        r -= 1.6;
        (((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r
            + 0.24178072517745061177)
            * r
            + 1.27045825245236838258)
            * r
            + 3.64784832476320460504)
            * r
            + 5.7694972214606914055)
            * r
            + 4.6303378461565452959)
            * r
            + 1.42343711074968357734)
            / (((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r
                + 0.0151986665636164571966)
                * r
                + 0.14810397642748007459)
                * r
                + 0.68976733498510000455)
                * r
                + 1.6763848301838038494)
                * r
                + 2.05319162663775882187)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r
            + 0.0012426609473880784386)
            * r
            + 0.026532189526576123093)
            * r
            + 0.29656057182850489123)
            * r
            + 1.7848265399172913358)
            * r
            + 5.4637849111641143699)
            * r
            + 6.6579046435011037772)
            / (((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r
                + 1.8463183175100546818e-5)
                * r
                + 7.868691311456132591e-4)
                * r
                + 0.0148753612908506148525)
                * r
                + 0.13692988092273580531)
                * r
                + 0.59983220655588793769)
                * r
                + 1.0)
    };
    if q < 0.0 { -val } else { val }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ears(method: EarsMethod) -> Ears {
        Ears::try_new(&EarsParams::new(method)).expect("defaults are valid")
    }

    fn with(method: EarsMethod, alpha: Option<f64>, min_sigma: f64) -> Ears {
        let params = EarsParams {
            alpha,
            min_sigma,
            ..EarsParams::new(method)
        };
        Ears::try_new(&params).expect("valid test parameters")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    /// Values printed by R 4.2.2: qnorm(1-0.001), qnorm(1-0.025), qnorm(0.3), qnorm(1e-20).
    #[test]
    fn normal_quantile_matches_r() {
        assert_eq!(normal_quantile(1.0 - 0.001), 3.090_232_306_167_813);
        assert_eq!(normal_quantile(1.0 - 0.025), 1.959_963_984_540_053_6);
        assert!(close(normal_quantile(0.5), 0.0));
        assert!(close(normal_quantile(0.3), -0.524_400_512_708_040_7));
        assert!(close(normal_quantile(1e-20), -9.262_340_089_798_405));
        assert!(normal_quantile(1.5).is_nan());
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    #[test]
    fn rejects_bad_parameters() {
        let short = EarsParams {
            baseline: 2,
            ..EarsParams::new(EarsMethod::C1)
        };
        assert_eq!(Ears::try_new(&short), Err(DetectError::BaselineTooShort(2)));
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            let p = EarsParams {
                alpha: Some(alpha),
                ..EarsParams::new(EarsMethod::C2)
            };
            assert!(matches!(
                Ears::try_new(&p),
                Err(DetectError::InvalidParameter { name: "alpha", .. })
            ));
        }
        let p = EarsParams {
            min_sigma: -1.0,
            ..EarsParams::new(EarsMethod::C3)
        };
        assert!(Ears::try_new(&p).is_err());
        let three = EarsParams {
            baseline: 3,
            ..EarsParams::new(EarsMethod::C1)
        };
        assert!(Ears::try_new(&three).is_ok());
    }

    #[test]
    fn default_alphas_follow_the_package() {
        assert_eq!(ears(EarsMethod::C1).z(), normal_quantile(0.999));
        assert_eq!(ears(EarsMethod::C2).z(), normal_quantile(0.999));
        assert_eq!(ears(EarsMethod::C3).z(), normal_quantile(0.975));
        assert_eq!(ears(EarsMethod::C3Textbook).z(), normal_quantile(0.975));
    }

    /// Hand computation: baseline 1..=7 has mean 4 and sd sqrt(28/6).
    #[test]
    fn c1_by_hand() {
        let series = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 12.0];
        let c1 = ears(EarsMethod::C1);
        for t in 0..7 {
            assert_eq!(c1.judge(&series, t), None, "day {t} has no full baseline");
        }
        let j = c1.judge(&series, 7).expect("day 7 is monitorable");
        let sd = (28.0f64 / 6.0).sqrt();
        assert!(close(j.expected, 4.0));
        assert!(close(j.upper_bound, 4.0 + c1.z() * sd));
        assert!(close(j.statistic, 8.0 / sd));
        assert_eq!(j.alarm, Some(true)); // 12 > 4 + 3.09·2.16 = 10.68
        assert_eq!(c1.judge(&series, 8), None, "past the end");
    }

    /// C2 ignores t−1 and t−2: a spike there does not move the baseline.
    #[test]
    fn c2_guard_band() {
        let mut series = vec![5.0, 6.0, 4.0, 5.0, 6.0, 4.0, 5.0, 0.0, 0.0, 5.0];
        let c2 = ears(EarsMethod::C2);
        assert_eq!(c2.first_index(), 9);
        let plain = c2.judge(&series, 9).expect("monitorable");
        series[7] = 100.0;
        series[8] = 100.0;
        let guarded = c2.judge(&series, 9).expect("monitorable");
        assert_eq!(plain, guarded);
        assert!(close(plain.expected, 35.0 / 7.0));
        // ...whereas day t−3 is in the baseline.
        series[6] = 100.0;
        assert_ne!(c2.judge(&series, 9).expect("monitorable"), plain);
    }

    /// With a flat baseline and min_sigma = 0, C1/C2 alarm on any excess (a 1 after seven 0s)
    /// and never on a repeat of the baseline; min_sigma lifts the bound to Ȳ + z·min_sigma.
    #[test]
    fn flat_baseline_and_min_sigma() {
        let mut series = vec![0.0; 8];
        series[7] = 1.0;
        let c1 = ears(EarsMethod::C1);
        let j = c1.judge(&series, 7).expect("monitorable");
        assert_eq!((j.upper_bound, j.alarm), (0.0, Some(true)));
        assert_eq!(j.statistic, f64::INFINITY);
        series[7] = 0.0;
        let j = c1.judge(&series, 7).expect("monitorable");
        assert_eq!((j.statistic, j.alarm), (0.0, Some(false)));

        series[7] = 3.0;
        let floored = with(EarsMethod::C1, None, 1.0);
        let j = floored.judge(&series, 7).expect("monitorable");
        assert!(close(j.upper_bound, floored.z()));
        assert_eq!(j.alarm, Some(false)); // 3 < 3.09
        series[7] = 4.0;
        assert_eq!(floored.judge(&series, 7).and_then(|j| j.alarm), Some(true));
    }

    /// Strict ">": a count exactly on the bound does not alarm.
    #[test]
    fn alarm_is_strict() {
        let series = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let j = ears(EarsMethod::C1).judge(&series, 7).expect("monitorable");
        assert_eq!(j.upper_bound, 0.0);
        assert_eq!(j.alarm, Some(false));
    }

    /// A single spike on a noisy baseline: C1, C2 and the textbook C3 flag it on the day;
    /// the package's C3 flags it one and two days later (DETECTORS.md §1.3).
    #[test]
    fn c3_accumulation_package_versus_textbook() {
        let base = [
            10.0, 12.0, 9.0, 11.0, 10.0, 8.0, 12.0, 11.0, 9.0, 10.0, 11.0, 9.0,
        ];
        let mut series: Vec<f64> = base.iter().chain(base.iter()).copied().collect();
        let spike = 16;
        series[spike] = 40.0;
        let alarms = |method| -> Vec<usize> {
            ears(method)
                .judge_series(&series)
                .iter()
                .enumerate()
                .filter(|(_, j)| j.and_then(|j| j.alarm) == Some(true))
                .map(|(t, _)| t)
                .collect()
        };
        assert_eq!(alarms(EarsMethod::C1), vec![spike]);
        assert_eq!(alarms(EarsMethod::C2), vec![spike]);
        assert_eq!(alarms(EarsMethod::C3), vec![spike + 1, spike + 2]);
        assert_eq!(
            alarms(EarsMethod::C3Textbook),
            vec![spike, spike + 1, spike + 2]
        );
    }

    /// Package C3 by hand at t = 11 (B = 7): C2(9) and C2(10) from their own baselines.
    #[test]
    fn c3_package_by_hand() {
        let series = [2.0, 4.0, 3.0, 5.0, 4.0, 2.0, 3.0, 4.0, 3.0, 9.0, 8.0, 3.0];
        let c3 = ears(EarsMethod::C3);
        assert_eq!(c3.first_index(), 11);
        assert_eq!(c3.judge(&series, 10), None);
        let c2_at = |i: usize| {
            let (m, s) = mean_sd(&series[i - 9..i - 2]);
            ((series[i] - m) / s, m, s)
        };
        let (c2_9, _, _) = c2_at(9);
        let (c2_10, _, _) = c2_at(10);
        let (_, m11, s11) = c2_at(11);
        let lag = (c2_9 - 1.0).max(0.0) + (c2_10 - 1.0).max(0.0);
        let j = c3.judge(&series, 11).expect("monitorable");
        assert!(close(j.statistic, lag));
        assert!(close(j.expected, m11));
        assert!(close(j.upper_bound, (3.0 + s11 * (c3.z() - lag)).max(0.0)));
        assert_eq!(j.alarm, Some(lag > c3.z()));
        assert_eq!(j.alarm, Some(true));
    }

    /// All-zero baseline, min_sigma = 0: the package's C3 is NA (0/0 in C2); yujing reports
    /// `alarm: None` with a NaN bound. The textbook variant judges (no excess, no alarm), and
    /// min_sigma > 0 makes the package's C3 judge too.
    #[test]
    fn c3_on_all_zero_baseline() {
        let series = vec![0.0; 14];
        let j = ears(EarsMethod::C3)
            .judge(&series, 13)
            .expect("monitorable");
        assert_eq!(j.alarm, None);
        assert!(j.upper_bound.is_nan() && j.statistic.is_nan());
        let j = ears(EarsMethod::C3Textbook)
            .judge(&series, 13)
            .expect("monitorable");
        assert_eq!(
            (j.alarm, j.statistic, j.upper_bound),
            (Some(false), 0.0, 0.0)
        );
        let floored = with(EarsMethod::C3, None, 0.5);
        let j = floored.judge(&series, 13).expect("monitorable");
        assert_eq!(j.alarm, Some(false));
        assert!(close(j.upper_bound, 0.5 * floored.z()));
    }

    /// A single 1 after zeros, min_sigma = 0: C2 = +inf on the spike day, 0/0 on the others.
    /// Package C3: no judgement on any day (NaN lags, or 0·(z − inf) = NaN); textbook: alarm
    /// on the day and the two after (their bound is −inf).
    #[test]
    fn single_spike_after_zeros() {
        let mut series = vec![0.0; 20];
        series[14] = 1.0;
        let package = ears(EarsMethod::C3).judge_series(&series);
        // Every lagged C2 is 0/0 or +inf over a flat baseline: NA until the spike has entered
        // the baselines of both lagged days (day 19).
        let alarms: Vec<Option<bool>> = package[13..=19]
            .iter()
            .map(|j| j.expect("monitorable").alarm)
            .collect();
        assert_eq!(alarms, [None, None, None, None, None, None, Some(false)]);
        let textbook = ears(EarsMethod::C3Textbook).judge_series(&series);
        let flagged: Vec<usize> = (0..20)
            .filter(|&t| textbook[t].and_then(|j| j.alarm) == Some(true))
            .collect();
        assert_eq!(flagged, vec![14, 15, 16]);
        assert_eq!(textbook[15].map(|j| j.upper_bound), Some(f64::NEG_INFINITY));
    }

    /// The textbook bound inverts the statistic: y just above U alarms, just below does not.
    #[test]
    fn textbook_bound_inverts_statistic() {
        let mut series = vec![4.0, 6.0, 5.0, 7.0, 5.0, 4.0, 6.0, 5.0, 6.0, 8.0, 5.0, 0.0];
        let c3 = ears(EarsMethod::C3Textbook);
        let u = c3.judge(&series, 11).expect("monitorable").upper_bound;
        assert!(u.is_finite() && u > 0.0);
        series[11] = u + 1e-9;
        assert_eq!(c3.judge(&series, 11).and_then(|j| j.alarm), Some(true));
        series[11] = u - 1e-9;
        assert_eq!(c3.judge(&series, 11).and_then(|j| j.alarm), Some(false));
    }

    /// Streaming and batch agree: judging the last day of a trailing window equals judging
    /// that day in the full series.
    #[test]
    fn streaming_equals_batch() {
        let mut state = 12345u64;
        let series: Vec<f64> = (0..120)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 7) as f64
            })
            .collect();
        for method in [
            EarsMethod::C1,
            EarsMethod::C2,
            EarsMethod::C3,
            EarsMethod::C3Textbook,
        ] {
            let detector = ears(method);
            let batch = detector.judge_series(&series);
            let keep = detector.history_len();
            for t in 0..series.len() {
                let recent = &series[(t + 1).saturating_sub(keep)..=t];
                let streamed = detector.judge_latest(recent);
                match (batch[t], streamed) {
                    (Some(a), Some(b)) => {
                        assert_eq!(a.alarm, b.alarm, "{method:?} day {t}");
                        assert!(
                            a.upper_bound.to_bits() == b.upper_bound.to_bits(),
                            "{method:?} day {t}"
                        );
                    }
                    (a, b) => assert_eq!(a, b, "{method:?} day {t}"),
                }
            }
        }
    }
}
