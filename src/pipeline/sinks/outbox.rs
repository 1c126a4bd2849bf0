//! Outbox relay: outbox rows (written in each batch's transaction) -> Kafka output
//! topics, through an idempotent producer, in row order, marked sent once the
//! broker acknowledges them. At least once: a restart republishes what was not
//! acknowledged; ids are deterministic, so consumers can deduplicate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::store::Store;
use crate::telemetry::Metrics;

/// An idempotent producer for `settings`.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", format!("{}-outbox", settings.client_id))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        // Delivery is retried by librdkafka for this long, then by the relay.
        .set("message.timeout.ms", "60000");
    for (key, value) in &settings.producer_properties {
        config.set(key, value);
    }
    config.create()
}

/// Publishes the outbox until `cancel` fires and the backlog is empty (or the
/// configured flush timeout passes). `wake` is notified after each commit.
pub async fn relay(
    store: Store,
    producer: FutureProducer,
    settings: KafkaSettings,
    metrics: Metrics,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut flush_deadline = None;
    let mut last_purge = tokio::time::Instant::now() - PURGE_EVERY;
    loop {
        if cancel.is_cancelled() && flush_deadline.is_none() {
            flush_deadline = Some(
                tokio::time::Instant::now()
                    + Duration::from_secs(settings.outbox_flush_timeout_seconds),
            );
        }
        if flush_deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            tracing::warn!("outbox flush timed out; the rest is published at the next start");
            break;
        }
        let rows = match store.outbox_pending(settings.outbox_batch).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot read the outbox; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Ok(backlog) = store.outbox_backlog().await {
            metrics.outbox_backlog(backlog);
        }
        if rows.is_empty() {
            if flush_deadline.is_some() {
                break;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        // Enqueue in row order: per key (partition) the order of updates holds.
        let sends = rows.iter().map(|row| {
            producer.send(
                FutureRecord::to(&row.topic)
                    .key(&row.key)
                    .payload(&row.payload),
                Duration::from_secs(5),
            )
        });
        // On shutdown the broker may be gone: wait for deliveries only until the
        // flush deadline (what is not acknowledged is republished at the next start).
        let results = match flush_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, join_all(sends)).await {
                Ok(results) => results,
                Err(_) => {
                    tracing::warn!(
                        "outbox flush timed out; the rest is published at the next start"
                    );
                    break;
                }
            },
            None => tokio::select! {
                results = join_all(sends) => results,
                // Cancelled while waiting: loop round to flush with a deadline.
                _ = cancel.cancelled() => continue,
            },
        };
        let mut sent = Vec::with_capacity(rows.len());
        let mut undeliverable = Vec::new();
        let mut failed = 0u64;
        // A key whose row failed (to be retried) has its later rows of this round
        // published again after it, so its snapshots arrive in order; other keys
        // go on. A row the broker can never take is recorded and skipped.
        let mut held: HashSet<(&str, &str)> = HashSet::new();
        for (row, result) in rows.iter().zip(results) {
            let key = (row.topic.as_str(), row.key.as_str());
            if held.contains(&key) {
                continue;
            }
            match result {
                Ok(_) => sent.push(row),
                Err((error, _)) if never_deliverable(&error) => {
                    tracing::error!(
                        error = %crate::telemetry::Chain(&error),
                        topic = %row.topic,
                        row = row.id,
                        bytes = row.payload.len(),
                        "the broker refuses this outbox message for good; recorded in the outbox and skipped"
                    );
                    undeliverable.push((row.id, error.to_string()));
                }
                Err((error, _)) => {
                    failed += 1;
                    held.insert(key);
                    tracing::warn!(error = %crate::telemetry::Chain(&error), topic = %row.topic, "outbox publication failed; retrying");
                }
            }
        }
        for (id, failure) in &undeliverable {
            match store
                .outbox_mark_undeliverable(*id, failure, Utc::now())
                .await
            {
                Ok(()) => metrics.outbox_undeliverable(1),
                Err(error) => {
                    tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot record an undeliverable outbox row")
                }
            }
        }
        if !sent.is_empty() {
            let mut by_topic: std::collections::BTreeMap<&str, u64> = Default::default();
            for row in &sent {
                *by_topic.entry(row.topic.as_str()).or_default() += 1;
            }
            let ids: Vec<i64> = sent.iter().map(|row| row.id).collect();
            match store.outbox_mark_sent(&ids, Utc::now()).await {
                Ok(()) => {
                    for (topic, count) in by_topic {
                        metrics.outbox_published(topic, count);
                    }
                }
                // Published but not marked: republished later (at least once).
                Err(error) => {
                    tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot mark outbox rows sent")
                }
            }
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            purge(&store, &settings, &metrics).await;
        }
        if failed > 0 {
            metrics.outbox_failed(failed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
    purge(&store, &settings, &metrics).await;
}

/// How often published rows past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the rows published longer ago than the retention period.
async fn purge(store: &Store, settings: &KafkaSettings, metrics: &Metrics) {
    // At most a century: beyond it, chrono's durations overflow.
    let hours = settings.outbox_retention_hours.min(24 * 365 * 100) as i64;
    let before = Utc::now() - chrono::Duration::hours(hours);
    match store.outbox_purge(before).await {
        Ok(rows) => metrics.outbox_purged(rows),
        Err(error) => {
            tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot purge published outbox rows")
        }
    }
}

/// Whether the broker (or the producer, before sending) refuses the message for
/// what it is, so that retrying can never succeed.
fn never_deliverable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}
