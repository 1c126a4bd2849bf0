//! Outbox relay: outbox rows (written in each batch's transaction) -> Kafka output
//! topics, through an idempotent producer, in row order, marked sent once the
//! broker acknowledges them. At least once: a restart republishes what was not
//! acknowledged; ids are deterministic, so consumers can deduplicate.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
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
                tracing::warn!(error = %error, "cannot read the outbox; retrying");
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
        let mut failed = 0u64;
        // Stop at the first failure, so later updates of a key are not marked sent
        // before an earlier one is.
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(_) => sent.push(row.id),
                Err((error, _)) => {
                    failed += 1;
                    tracing::warn!(error = %error, topic = %row.topic, "outbox publication failed; retrying");
                    break;
                }
            }
        }
        if !sent.is_empty() {
            let mut by_topic: std::collections::BTreeMap<&str, u64> = Default::default();
            for row in rows.iter().take(sent.len()) {
                *by_topic.entry(row.topic.as_str()).or_default() += 1;
            }
            match store.outbox_mark_sent(&sent, Utc::now()).await {
                Ok(()) => {
                    for (topic, count) in by_topic {
                        metrics.outbox_published(topic, count);
                    }
                }
                // Published but not marked: republished later (at least once).
                Err(error) => tracing::warn!(error = %error, "cannot mark outbox rows sent"),
            }
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
    // Keep a day of published rows for inspection.
    let _ = store
        .outbox_purge(Utc::now() - chrono::Duration::days(1))
        .await;
}
