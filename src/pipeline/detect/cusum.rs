//! Likelihood-ratio CUSUM for daily counts (Poisson and negative binomial), Höhle & Paul 2008.
//! Place: regional detection (DESIGN §6), the sensitive daily chart for sparse series, fed by
//! a seasonal in-control mean μ0,t from `glm` and a threshold from `calibrate`.
//! Input: one count and its μ0,t per day; output: a [`Judgement`] per day, as R
//! `surveillance::algo.glrnb` (C `lr_cusum` / `lr_cusum_nb`) computes it, restarted after
//! each alarm. Fails only on invalid parameters or non-finite / negative inputs.

use serde::{Deserialize, Serialize};

use super::ears::{DetectError, Judgement};

/// The count distribution of the in-control model. Validated form; build the negative binomial
/// with [`CountFamily::negative_binomial`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum CountFamily {
    /// Var = μ.
    Poisson,
    /// Var = μ + αμ² (α = 1/θ of R's `glm.nb`); tends to the Poisson as α → 0.
    NegativeBinomial {
        /// The dispersion α > 0.
        alpha: f64,
    },
}

impl CountFamily {
    /// A negative binomial with dispersion `alpha`, which must be finite and > 0
    /// (use [`CountFamily::Poisson`] for α = 0).
    pub fn negative_binomial(alpha: f64) -> Result<Self, DetectError> {
        if alpha > 0.0 && alpha.is_finite() {
            Ok(CountFamily::NegativeBinomial { alpha })
        } else {
            Err(DetectError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "the negative-binomial dispersion must be finite and > 0",
            })
        }
    }

    /// α, with 0 for the Poisson (the package's `alpha = 0` convention).
    pub fn alpha(self) -> f64 {
        match self {
            CountFamily::Poisson => 0.0,
            CountFamily::NegativeBinomial { alpha } => alpha,
        }
    }

    fn validate(self) -> Result<Self, DetectError> {
        match self {
            CountFamily::Poisson => Ok(self),
            CountFamily::NegativeBinomial { alpha } => CountFamily::negative_binomial(alpha),
        }
    }
}

/// The family as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyKind {
    /// Poisson counts.
    #[default]
    Poisson,
    /// Negative-binomial counts; needs `alpha`.
    NegativeBinomial,
}

fn default_kappa() -> f64 {
    std::f64::consts::LN_2
}

/// CUSUM configuration as written by a user (`deny_unknown_fields`); validate it with
/// [`LrCusum::try_new`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CusumParams {
    /// In-control count distribution (default Poisson).
    #[serde(default)]
    pub family: FamilyKind,
    /// Negative-binomial dispersion α; required for `negative_binomial`, refused for Poisson.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// The log of the multiplicative shift to detect, κ = ln(μ1/μ0) > 0 (default ln 2: a
    /// doubling).
    #[serde(default = "default_kappa")]
    pub kappa: f64,
    /// The decision threshold c on the log-likelihood-ratio scale (the package's `c.ARL`);
    /// choose it with `calibrate::calibrate_threshold`.
    pub threshold: f64,
}

impl CusumParams {
    /// The validated family this configuration names.
    pub fn count_family(&self) -> Result<CountFamily, DetectError> {
        match (self.family, self.alpha) {
            (FamilyKind::Poisson, None) => Ok(CountFamily::Poisson),
            (FamilyKind::Poisson, Some(alpha)) => Err(DetectError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "a Poisson CUSUM takes no dispersion; use family = negative_binomial",
            }),
            (FamilyKind::NegativeBinomial, Some(alpha)) => CountFamily::negative_binomial(alpha),
            (FamilyKind::NegativeBinomial, None) => Err(DetectError::InvalidParameter {
                name: "alpha",
                value: f64::NAN,
                reason: "a negative-binomial CUSUM needs its dispersion alpha",
            }),
        }
    }
}

/// A validated upward LR CUSUM with known shift κ and threshold c:
///
/// ```text
/// Poisson:  Z_t = κ y_t + (1 − e^κ) μ0,t
/// NegBin:   Z_t = κ y_t + (y_t + 1/α) L_t,   L_t = ln((1 + α μ0,t) / (1 + α μ0,t e^κ))
/// S_t = max(0, S_{t−1} + Z_t);   alarm iff S_t > c;   S_t := 0 after an alarm
/// ```
///
/// The reset mirrors `algo.glrnb`, which restarts the C routine on the day after an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrCusum {
    family: CountFamily,
    kappa: f64,
    threshold: f64,
}

