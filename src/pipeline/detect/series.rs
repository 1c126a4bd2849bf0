//! One region's daily count series under the detectors of its level: calendar days in
//! China Standard Time, the CUSUM's in-control model per refit period ([`Epoch`]), and
//! judging one day with every configured method. Shared by the streaming stage, `yujing
//! detect` and `yujing evaluate`, so the three judge alike. Pure; cannot fail (invalid
//! parameters are refused when the settings are checked).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::RegionLevel;
use crate::domain::signal::Method;

use super::calibrate::calibrate_threshold;
use super::cusum::{CountFamily, CusumState, FamilyKind, LrCusum};
use super::ears::{DetectError, Ears, EarsMethod, EarsParams, Judgement};
use super::farrington::Farrington;
use super::glm::{SeasonalFit, SeasonalModel, SeasonalSpec};
use super::settings::DetectSettings;

/// A calendar day in China Standard Time, as days since 1970-01-01.
pub type Day = i32;

const CST_SECONDS: i64 = 8 * 3600;

/// The CST day an instant falls on.
pub fn day_of(time: DateTime<Utc>) -> Day {
    (time.timestamp() + CST_SECONDS).div_euclid(86_400) as Day
}

/// The date of a day.
pub fn date_of(day: Day) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day + EPOCH_CE_DAYS).unwrap_or(NaiveDate::MIN)
}

/// The day of a date.
pub fn day_from_date(date: NaiveDate) -> Day {
    date.num_days_from_ce() - EPOCH_CE_DAYS
}

/// The first instant after `day` (its end, CST midnight).
pub fn day_end(day: Day) -> DateTime<Utc> {
    Utc.timestamp_opt(i64::from(day + 1) * 86_400 - CST_SECONDS, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// 1970-01-01 in days from the common era.
const EPOCH_CE_DAYS: i32 = 719_163;

/// Read access to a series' daily counts (0 where nothing was counted).
pub trait DailyCounts {
    /// The count on `day`.
    fn count(&self, day: Day) -> f64;

    /// `sums[i]` = the sum of the 7 days ending on `last − 7·(n − 1 − i)`, n = `sums.len()`
    /// (oldest week first): the weekly sums a Farrington judgement reads.
    fn weekly_sums(&self, last: Day, sums: &mut [f64]) {
        let n = sums.len() as Day;
        for (i, sum) in sums.iter_mut().enumerate() {
            let end = last - 7 * (n - 1 - i as Day);
            *sum = (end - 6..=end).map(|d| self.count(d)).sum();
        }
    }
}

impl DailyCounts for BTreeMap<Day, u32> {
    fn count(&self, day: Day) -> f64 {
        self.get(&day).map_or(0.0, |&c| f64::from(c))
    }

    fn weekly_sums(&self, last: Day, sums: &mut [f64]) {
        // One pass over the (sparse) stored days instead of a look-up per day.
        let n = sums.len() as Day;
        sums.iter_mut().for_each(|s| *s = 0.0);
        let first = last - 7 * n + 1;
        for (&day, &count) in self.range(first..=last) {
            sums[((day - first) / 7) as usize] += f64::from(count);
        }
    }
}

/// A dense series starting at `first`.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    /// Day of `values[0]`.
    pub first: Day,
    /// Counts.
    pub values: &'a [f64],
}

impl DailyCounts for Dense<'_> {
    fn count(&self, day: Day) -> f64 {
        usize::try_from(day - self.first)
            .ok()
            .and_then(|i| self.values.get(i))
            .copied()
            .unwrap_or(0.0)
    }
}

/// A series with no counts (a new series' history).
pub struct NoCounts;

impl DailyCounts for NoCounts {
    fn count(&self, _day: Day) -> f64 {
        0.0
    }
}

/// The in-control model of one refit period of one series, and the calibrated chart.
/// What a checkpoint stores so that a restart judges exactly as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochModel {
    /// The fitted seasonal mean.
    pub fit: SeasonalFit,
    /// μ0,t is floored here (half an event over the history, as the fallback mean): a
    /// weekday with no events in the history must not get μ0 ≈ 0.
    pub floor: f64,
    /// The chart's family (the fitted one, α snapped to the calibration grid).
    pub family: CountFamily,
    /// κ.
    pub kappa: f64,
    /// The calibrated threshold c.
    pub threshold: f64,
    /// S_{start−1}: the statistic carried into the period's first day.
    pub carry_in: f64,
}

impl EpochModel {
    /// μ0,t.
    pub fn mu0(&self, day: Day) -> f64 {
        self.fit.mean_at(i64::from(day)).max(self.floor)
    }

