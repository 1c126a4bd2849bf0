//! Kafka source (rdkafka): one consumer group over the department topics ->
//! batches of raw records with the next offset of each partition. Offsets live in
//! the store with the results: on assignment the consumer seeks to the stored
//! offsets; before a revocation it waits until every batch it handed over is
//! committed. The group commit is made afterwards, for lag monitoring only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::batch::SourcePosition;
use crate::config::KafkaSettings;
use crate::domain::record::{Origin, RawRecord};
use crate::store::Store;
use crate::telemetry::Metrics;

/// How long a revocation waits for the batches in flight to commit.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The store key of a partition's position.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// Why the Kafka source failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The client could not be created or subscribed.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// No input topics are configured.
    #[error("kafka: no input topics configured (kafka.input_topics)")]
    NoTopics,
}

/// The handshake between the consumer and the store sink: batches handed over
/// and batches committed, by sequence number, and the offsets committed per
/// partition (for lag).
#[derive(Debug, Default)]
pub struct Progress {
    handed: AtomicU64,
    committed: Mutex<u64>,
    changed: Condvar,
    offsets: Mutex<HashMap<(String, i32), i64>>,
    /// Bumped on every assignment change: records read under an older
    /// generation are dropped (they are re-read from the stored offsets).
    generation: AtomicU64,
    /// Set when a new assignment needs the core's state reloaded.
    reload: AtomicBool,
}

impl Progress {
    /// A batch with sequence number `seq` was handed to the core.
    pub fn handed(&self, seq: u64) {
        self.handed.store(seq, Ordering::SeqCst);
    }

    /// The batch `seq` and everything before it are committed with `positions`.
    pub fn committed(&self, seq: u64, positions: &[SourcePosition]) {
        if let Ok(mut offsets) = self.offsets.lock() {
            for position in positions {
                if let Some((topic, partition)) = parse_partition_key(&position.source_key) {
                    offsets.insert((topic, partition), position.position as i64);
                }
            }
        }
        if let Ok(mut committed) = self.committed.lock() {
            *committed = (*committed).max(seq);
            self.changed.notify_all();
        }
    }

    /// Blocks until every batch handed over is committed, or `timeout`. Returns
    /// whether it drained.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let target = self.handed.load(Ordering::SeqCst);
        let Ok(mut committed) = self.committed.lock() else {
            return false;
        };
        while *committed < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.changed.wait_timeout(committed, left) {
                Ok((guard, _)) => committed = guard,
                Err(_) => return false,
            }
        }
        true
    }

    /// The current assignment generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Takes the reload request, if any.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    fn committed_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .lock()
            .ok()
            .and_then(|offsets| offsets.get(&(topic.to_string(), partition)).copied())
    }
}

fn parse_partition_key(key: &str) -> Option<(String, i32)> {
    let rest = key.strip_prefix("kafka:")?;
    let (topic, partition) = rest.rsplit_once(':')?;
    Some((topic.to_string(), partition.parse().ok()?))
}

/// The consumer's callbacks: rebalances and statistics.
pub struct SourceContext {
    store: Store,
    runtime: tokio::runtime::Handle,
    progress: Arc<Progress>,
    metrics: Metrics,
    /// The regional stage runs in this consumer's pipeline (`detect.placement`).
    regional_inline: bool,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (&partition, stats) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if partition < 0 || stats.hi_offset < 0 {
                    continue;
                }
                // Tansu's ListOffsets answer is wrong, so the lag is taken from the
                // fetch high watermark and the offsets committed with the results.
                let next = self
                    .progress
                    .committed_offset(name, partition)
                    .unwrap_or(stats.lo_offset.max(0));
                self.metrics.partition_lag(
                    name,
                    partition,
                    stats.hi_offset,
                    (stats.hi_offset - next).max(0),
                );
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.metrics.rebalanced();
            self.progress.generation.fetch_add(1, Ordering::SeqCst);
            // Finish the batches in flight before the partitions go: their results
            // and offsets must be committed before another instance starts from
            // the stored offsets.
            let drained =
                tokio::task::block_in_place(|| self.progress.wait_drained(REVOKE_DRAIN_TIMEOUT));
            tracing::info!(
                partitions = partitions.count(),
                drained,
                "partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(partitions) = rebalance else {
            return;
        };
        self.metrics.rebalanced();
        self.progress.generation.fetch_add(1, Ordering::SeqCst);
        // Seek every assigned partition to the offset stored with the results; a
        // partition never processed starts at its beginning.
        let mut with_offsets = TopicPartitionList::new();
        for element in partitions.elements() {
            let key = partition_key(element.topic(), element.partition());
            let stored =
                tokio::task::block_in_place(|| self.runtime.block_on(self.store.position(&key)));
            let offset = match stored {
                Ok(Some(position)) => Offset::Offset(position.position as i64),
                Ok(None) => Offset::Beginning,
                Err(error) => {
                    // Without the stored offset the partition cannot start safely;
                    // starting at the beginning is safe (events are deduplicated
                    // by id), only slower.
                    tracing::error!(error = %error, partition = %key, "cannot read the stored offset; starting from the beginning");
                    Offset::Beginning
                }
            };
            if with_offsets
                .add_partition_offset(element.topic(), element.partition(), offset)
                .is_err()
            {
                tracing::error!(partition = %key, "cannot set the start offset");
            }
        }
        if let Err(error) = consumer.assign(&with_offsets) {
            tracing::error!(error = %error, "cannot assign partitions at their stored offsets");
        }
        self.progress.reload.store(true, Ordering::SeqCst);
        tracing::info!(partitions = partitions.count(), "partitions assigned");
        if self.regional_inline {
            warn_if_partial(consumer, partitions);
        }
    }
}