impl LrCusum {
    /// Validates κ > 0 (finite), c ≥ 0 (finite) and the family.
    pub fn try_from_parts(
        family: CountFamily,
        kappa: f64,
        threshold: f64,
    ) -> Result<Self, DetectError> {
        if !(kappa > 0.0 && kappa.is_finite()) {
            return Err(DetectError::InvalidParameter {
                name: "kappa",
                value: kappa,
                reason: "the shift to detect must be finite and > 0 (upward charts only)",
            });
        }
        if !(threshold >= 0.0 && threshold.is_finite()) {
            return Err(DetectError::InvalidParameter {
                name: "threshold",
                value: threshold,
                reason: "must be finite and non-negative",
            });
        }
        Ok(LrCusum {
            family: family.validate()?,
            kappa,
            threshold,
        })
    }

    /// Validates a configuration.
    pub fn try_new(params: &CusumParams) -> Result<Self, DetectError> {
        LrCusum::try_from_parts(params.count_family()?, params.kappa, params.threshold)
    }

    /// The in-control family.
    pub fn family(&self) -> CountFamily {
        self.family
    }

    /// κ.
    pub fn kappa(&self) -> f64 {
        self.kappa
    }

    /// c.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The one-day log-likelihood ratio Z_t of "mean μ0·e^κ" against "mean μ0".
    pub fn increment(&self, observed: f64, mu0: f64) -> f64 {
        // Written as the C code writes it, so rounding (and thus a borderline S = c) matches.
        match self.family {
            CountFamily::Poisson => self.kappa * observed + (1.0 - self.kappa.exp()) * mu0,
            CountFamily::NegativeBinomial { alpha } => {
                self.kappa * observed
                    + (observed + 1.0 / alpha) * nb_log_ratio(alpha, self.kappa, mu0)
            }
        }
    }

    /// The count that day t needs to alarm, given yesterday's statistic: alarm iff
    /// `observed > cases_to_alarm(S_{t−1}, μ0,t)` (the package's `ret = "cases"` bound).
    pub fn cases_to_alarm(&self, previous: f64, mu0: f64) -> f64 {
        let c = self.threshold;
        match self.family {
            CountFamily::Poisson => (c - previous + mu0 * self.kappa.exp_m1()) / self.kappa,
            CountFamily::NegativeBinomial { alpha } => {
                let log_ratio = nb_log_ratio(alpha, self.kappa, mu0);
                (c * alpha - previous * alpha - log_ratio) / (alpha * (self.kappa + log_ratio))
            }
        }
    }

    /// Runs a fresh chart over a whole series (batch use; the reference test's entry point).
    pub fn judge_series(&self, counts: &[f64], mu0: &[f64]) -> Result<Vec<Judgement>, DetectError> {
        if counts.len() != mu0.len() {
            return Err(DetectError::LengthMismatch {
                left: "counts",
                left_len: counts.len(),
                right: "mu0",
                right_len: mu0.len(),
            });
        }
        let mut state = CusumState::new();
        counts
            .iter()
            .zip(mu0)
            .map(|(&y, &m)| state.step(self, y, m))
            .collect()
    }
}

/// The chart in Lucas' count units: Z_t = g·(y_t − k_t). g is what one extra case adds to the
/// statistic and k_t the reference value (the count at which Z_t = 0):
/// Poisson g = κ, k = μ0(e^κ − 1)/κ; NegBin g = κ + L, k = −L/(α g). Shared with `calibrate`,
/// whose Markov chain lives on this scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LucasForm {
    pub(crate) per_count: f64,
    pub(crate) reference: f64,
}

impl LucasForm {
    pub(crate) fn new(family: CountFamily, kappa: f64, mu0: f64) -> Self {
        match family {
            CountFamily::Poisson => LucasForm {
                per_count: kappa,
                reference: mu0 * kappa.exp_m1() / kappa,
            },
            CountFamily::NegativeBinomial { alpha } => {
                let log_ratio = nb_log_ratio(alpha, kappa, mu0);
                let per_count = kappa + log_ratio;
                LucasForm {
                    per_count,
                    reference: -log_ratio / (alpha * per_count),
                }
            }
        }
    }
}

/// L = ln((1 + α μ0) / (1 + α μ0 e^κ)) < 0. `ln_1p` keeps it accurate as α μ0 → 0, where the
/// NB chart becomes the Poisson one (the C code's `log(a/b)` agrees to an ulp or two otherwise).
fn nb_log_ratio(alpha: f64, kappa: f64, mu0: f64) -> f64 {
    (alpha * mu0).ln_1p() - (alpha * mu0 * kappa.exp()).ln_1p()
}

/// The per-series state of an [`LrCusum`]: just S_{t−1}. 8 bytes, `Copy`, serialisable, so a
/// checkpoint can carry one per (region, risk kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    statistic: f64,
}

impl CusumState {
    /// A chart at rest (S = 0).
    pub fn new() -> Self {
        CusumState::default()
    }

