//! The regional leader (`detect.placement = "leader"`): with several Kafka instances
//! sharing the partitions, none of them sees a whole region, so the instances only
//! commit their events and one of them, elected through a lease in the store, runs the
//! regional stage over the events all of them committed, in commit order. Its results
//! commit with the cursor of the events they count, under the lease: a deposed leader's
//! commit is refused, and a new leader continues from the store exactly where the last
//! commit left off.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::batch::{BatchOutput, Match, RestoredEvent};
use crate::domain::event::{Event, Payload, Subject};
use crate::domain::registry::{HouseholdIdx, Registry};
use crate::pipeline::detect::stage::RegionalStage;
use crate::store::{FeedCursor, FeedEvent, Fence, Lease, StoreError};

/// Events read from the store per step.
const FEED_BATCH: i64 = 5_000;

/// Why a lead ended before the process stopped.
#[derive(Debug, thiserror::Error)]
enum LeadEnded {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Runs until `cancel`: takes the regional lead whenever it is free and runs the
/// regional stage while it holds it; stands by otherwise.
pub async fn run(app: App, cancel: CancellationToken) {
    let holder = format!(
        "{}-{}-{}",
        app.settings.kafka.client_id,
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let lease_ms = app.settings.detect.leader_lease_seconds * 1000;
    let standby = Duration::from_millis((lease_ms / 3).clamp(200, 5_000) as u64);
    while !cancel.is_cancelled() {
        let now = Utc::now().timestamp_millis();
        match app
            .store
            .acquire_regional_lead(&holder, now + lease_ms, now)
            .await
        {
            Ok(Some((lease, cursor))) => {
                tracing::info!(epoch = lease.epoch, "took the regional lead");
                app.metrics.regional_leader(true);
                let ended = lead(&app, &lease, cursor, &cancel).await;
                app.metrics.regional_leader(false);
                match ended {
                    Ok(()) => {
                        // Stopping: let another instance take over at once.
                        if let Err(error) = app.store.release_regional_lead(&lease).await {
                            tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot release the regional lead");
                        }
                        return;
                    }
                    Err(LeadEnded::Store(StoreError::LeadershipLost)) => {
                        tracing::warn!(
                            epoch = lease.epoch,
                            "the regional lead passed to another instance"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::Chain(&error), "regional lead interrupted; restarting from the store");
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot reach the regional lease")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(standby) => {}
        }
    }
}

/// Holds the lead: restores the regional stage up to `cursor`, then follows the
/// committed events. Returns `Ok` when cancelled.
async fn lead(
    app: &App,
    lease: &Lease,
    mut cursor: FeedCursor,
    cancel: &CancellationToken,
) -> Result<(), LeadEnded> {
    let settings = &app.settings.detect;
    let lease_ms = settings.leader_lease_seconds * 1000;
    // Renew well before the lease runs out, even with nothing to count.
    let renew_every = Duration::from_millis((lease_ms / 3).max(100) as u64);
    let idle = renew_every.min(Duration::from_secs(1));

    let registry = app.load_registry().await?;
    let mut stage = RegionalStage::new(settings);
    stage.restore_watermark(app.store.regional_clock().await?.unwrap_or_default());
    let history: Vec<RestoredEvent> = app
        .store
        .feed_history(
            stage.events_needed_from(),
            stage.events_held_after(),
            cursor,
        )
        .await?
        .into_iter()
        .map(restored)
        .collect();
    app.restore_regional(&mut stage, &registry, &history)
        .await?;
    drop(history);

    let mut renewed = tokio::time::Instant::now();
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let step = app.store.feed_step(cursor, FEED_BATCH, "kafka:").await?;
        let events = step.events;
        for fed in &events {
            if let Some((event, households)) = observation(fed, &registry) {
                stage.observe(&event, &households, &registry);
            }
        }
        if let Some(last) = events.last() {
            cursor = last.cursor;
        }
        // Every instance's inputs, as of the events read: the watermark waits for a
        // partition still behind, whoever reads it.
        if let Some(lanes) = &step.lanes {
            stage.update_lanes(lanes);
        }
        app.metrics.regional_fed(events.len() as u64);
        let now = Utc::now();
        let output = stage.flush(&registry, now);
        let changed = output != Default::default();
        if !events.is_empty() || changed || renewed.elapsed() >= renew_every {
            let batch = BatchOutput {
                regional: output,
                ..BatchOutput::default()
            };
            let fence = Fence {
                lease: lease.clone(),
                cursor,
                expires_at_ms: now.timestamp_millis() + lease_ms,
            };
            app.store.commit_regional(&batch, &fence, now).await?;
            renewed = tokio::time::Instant::now();
        }
        if events.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }
}

/// What the regional stage observes of a committed event, as the pipeline would have:
/// the event and the registry households it resolved to. `None` for unmatched events
/// (the pipeline does not count them either) and unreadable payloads.
fn observation(fed: &FeedEvent, registry: &Registry) -> Option<(Event, Vec<HouseholdIdx>)> {
    let payload = fed.payload.clone()?;
    let (subject, households) = match (fed.matched, &fed.household_id, fed.region_code) {
        (Match::Unmatched, _, _) => return None,
        (_, Some(household), _) => (
            Subject::Household(household.clone()),
            registry.household_idx(household).into_iter().collect(),
        ),
        (_, None, Some(region)) => {
            let households = match &payload {
                Payload::IndustryProjectFailure(failure) => failure
                    .household_ids
                    .iter()
                    .filter_map(|id| registry.household_idx(id))
                    .collect(),
                _ => Vec::new(),
            };
            (Subject::Region(region), households)
        }
        (_, None, None) => return None,
    };
    Some((
        Event {
            event_id: fed.event_id.clone(),
            source: fed.source,
            occurred_at: fed.occurred_at,
            reported_at: fed.reported_at,
            subject,
            payload,
            payload_json: fed.payload_json.as_str().into(),
        },
        households,
    ))
}

/// A committed event as the regional stage's restore reads it.
fn restored(fed: FeedEvent) -> RestoredEvent {
    RestoredEvent {
        event_id: fed.event_id,
        occurred_at: fed.occurred_at,
        reported_at: fed.reported_at,
        person_key: None,
        households: fed.household_id.into_iter().collect(),
        region_code: fed.region_code,
        payload: fed.payload,
    }
}