    /// The chart (validated when built; a stored one is checked on restore).
    pub fn chart(&self) -> Option<LrCusum> {
        LrCusum::try_from_parts(self.family, self.kappa, self.threshold).ok()
    }

    /// Whether a stored model can be used.
    pub fn is_consistent(&self) -> bool {
        self.fit.is_consistent()
            && self.floor > 0.0
            && self.floor.is_finite()
            && self.carry_in.is_finite()
            && self.chart().is_some()
    }
}

/// One refit period: from `start` to the next period's start. `model` is `None` while
/// the series has less than `min_history_days` of history (no CUSUM judgement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// First day of the period.
    pub start: NaiveDate,
    /// The model, once there is enough history.
    pub model: Option<EpochModel>,
}

/// The count CUSUM of one level: how to fit, calibrate and refit.
#[derive(Debug, Clone)]
pub struct CusumPlan {
    kappa: f64,
    target_arl0_days: f64,
    history_days: i64,
    refit_days: i64,
    min_history_days: i64,
    period_days: f64,
    seasonal: SeasonalModel,
    /// Without annual harmonics.
    flat: SeasonalModel,
    /// Intercept only.
    constant: SeasonalModel,
    /// Thresholds by (α grid level, mean grid level): deterministic, computed once.
    thresholds: HashMap<(i32, i32), (CountFamily, f64)>,
}

/// Grid levels of the mean per doubling: means within about ±9 % share a calibrated
/// threshold (each calibration costs milliseconds; a finer grid multiplies them on a
/// county's first run without changing alarms measurably).
const MEAN_LEVELS_PER_DOUBLING: f64 = 4.0;
/// Grid levels of the NB dispersion per doubling.
const ALPHA_LEVELS_PER_DOUBLING: f64 = 4.0;
/// Events in the history per model coefficient needed to fit that model.
const EVENTS_PER_COEFFICIENT: f64 = 10.0;
/// Below this dispersion the chart is the Poisson one.
const MIN_ALPHA: f64 = 1e-3;

impl CusumPlan {
    /// The plan for charts of `family` calibrated to `target_arl0_days`.
    pub fn new(
        settings: &DetectSettings,
        family: FamilyKind,
        target_arl0_days: f64,
    ) -> Result<Self, DetectError> {
        let cusum = &settings.cusum;
        let spec = SeasonalSpec {
            harmonics: cusum.harmonics,
            period_days: cusum.period_days,
            trend: false,
            day_of_week: cusum.day_of_week,
            family,
            alpha: None,
        };
        Ok(CusumPlan {
            kappa: cusum.kappa,
            target_arl0_days,
            history_days: cusum.history_days,
            refit_days: cusum.refit_days,
            min_history_days: cusum.min_history_days,
            period_days: cusum.period_days,
            seasonal: SeasonalModel::try_new(&spec)?,
            flat: SeasonalModel::try_new(&SeasonalSpec {
                harmonics: 0,
                ..spec
            })?,
            constant: SeasonalModel::try_new(&SeasonalSpec {
                harmonics: 0,
                day_of_week: false,
                ..spec
            })?,
            thresholds: HashMap::new(),
        })
    }

    /// The first day of the refit period containing `day` (a calendar grid).
    pub fn epoch_start(&self, day: Day) -> Day {
        day - day.rem_euclid(self.refit_days as Day)
    }

    /// Days per refit period.
    pub fn refit_days(&self) -> Day {
        self.refit_days as Day
    }

    /// The target in-control ARL.
    pub fn target_arl0_days(&self) -> f64 {
        self.target_arl0_days
    }

