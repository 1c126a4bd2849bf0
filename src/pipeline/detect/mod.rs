//! Regional detection: count series per (region, risk kind, day) -> signals. The
//! published detectors (EARS C1–C3, count CUSUM on a seasonal in-control mean,
//! threshold calibration, Farrington Flexible on weekly sums, the space–time permutation
//! scan over a county's villages), each pure, the first three checked against the R
//! package `surveillance`; the streaming [`stage::RegionalStage`] that counts, closes days
//! by watermark, judges them, runs the systemic rules and keeps one signal per key.

pub mod calibrate;
pub mod cusum;
pub mod ears;
pub mod farrington;
pub mod glm;
pub mod scan;
pub mod series;
pub mod settings;
pub mod signals;
pub mod stage;
pub mod systemic;

pub use ears::{DetectError, Judgement};
pub use settings::DetectSettings;
pub use stage::RegionalStage;

use crate::domain::ids::RegionCode;
use crate::domain::signal::{Method, RiskKind};
use series::{DailyCounts, Day};

/// How often a detector judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every closed day (EARS, CUSUM).
    Daily,
    /// Every closed ISO week, on weekly sums (Farrington Flexible).
    Weekly,
}

/// What a detector sees of one region's series: its counts (history imported with
/// `RegionalStage::restore_counts` included), from `origin`, up to the judged day.
pub struct SeriesView<'a> {
    /// Region.
    pub region: RegionCode,
    /// Kind.
    pub kind: RiskKind,
    /// First day of the series.
    pub origin: Day,
    /// The counts.
    pub counts: &'a dyn DailyCounts,
}

impl SeriesView<'_> {
    /// Sums of the 7 days ending on each of `weeks` week ends up to `last` (oldest
    /// first): the weekly aggregation a Farrington-type detector works on.
    pub fn weekly_sums(&self, last: Day, weeks: usize) -> Vec<f64> {
        (0..weeks)
            .rev()
            .map(|w| {
                let end = last - 7 * w as Day;
                (end - 6..=end).map(|d| self.counts.count(d)).sum()
            })
            .collect()
    }
}

/// The interface the next detectors plug into (Farrington Flexible on weekly counts,
/// needing years of history; the space–time permutation scan, which sees every region of
/// a kind at once and so gets [`SeriesView`]s of all of them). EARS and the CUSUM are
/// wired directly in [`series::LevelDetectors`] because the CUSUM carries state across
/// days; a stateless detector implements this and is judged alike.
pub trait Detector: Send + Sync {
    /// The method it reports as.
    fn method(&self) -> Method;
    /// Its cadence.
    fn cadence(&self) -> Cadence;
    /// Days of history it needs before it can judge.
    fn history_days(&self) -> usize;
    /// Judges `day` (the last day of a closed week for weekly detectors).
    fn judge(&self, series: &SeriesView<'_>, day: Day) -> Option<Judgement>;
}