/// Regional counts and signals are computed per instance: an instance holding only part
/// of its topics' partitions sees only part of each region's stream (README, "Scaling
/// out"; `detect.placement = "leader"` is the remedy). Says so, loudly, rather than
/// letting partial counts pass for whole ones.
fn warn_if_partial(consumer: &BaseConsumer<SourceContext>, assigned: &TopicPartitionList) {
    let mut topics: HashMap<String, usize> = HashMap::new();
    for element in assigned.elements() {
        *topics.entry(element.topic().to_string()).or_default() += 1;
    }
    // One metadata request for every topic, so a slow broker delays the rebalance
    // callback by at most its timeout.
    let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(5)) else {
        return;
    };
    for (topic, held) in topics {
        let topic = topic.as_str();
        let total = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if held < total {
            tracing::warn!(
                topic,
                held,
                total,
                "this instance holds part of the topic's partitions: its regional counts and \
                 signals see only its share of the stream (household alerts are unaffected)"
            );
        }
    }
}

/// The consumer type of the Kafka source.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Builds the consumer and subscribes to the department topics.
pub fn subscribe(
    settings: &KafkaSettings,
    store: Store,
    progress: Arc<Progress>,
    metrics: Metrics,
    regional_inline: bool,
) -> Result<Arc<SourceConsumer>, KafkaSourceError> {
    let topics: Vec<&str> = settings.input_topics.values().map(String::as_str).collect();
    if topics.is_empty() {
        return Err(KafkaSourceError::NoTopics);
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .set("client.id", &settings.client_id)
        // Offsets live in the store; the group commit is made explicitly after
        // each database commit, for lag monitoring only.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set(
            "max.poll.interval.ms",
            settings.max_poll_interval_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            settings.statistics_interval_ms.to_string(),
        );
    for (key, value) in &settings.consumer_properties {
        config.set(key, value);
    }
    let context = SourceContext {
        store,
        runtime: tokio::runtime::Handle::current(),
        progress,
        metrics,
        regional_inline,
    };
    let consumer: SourceConsumer = config.create_with_context(context)?;
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// A consumed message as a raw record. A payload longer than `max_line_bytes` is
/// cut to `max_dead_letter_bytes` and flagged (it becomes a dead letter); an empty
/// or missing payload is kept as empty bytes (also a dead letter).
pub fn record(
    message: &BorrowedMessage<'_>,
    max_line_bytes: usize,
    max_dead_letter_bytes: usize,
) -> RawRecord {
    let payload = message.payload().unwrap_or_default();
    let (bytes, original_len) = if payload.len() > max_line_bytes {
        (
            payload[..payload.len().min(max_dead_letter_bytes)].to_vec(),
            Some(payload.len() as u64),
        )
    } else {
        (payload.to_vec(), None)
    };
    RawRecord {
        bytes,
        origin: Origin::Kafka {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key_base64: message
                .key()
                .map(|key| base64::engine::general_purpose::STANDARD.encode(key)),
        },
        original_len,
    }
}

/// Commits `positions` to the consumer group (asynchronously): for lag
/// monitoring only, after they were committed to the store with the results.
pub fn commit_group_offsets(consumer: &SourceConsumer, positions: &[SourcePosition]) {
    let mut list = TopicPartitionList::new();
    for position in positions {
        if let Some((topic, partition)) = parse_partition_key(&position.source_key) {
            let _ = list.add_partition_offset(
                &topic,
                partition,
                Offset::Offset(position.position as i64),
            );
        }
    }
    if list.count() > 0
        && let Err(error) = consumer.commit(&list, rdkafka::consumer::CommitMode::Async)
    {
        tracing::debug!(error = %error, "group offset commit failed (lag metrics only)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_round_trip() {
        let key = partition_key("dept.civil-affairs", 7);
        assert_eq!(
            parse_partition_key(&key),
            Some(("dept.civil-affairs".to_string(), 7))
        );
        assert_eq!(parse_partition_key("file:/x"), None);
    }

    #[test]
    fn drain_waits_for_commits() {
        let progress = Arc::new(Progress::default());
        progress.handed(3);
        assert!(!progress.wait_drained(Duration::from_millis(10)));
        let writer = progress.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.committed(3, &[]);
        });
        assert!(progress.wait_drained(Duration::from_secs(5)));
        thread.join().unwrap();
    }
}