    /// Fits the period starting `start` on the counts before it (from `origin`, at most
    /// `history_days`), and calibrates its threshold. `carry_in` is S_{start−1}.
    pub fn fit(
        &mut self,
        counts: &dyn DailyCounts,
        origin: Day,
        start: Day,
        carry_in: f64,
    ) -> Epoch {
        let from = origin.max(start - self.history_days as Day);
        let n = start - from;
        let date = date_of(start);
        if i64::from(n) < self.min_history_days {
            return Epoch {
                start: date,
                model: None,
            };
        }
        let times: Vec<i64> = (from..start).map(i64::from).collect();
        let values: Vec<f64> = (from..start).map(|d| counts.count(d)).collect();
        // As many terms as the history supports: annual harmonics only once it spans a
        // period, and at least EVENTS_PER_COEFFICIENT events per coefficient (the usual
        // events-per-variable rule), so a sparse series gets a constant mean instead of
        // an overfitted weekday pattern whose near-zero days would false-alarm.
        let events: f64 = values.iter().sum();
        let supports = |model: &SeasonalModel| {
            events >= EVENTS_PER_COEFFICIENT * model.coefficient_count() as f64
        };
        let model = if f64::from(n) >= self.period_days && supports(&self.seasonal) {
            &self.seasonal
        } else if supports(&self.flat) {
            &self.flat
        } else {
            &self.constant
        };
        // Counts are finite and ≥ 0 and the history is not empty, so fitting cannot fail.
        let Ok(fit) = model.fit(&times, &values) else {
            return Epoch {
                start: date,
                model: None,
            };
        };
        let floor = 0.5 / f64::from(n);
        let days = self.refit_days as Day;
        let mean = (start..start + days)
            .map(|d| fit.mean_at(i64::from(d)).max(floor))
            .sum::<f64>()
            / f64::from(days);
        let (family, threshold) = self.threshold(fit.family(), mean);
        Epoch {
            start: date,
            model: Some(EpochModel {
                fit,
                floor,
                family,
                kappa: self.kappa,
                threshold,
                carry_in,
            }),
        }
    }

    /// The chart family on the calibration grid and its threshold for a mean level.
    fn threshold(&mut self, family: CountFamily, mean: f64) -> (CountFamily, f64) {
        let alpha_level = match family {
            CountFamily::NegativeBinomial { alpha } if alpha >= MIN_ALPHA => {
                (alpha.log2() * ALPHA_LEVELS_PER_DOUBLING).round() as i32
            }
            _ => i32::MIN,
        };
        let mean = mean.clamp(1e-6, super::calibrate::MAX_MEAN);
        let mean_level = (mean.log2() * MEAN_LEVELS_PER_DOUBLING).round() as i32;
        let (kappa, target) = (self.kappa, self.target_arl0_days);
        *self
            .thresholds
            .entry((alpha_level, mean_level))
            .or_insert_with(|| shared_threshold(alpha_level, mean_level, kappa, target))
    }
}

/// Calibrated thresholds shared by every plan of the process: a calibration is a
/// pure function of (family grid cell, κ, target), costs milliseconds, and every
/// level, series and restart asks for the same few hundred cells.
fn shared_threshold(
    alpha_level: i32,
    mean_level: i32,
    kappa: f64,
    target: f64,
) -> (CountFamily, f64) {
    type Key = (i32, i32, u64, u64);
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<Key, (CountFamily, f64)>>> =
        std::sync::OnceLock::new();
    let key = (alpha_level, mean_level, kappa.to_bits(), target.to_bits());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|map| map.get(&key).copied()) {
        return hit;
    }
    let family = if alpha_level == i32::MIN {
        CountFamily::Poisson
    } else {
        CountFamily::NegativeBinomial {
            alpha: (f64::from(alpha_level) / ALPHA_LEVELS_PER_DOUBLING).exp2(),
        }
    };
    let grid_mean = (f64::from(mean_level) / MEAN_LEVELS_PER_DOUBLING).exp2();
    let threshold = match calibrate_threshold(family, kappa, grid_mean, target) {
        Ok(calibration) => calibration.threshold,
        // Beyond the calibrator's chain: the highest threshold it examined
        // (conservative: its ARL0 is still below the target only when the series is
        // so sparse that a lower rate of alarms is not reachable).
        Err(DetectError::CalibrationOutOfRange { max_threshold, .. }) => max_threshold,
        Err(_) => f64::INFINITY,
    };
    let computed = (family, threshold);
    if let Ok(mut map) = cache.lock() {
        map.insert(key, computed);
    }
    computed
}

/// Detector bit of a method in a day's alarm mask (the order of [`Method::DETECTORS`]).
pub fn method_bit(method: Method) -> u8 {
    Method::DETECTORS
        .iter()
        .position(|&m| m == method)
        .map_or(0, |i| 1 << i)
}

/// The detectors of one level of the hierarchy.
#[derive(Debug, Clone)]
pub struct LevelDetectors {
    /// The level.
    pub level: RegionLevel,
    /// EARS variants to run.
    pub ears: Vec<(Method, Ears)>,
    /// The CUSUM, when it runs.
    pub cusum: Option<CusumPlan>,
    /// Farrington Flexible, when it runs (judged on Sundays).
    pub farrington: Option<Farrington>,
}

/// Every detector's verdict on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DayJudgements {
    /// Indexed like [`Method::DETECTORS`].
    pub by_method: [Option<Judgement>; 6],
}

