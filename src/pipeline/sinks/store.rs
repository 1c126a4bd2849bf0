//! Store sink: a processed batch + its source positions -> one committed
//! transaction. A transient failure (database gone, locked, connection dropped)
//! is retried with capped exponential backoff while the stages upstream wait on the
//! bounded channel — back-pressure, nothing dropped; a permanent one is fatal.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchOutput;
use crate::batch::SourcePosition;
use crate::config::StoreSettings;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// Commits `batch` with `positions`, retrying transient errors. Gives up when the
/// configured retry time runs out, on a permanent error, or when `cancel` fires
/// while waiting (the batch is then not committed and will be read again).
pub async fn commit_with_retry(
    store: &Store,
    batch: &BatchOutput,
    positions: &[SourcePosition],
    settings: &StoreSettings,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let cap = Duration::from_secs(settings.max_backoff_seconds);
    let give_up =
        (settings.retry_for_seconds > 0).then(|| Duration::from_secs(settings.retry_for_seconds));
    loop {
        let attempt = std::time::Instant::now();
        match store.commit_batch(batch, positions, Utc::now()).await {
            Ok(()) => {
                metrics.batch_committed(batch, attempt.elapsed());
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                metrics.commit_retried();
                if give_up.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(error);
                }
                tracing::warn!(error = %crate::telemetry::Chain(&error), retry_in_ms = backoff.as_millis() as u64, "store commit failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(error),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(cap);
            }
            Err(error) => return Err(error),
        }
    }
}
