//! Regional figures: every village's figures are read in one pass and kept for
//! `api.summary_cache_ms` (one refresh at a time, whoever asks), and any region's
//! summary is rolled up from them; the count series a chart draws is judged by the
//! same detectors the stream runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::Mutex;

use super::views::{
    AlertFigures, Judged, RegionFigures, RegionView, Series, SeriesDay, SignalFigures, Summary,
    TaskFigures,
};
use crate::domain::ids::{RegionCode, RegionLevel};
use crate::domain::registry::Region;
use crate::domain::signal::{Method, RiskKind};
use crate::domain::task::days_left;
use crate::pipeline::detect::DetectSettings;
use crate::pipeline::detect::series::{LevelDetectors, date_of, day_from_date, run_offline};
use crate::store::api::VillageFigures;
use crate::store::{Store, StoreError};

/// What one refresh read.
#[derive(Debug, Default)]
struct Figures {
    villages: HashMap<String, VillageFigures>,
    signals: Vec<(String, String)>,
    at: Option<DateTime<Utc>>,
}

/// The per-village figures, refreshed at most every `max_age`.
#[derive(Debug)]
pub struct SummaryCache {
    max_age: Duration,
    current: Mutex<(Option<Instant>, Arc<Figures>)>,
}

impl SummaryCache {
    /// An empty cache whose figures live `max_age`.
    pub fn new(max_age: Duration) -> Self {
        SummaryCache {
            max_age,
            current: Mutex::new((None, Arc::new(Figures::default()))),
        }
    }

    /// Forgets the figures (after a change made through this process).
    pub async fn invalidate(&self) {
        self.current.lock().await.0 = None;
    }

    async fn figures(&self, store: &Store) -> Result<Arc<Figures>, StoreError> {
        // Held across the refresh: concurrent requests wait for one refresh instead
        // of each running the aggregates.
        let mut current = self.current.lock().await;
        if let (Some(read), figures) = &*current
            && read.elapsed() < self.max_age
        {
            return Ok(figures.clone());
        }
        let figures = Arc::new(Figures {
            villages: store.village_figures().await?,
            signals: store.active_signals().await?,
            at: Some(Utc::now()),
        });
        *current = (Some(Instant::now()), figures.clone());
        Ok(figures)
    }

    /// The summary of `region` (itself and each child), with the regions in scope.
    pub async fn summary(
        &self,
        store: &Store,
        region: &Region,
        regions: &[Region],
        now: DateTime<Utc>,
    ) -> Result<Summary, StoreError> {
        let figures = self.figures(store).await?;
        let children: Vec<&Region> = regions
            .iter()
            .filter(|r| r.parent == Some(region.code))
            .collect();
        Ok(Summary {
            region: roll_up(region, &figures, now),
            children: children
                .into_iter()
                .map(|child| roll_up(child, &figures, now))
                .collect(),
            computed_at: figures.at.unwrap_or(now),
            counted_days: None,
        })
    }
}

fn roll_up(region: &Region, figures: &Figures, now: DateTime<Utc>) -> RegionFigures {
    let mut alerts = AlertFigures::default();
    let mut tasks = TaskFigures::default();
    let mut signals = SignalFigures::default();
    let mut monitored = 0;
    let mut earliest: Option<DateTime<Utc>> = None;
    for (code, village) in &figures.villages {
        let Ok(code) = RegionCode::parse(code) else {
            continue;
        };
        if !code.is_within(region.code) {
            continue;
        }
        for (level, risk_types, count) in &village.open_alerts {
            alerts.total += count;
            *alerts.by_level.entry(level.clone()).or_default() += count;
            let types: Vec<String> = serde_json::from_str(risk_types).unwrap_or_default();
            for risk in types {
                *alerts.by_risk_type.entry(risk).or_default() += count;
            }
        }
        for (stage, overdue, count) in &village.open_tasks {
            tasks.open += count;
            *tasks.by_stage.entry(stage.clone()).or_default() += count;
            if *overdue {
                tasks.overdue += count;
            }
        }
        earliest = match (earliest, village.earliest_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        monitored += village.monitored;
    }
    tasks.oldest_days_left = earliest.map(|due| days_left(now, due));
    for (code, severity) in &figures.signals {
        if RegionCode::parse(code).is_ok_and(|c| c.is_within(region.code)) {
            signals.active += 1;
            *signals.by_severity.entry(severity.clone()).or_default() += 1;
        }
    }
    RegionFigures {
        region: RegionView::from(region),
        alerts,
        tasks,
        signals,
        monitored_households: monitored,
    }
}

/// Days of history read before `from` so the detectors' baselines and fits are those
/// of the stream.
const HISTORY_DAYS: i64 = 400;

/// The series of `kind` in `region` from `from` to `to`, judged day by day.
pub async fn series(
    store: &Store,
    settings: &DetectSettings,
    region: RegionCode,
    kind: RiskKind,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Series, StoreError> {
    let history_from = from - chrono::Duration::days(HISTORY_DAYS);
    let rows = store
        .series_counts(&region.to_string(), kind.as_str(), history_from, to)
        .await?;
    let counts: BTreeMap<_, u32> = rows
        .iter()
        .map(|(day, count)| (day_from_date(*day), *count))
        .collect();
    let origin = counts
        .keys()
        .next()
        .copied()
        .unwrap_or_else(|| day_from_date(from))
        .min(day_from_date(from));
    let level = match region.level() {
        RegionLevel::Province | RegionLevel::City => RegionLevel::County,
        level => level,
    };
    let target = settings.target_arl0_days(RiskKind::SERIES.len());
    let mut days = Vec::new();
    match LevelDetectors::new(settings, level, Method::DETECTORS, target) {
        Ok(mut detectors) => {
            run_offline(
                &mut detectors,
                &counts,
                origin,
                day_from_date(from),
                day_from_date(to),
                |day, judged| {
                    let judgements = Method::DETECTORS
                        .iter()
                        .zip(judged.by_method.iter())
                        .filter_map(|(method, j)| {
                            j.map(|j| Judged {
                                method: *method,
                                expected: Some(j.expected).filter(|v| v.is_finite()),
                                upper_bound: Some(j.upper_bound).filter(|v| v.is_finite()),
                                alarm: j.alarm,
                            })
                        })
                        .collect();
                    days.push(SeriesDay {
                        day: date_of(day),
                        count: counts.get(&day).copied().unwrap_or(0),
                        judgements,
                    });
                },
            );
        }
        Err(error) => return Err(StoreError::Corrupt(error.to_string())),
    }
    Ok(Series {
        region_code: region.to_string(),
        kind,
        from,
        to,
        days,
    })
}