impl DayJudgements {
    /// The alarm mask.
    pub fn alarms(&self) -> u8 {
        let mut bits = 0;
        for (i, judgement) in self.by_method.iter().enumerate() {
            if judgement.and_then(|j| j.alarm) == Some(true) {
                bits |= 1 << i;
            }
        }
        bits
    }

    /// The judgement of `method`.
    pub fn get(&self, method: Method) -> Option<Judgement> {
        let i = Method::DETECTORS.iter().position(|&m| m == method)?;
        self.by_method[i]
    }
}

impl LevelDetectors {
    /// The detectors `methods` of `level` with the settings' parameters; the CUSUM is
    /// calibrated to `target_arl0_days`.
    pub fn new(
        settings: &DetectSettings,
        level: RegionLevel,
        methods: &[Method],
        target_arl0_days: f64,
    ) -> Result<Self, DetectError> {
        let level_settings = settings.level(level);
        let mut ears = Vec::new();
        let mut cusum = None;
        let mut farrington = None;
        for &method in methods {
            let (variant, alpha) = match method {
                Method::EarsC1 => (EarsMethod::C1, settings.ears.alpha_c1),
                Method::EarsC2 => (EarsMethod::C2, settings.ears.alpha_c2),
                Method::EarsC3 => (EarsMethod::C3, settings.ears.alpha_c3),
                Method::EarsC3Textbook => (EarsMethod::C3Textbook, settings.ears.alpha_c3),
                Method::Cusum => {
                    cusum = Some(CusumPlan::new(
                        settings,
                        level_settings.cusum_family,
                        target_arl0_days,
                    )?);
                    continue;
                }
                Method::FarringtonFlexible => {
                    farrington = Some(Farrington::try_new(&settings.farrington.params())?);
                    continue;
                }
                _ => continue,
            };
            let params = EarsParams {
                method: variant,
                baseline: settings.ears.baseline_days,
                alpha: Some(alpha),
                min_sigma: level_settings.ears_min_sigma,
            };
            ears.push((method, Ears::try_new(&params)?));
        }
        Ok(LevelDetectors {
            level,
            ears,
            cusum,
            farrington,
        })
    }

    /// Days before a judged day that EARS reads (0 without EARS).
    pub fn ears_history(&self) -> usize {
        self.ears
            .iter()
            .map(|(_, e)| e.history_len())
            .max()
            .unwrap_or(0)
    }

    /// Judges day `t` of `counts` (whose first day is `origin`). `model` is the CUSUM
    /// period model for `t` (if any) and `statistic` S_{t−1}; returns the judgements and
    /// S_t after any reset.
    pub fn judge(
        &self,
        counts: &dyn DailyCounts,
        origin: Day,
        t: Day,
        model: Option<&EpochModel>,
        statistic: f64,
    ) -> (DayJudgements, f64) {
        let mut out = DayJudgements::default();
        let available = usize::try_from(t - origin + 1).unwrap_or(0);
        let need = self.ears_history().min(available);
        if need > 0 {
            let window: Vec<f64> = (t + 1 - need as Day..=t).map(|d| counts.count(d)).collect();
            for (method, ears) in &self.ears {
                let keep = ears.history_len();
                if keep > need {
                    continue; // the first days, without a full baseline
                }
                let judgement = ears.judge_latest(&window[need - keep..]);
                if let Some(i) = Method::DETECTORS.iter().position(|m| m == method) {
                    out.by_method[i] = judgement;
                }
            }
        }
        if let Some(farrington) = &self.farrington
            && is_week_end(t)
        {
            out.by_method[5] = judge_week(farrington, counts, origin, t);
        }
        let mut next = 0.0;
        if let (Some(model), Some(chart)) = (model, model.and_then(EpochModel::chart)) {
            let mut state = CusumState::with_statistic(statistic);
            // Counts are whole and ≥ 0 and μ0 is floored > 0, so a step cannot fail.
            if let Ok(judgement) = state.step(&chart, counts.count(t), model.mu0(t)) {
                out.by_method[4] = Some(judgement);
                next = state.statistic();
            }
        }
        (out, next)
    }
}

/// Whether `day` ends a week: a Sunday (1970-01-01, day 0, was a Thursday).
pub fn is_week_end(day: Day) -> bool {
    (day + 3).rem_euclid(7) == 6
}

/// Farrington Flexible on the weekly sums ending on `t` (a Sunday), when the series has
/// its full history since `origin` (`None` before: weeks before the first counted day are
/// not zeros, they are unknown).
fn judge_week(
    farrington: &Farrington,
    counts: &dyn DailyCounts,
    origin: Day,
    t: Day,
) -> Option<Judgement> {
    let weeks = farrington.history_weeks();
    if t - 7 * weeks as Day + 1 < origin {
        return None;
    }
    let mut sums = vec![0.0; weeks];
    counts.weekly_sums(t, &mut sums);
    farrington
        .judge(&sums, weeks - 1)
        .map(|outcome| outcome.judgement)
}