    /// A chart carrying `statistic` in (a checkpointed S_{t−1}; negative or non-finite
    /// values are taken as 0, the chart at rest).
    pub fn with_statistic(statistic: f64) -> Self {
        CusumState {
            statistic: if statistic.is_finite() && statistic > 0.0 {
                statistic
            } else {
                0.0
            },
        }
    }

    /// S_{t−1}: the statistic carried into the next day (0 right after an alarm).
    pub fn statistic(&self) -> f64 {
        self.statistic
    }

    /// Back to rest, e.g. when the in-control model is refitted.
    pub fn reset(&mut self) {
        self.statistic = 0.0;
    }

    /// Advances one day. The judgement carries observed y_t, expected μ0,t, the count needed to
    /// alarm today, the statistic S_t (before any reset) and the alarm. After an alarm the
    /// state restarts at 0, as the package does.
    ///
    /// Counts must be finite and ≥ 0 (whole numbers in practice: R truncates to integer), and
    /// μ0,t finite and ≥ 0; anything else is refused so one bad value cannot poison the state.
    pub fn step(
        &mut self,
        chart: &LrCusum,
        observed: f64,
        mu0: f64,
    ) -> Result<Judgement, DetectError> {
        if !(observed >= 0.0 && observed.is_finite()) {
            return Err(DetectError::InvalidInput {
                name: "count",
                value: observed,
                reason: "must be finite and non-negative",
            });
        }
        if !(mu0 >= 0.0 && mu0.is_finite()) {
            return Err(DetectError::InvalidInput {
                name: "mu0",
                value: mu0,
                reason: "must be finite and non-negative",
            });
        }
        let previous = self.statistic;
        let statistic = (previous + chart.increment(observed, mu0)).max(0.0);
        let alarm = statistic > chart.threshold;
        self.statistic = if alarm { 0.0 } else { statistic };
        Ok(Judgement {
            observed,
            expected: mu0,
            upper_bound: chart.cases_to_alarm(previous, mu0),
            statistic,
            alarm: Some(alarm),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LN2: f64 = std::f64::consts::LN_2;

    fn poisson(threshold: f64) -> LrCusum {
        LrCusum::try_from_parts(CountFamily::Poisson, LN2, threshold).expect("valid")
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn poisson_sequence_by_hand() {
        let chart = poisson(2.0);
        let mut state = CusumState::new();
        // Day 1: y = 2, μ0 = 1: Z = 2 ln2 − 1 = 0.3863, S = 0.3863.
        let j = state.step(&chart, 2.0, 1.0).expect("valid");
        assert!(close(j.statistic, 2.0 * LN2 - 1.0, 1e-15));
        assert!(close(j.upper_bound, (2.0 + 1.0) / LN2, 1e-15));
        assert_eq!((j.expected, j.alarm), (1.0, Some(false)));
        // Day 2: y = 0: Z = −1, S = max(0, −0.61) = 0.
        let j = state.step(&chart, 0.0, 1.0).expect("valid");
        assert_eq!(j.statistic, 0.0);
        // Day 3: y = 4: Z = 4 ln2 − 1 = 1.7726; day 4: y = 2: S = 1.7726 + 0.3863 = 2.159 > 2.
        let j = state.step(&chart, 4.0, 1.0).expect("valid");
        assert!(close(j.statistic, 4.0 * LN2 - 1.0, 1e-15));
        assert_eq!(j.alarm, Some(false));
        let j = state.step(&chart, 2.0, 1.0).expect("valid");
        assert!(close(j.statistic, 6.0 * LN2 - 2.0, 1e-15));
        assert!(close(
            j.upper_bound,
            (2.0 - (4.0 * LN2 - 1.0) + 1.0) / LN2,
            1e-15
        ));
        assert_eq!(j.alarm, Some(true));
        // Reset after the alarm: the next day starts from 0.
        assert_eq!(state.statistic(), 0.0);
        let j = state.step(&chart, 2.0, 1.0).expect("valid");
        assert!(close(j.statistic, 2.0 * LN2 - 1.0, 1e-15));
        assert!(close(j.upper_bound, 3.0 / LN2, 1e-15));
    }

    /// Without the reset a run of high counts would alarm every day; with it, alarms are
    /// spaced by the days needed to climb back over c.
    #[test]
    fn reset_after_alarm_spaces_alarms() {
        let chart = poisson(3.0);
        let counts = vec![6.0; 10];
        let mu0 = vec![2.0; 10];
        // Z = 6 ln2 − 2 = 2.159 per day: S = 2.159 (no), 4.318 (alarm, reset), 2.159, ...
        let alarms: Vec<bool> = chart
            .judge_series(&counts, &mu0)
            .expect("valid")
            .iter()
            .map(|j| j.alarm == Some(true))
            .collect();
        let expected: Vec<bool> = (0..10).map(|t| t % 2 == 1).collect();
        assert_eq!(alarms, expected);
    }

    /// Strict ">": reaching c exactly is not an alarm (as in lr_cusum).
    #[test]
    fn threshold_is_strict() {
        let chart = poisson(2.0 * LN2 - 1.0);
        let mut state = CusumState::new();
        let j = state.step(&chart, 2.0, 1.0).expect("valid");
        assert_eq!(j.statistic, chart.threshold());
        assert_eq!(j.alarm, Some(false));
    }

    /// The "cases" bound: the smallest whole count above it alarms, the largest one not above it
    /// does not, from any carried-in statistic, for both families.
    #[test]
    fn upper_bound_is_consistent_with_alarms() {
        let charts = [
            poisson(2.7),
            LrCusum::try_from_parts(
                CountFamily::negative_binomial(0.4).expect("valid"),
                0.9,
                4.1,
            )
            .expect("valid"),
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for chart in charts {
            for _ in 0..2000 {
                let previous = uniform() * chart.threshold();
                let mu0 = 0.05 + 30.0 * uniform();
                let bound = chart.cases_to_alarm(previous, mu0);
                assert!(bound > 0.0);
                let above = bound.floor() + 1.0;
                let at_or_below = bound.ceil() - 1.0;
                let mut state = CusumState {
                    statistic: previous,
                };
                let mut again = state;
                assert_eq!(
                    state.step(&chart, above, mu0).expect("valid").alarm,
                    Some(true)
                );
                if at_or_below >= 0.0 {
                    let j = again.step(&chart, at_or_below, mu0).expect("valid");
                    assert_eq!(j.alarm, Some(false), "bound {bound}, previous {previous}");
                }
            }
        }
    }

    /// NB → Poisson as α → 0: increments and bounds converge.
    #[test]
    fn negative_binomial_tends_to_poisson() {
        let pois = poisson(3.0);
        for alpha in [1e-4, 1e-7, 1e-10] {
            let nb = LrCusum::try_from_parts(
                CountFamily::negative_binomial(alpha).expect("valid"),
                LN2,
                3.0,
            )
            .expect("valid");
            for (y, mu) in [(0.0, 0.3), (4.0, 2.5), (17.0, 9.0)] {
                let tol = alpha * 100.0 + 1e-12;
                assert!(close(nb.increment(y, mu), pois.increment(y, mu), tol));
                assert!(close(
                    nb.cases_to_alarm(1.0, mu),
                    pois.cases_to_alarm(1.0, mu),
                    tol
                ));
            }
        }
    }

    /// The NB increment by hand: α = 0.5, μ0 = 2, κ = ln 2: L = ln(2/3), Z = y ln2 + (y + 2) L.
    #[test]
    fn negative_binomial_by_hand() {
        let nb = LrCusum::try_from_parts(
            CountFamily::negative_binomial(0.5).expect("valid"),
            LN2,
            1.0,
        )
        .expect("valid");
        let l = (2.0f64 / 3.0).ln();
        assert!(close(nb.increment(5.0, 2.0), 5.0 * LN2 + 7.0 * l, 1e-14));
        // Package's bound: (cα − Sα − L)/(α(κ + L)).
        let s = 0.25;
        let expected = (0.5 - s * 0.5 - l) / (0.5 * (LN2 + l));
        assert!(close(nb.cases_to_alarm(s, 2.0), expected, 1e-14));
    }

    #[test]
    fn refuses_bad_parameters_and_inputs() {
        assert!(LrCusum::try_from_parts(CountFamily::Poisson, 0.0, 1.0).is_err());
        assert!(LrCusum::try_from_parts(CountFamily::Poisson, LN2, -1.0).is_err());
        assert!(
            LrCusum::try_from_parts(CountFamily::NegativeBinomial { alpha: 0.0 }, LN2, 1.0)
                .is_err()
        );
        let params = CusumParams {
            family: FamilyKind::NegativeBinomial,
            alpha: None,
            kappa: LN2,
            threshold: 2.0,
        };
        assert!(LrCusum::try_new(&params).is_err());
        let chart = poisson(2.0);
        let mut state = CusumState::new();
        assert!(state.step(&chart, -1.0, 1.0).is_err());
        assert!(state.step(&chart, f64::NAN, 1.0).is_err());
        assert!(state.step(&chart, 1.0, f64::INFINITY).is_err());
        assert_eq!(
            state.statistic(),
            0.0,
            "refused inputs leave the state alone"
        );
        assert!(chart.judge_series(&[1.0], &[]).is_err());
    }
}