/// An offline run over a whole series (`yujing detect`, `yujing evaluate`): judges every
/// day from `from` to `last` as the stream would, refitting on the calendar grid. Counts
/// before `from` (back to `origin`) are history: baselines and in-control fits read them.
pub fn run_offline(
    detectors: &mut LevelDetectors,
    counts: &dyn DailyCounts,
    origin: Day,
    from: Day,
    last: Day,
    mut visit: impl FnMut(Day, &DayJudgements),
) {
    let mut epoch: Option<Epoch> = None;
    let mut statistic = 0.0;
    for t in from.max(origin)..=last {
        if let Some(plan) = detectors.cusum.as_mut() {
            let start = plan.epoch_start(t);
            if epoch
                .as_ref()
                .is_none_or(|e| day_from_date(e.start) != start)
            {
                let fitted = plan.fit(counts, origin, start, statistic);
                if fitted.model.is_none() {
                    statistic = 0.0;
                }
                epoch = Some(fitted);
            }
        }
        let model = epoch.as_ref().and_then(|e| e.model.as_ref());
        let (judgements, next) = detectors.judge(counts, origin, t, model, statistic);
        statistic = next;
        visit(t, &judgements);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn days_are_china_standard_time() {
        // 2024-07-03T16:30Z is 2024-07-04T00:30+08:00.
        let t = Utc.with_ymd_and_hms(2024, 7, 3, 16, 30, 0).unwrap();
        assert_eq!(date_of(day_of(t)).to_string(), "2024-07-04");
        let t = Utc.with_ymd_and_hms(2024, 7, 3, 15, 59, 59).unwrap();
        assert_eq!(date_of(day_of(t)).to_string(), "2024-07-03");
        let day = day_of(t);
        assert_eq!(
            day_end(day),
            Utc.with_ymd_and_hms(2024, 7, 3, 16, 0, 0).unwrap()
        );
        assert_eq!(day_from_date(date_of(day)), day);
        assert_eq!(
            day_from_date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            0
        );
    }

    #[test]
    fn epochs_follow_a_calendar_grid() {
        let settings = Settings::defaults().detect;
        let plan = CusumPlan::new(&settings, FamilyKind::Poisson, 365.0).unwrap();
        let refit = plan.refit_days();
        assert_eq!(plan.epoch_start(0), 0);
        assert_eq!(plan.epoch_start(refit - 1), 0);
        assert_eq!(plan.epoch_start(refit), refit);
        assert_eq!(plan.epoch_start(-1), -refit);
    }

    /// Too little history: no model; a silent history: the floored fallback mean, with a
    /// threshold meeting the target.
    #[test]
    fn fits_need_history_and_floor_silence() {
        let settings = Settings::defaults().detect;
        let mut plan = CusumPlan::new(&settings, FamilyKind::Poisson, 365.0).unwrap();
        let start = plan.epoch_start(20_000);
        let short = plan.fit(&NoCounts, start - 10, start, 0.0);
        assert!(short.model.is_none());
        let silent = plan.fit(&NoCounts, start - 200, start, 0.0);
        let model = silent.model.expect("enough history");
        assert!((model.mu0(start) - 0.5 / 200.0).abs() < 1e-12);
        assert!(model.threshold.is_finite());
        assert!(model.is_consistent());
    }

    /// The checkpointed model survives JSON unchanged, bit for bit.
    #[test]
    fn epoch_models_round_trip() {
        let settings = Settings::defaults().detect;
        let mut plan = CusumPlan::new(&settings, FamilyKind::NegativeBinomial, 365.0).unwrap();
        let values: Vec<f64> = (0..400).map(|i| f64::from((i * 7 % 5) as u8)).collect();
        let dense = Dense {
            first: 19_000,
            values: &values,
        };
        let start = plan.epoch_start(19_400);
        let epoch = plan.fit(&dense, 19_000, start, 1.25);
        let text = serde_json::to_string(&epoch).unwrap();
        let back: Epoch = serde_json::from_str(&text).unwrap();
        assert_eq!(back, epoch);
        let model = back.model.unwrap();
        assert!(model.is_consistent());
        assert_eq!(
            model.mu0(start).to_bits(),
            epoch.model.unwrap().mu0(start).to_bits()
        );
    }
}
