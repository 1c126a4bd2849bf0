//! Kafka source (rdkafka): one consumer group over the department topics -> batches
//! of raw records with the next offset of each partition. Offsets live in the store
//! with the results; this source never reads them itself. On an assignment the
//! rebalance callback only pauses the new partitions and says so
//! ([`Pulled::Reassigned`]); the driver claims them in the store and hands their
//! stored positions to [`Source::establish`], which seeks and resumes them. Before a
//! revocation the callback waits (bounded) until every batch handed over is settled.
//! The group commit is made after each store commit, for lag monitoring only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{Acknowledge, Pulled, RawBatch, Source, SourceError, Start};
use crate::batch::{LaneMark, SourcePosition};
use crate::config::KafkaSettings;
use crate::domain::record::{Origin, RawRecord};
use crate::telemetry::Metrics;

/// How long a revocation waits for the batches in flight to settle.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long positioning the assigned partitions may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(30);

/// The store key of a partition's position.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

fn parse_partition_key(key: &str) -> Option<(String, i32)> {
    let rest = key.strip_prefix("kafka:")?;
    let (topic, partition) = rest.rsplit_once(':')?;
    Some((topic.to_string(), partition.parse().ok()?))
}

/// The batches handed to the core and those settled (committed, or void), by sequence
/// number, so a revocation can wait for the work in flight; the offsets committed
/// and the fetch high watermarks, per partition (for lag and for the lanes).
#[derive(Debug, Default)]
struct Progress {
    handed: AtomicU64,
    settled: Mutex<u64>,
    changed: Condvar,
    committed: Mutex<HashMap<(String, i32), i64>>,
    /// (low, high) watermark of each partition, from the statistics of fetch
    /// responses: Tansu's ListOffsets answer is wrong, so nothing here asks for it.
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
}

impl Progress {
    fn settle(&self, seq: u64) {
        if let Ok(mut settled) = self.settled.lock() {
            *settled = (*settled).max(seq);
            self.changed.notify_all();
        }
    }

    /// Blocks until every batch handed over is settled, or `timeout`; whether it did.
    fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let target = self.handed.load(Ordering::SeqCst);
        let Ok(mut settled) = self.settled.lock() else {
            return false;
        };
        while *settled < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.changed.wait_timeout(settled, left) {
                Ok((guard, _)) => settled = guard,
                Err(_) => return false,
            }
        }
        true
    }

    fn committed_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.committed
            .lock()
            .ok()
            .and_then(|offsets| offsets.get(&(topic.to_string(), partition)).copied())
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.watermarks
            .lock()
            .ok()
            .and_then(|marks| marks.get(&(topic.to_string(), partition)).copied())
    }
}

/// The consumer's callbacks: rebalances and statistics. No I/O here.
pub struct SourceContext {
    progress: Arc<Progress>,
    metrics: Metrics,
    /// Partitions assigned by the last rebalance, for the source to take.
    assigned: Mutex<Option<Vec<(String, i32)>>>,
    /// Wakes the source waiting for a record: the new partitions are paused, so no
    /// record would come to tell it of the assignment.
    reassigned: tokio::sync::Notify,
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
                if let Ok(mut marks) = self.progress.watermarks.lock() {
                    marks.insert(
                        (name.clone(), partition),
                        (stats.lo_offset, stats.hi_offset),
                    );
                }
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
            // Let the batches in flight commit before the partitions go, so their next
            // owner starts where they end; a batch still in flight after the wait is
            // refused at its commit (the new owner's claim fences it).
            let settled =
                tokio::task::block_in_place(|| self.progress.wait_settled(REVOKE_DRAIN_TIMEOUT));
            tracing::info!(
                partitions = partitions.count(),
                settled,
                "partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(partitions) = rebalance else {
            return;
        };
        self.metrics.rebalanced();
        // Nothing is read from the new partitions until they are positioned at the
        // offsets stored with the results ([`KafkaSource::establish`]).
        if let Err(error) = consumer.pause(partitions) {
            tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot pause the assigned partitions; their first records are dropped until they are positioned");
        }
        let list: Vec<(String, i32)> = partitions
            .elements()
            .iter()
            .map(|element| (element.topic().to_string(), element.partition()))
            .collect();
        tracing::info!(partitions = list.len(), "partitions assigned");
        if self.regional_inline {
            warn_if_partial(consumer, partitions);
        }
        if let Ok(mut assigned) = self.assigned.lock() {
            *assigned = Some(list);
        }
        self.reassigned.notify_one();
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

/// A partition this instance reads.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Records below this offset were fetched before the partition was positioned
    /// (dropped); -1 when it starts at its beginning.
    from: i64,
    /// The next offset to read (-1: its beginning, none read yet).
    next: i64,
    /// The claim it is read under.
    claim: Option<i64>,
    /// Whether it last said it holds the watermark.
    holding: Option<bool>,
}

/// The consumer group over the department topics, batching what it receives.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    progress: Arc<Progress>,
    topics: Vec<String>,
    reading: BTreeMap<(String, i32), Reading>,
    batch: RawBatch,
    /// The next offset of each partition in `batch`.
    touched: BTreeMap<(String, i32), i64>,
    deadline: tokio::time::Instant,
    wait: Duration,
    max_messages: usize,
    max_line_bytes: usize,
    max_dead_letter_bytes: usize,
    metrics: Metrics,
}

impl KafkaSource {
    /// Builds the consumer and subscribes to the department topics.
    pub fn subscribe(
        settings: &KafkaSettings,
        input: &crate::config::InputSettings,
        metrics: Metrics,
        regional_inline: bool,
    ) -> Result<KafkaSource, SourceError> {
        let topics: Vec<String> = settings.input_topics.values().cloned().collect();
        if topics.is_empty() {
            return Err(SourceError::NoTopics);
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
        let progress = Arc::new(Progress::default());
        let context = SourceContext {
            progress: progress.clone(),
            metrics: metrics.clone(),
            assigned: Mutex::new(None),
            reassigned: tokio::sync::Notify::new(),
            regional_inline,
        };
        let consumer: SourceConsumer = config.create_with_context(context)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let wait = Duration::from_millis(settings.batch_max_wait_ms);
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            progress,
            topics,
            reading: BTreeMap::new(),
            batch: RawBatch::default(),
            touched: BTreeMap::new(),
            deadline: tokio::time::Instant::now() + wait,
            wait,
            max_messages: settings.batch_max_messages,
            max_line_bytes: input.max_line_bytes,
            max_dead_letter_bytes: input.max_dead_letter_bytes,
            metrics,
        })
    }

    fn take_assignment(&self) -> Option<Vec<(String, i32)>> {
        self.consumer
            .context()
            .assigned
            .lock()
            .ok()
            .and_then(|mut assigned| assigned.take())
    }

    /// Whether a partition still holds the watermark: behind its fetch high
    /// watermark, or with none known yet.
    fn holds(&self, topic: &str, partition: i32, reading: &Reading) -> bool {
        match self.progress.watermarks(topic, partition) {
            None => true,
            Some((low, high)) if reading.next < 0 => low < high,
            Some((_, high)) => reading.next < high,
        }
    }

    /// The lanes whose holding changed since they were last reported.
    fn lane_changes(&mut self) -> Vec<LaneMark> {
        let mut marks = Vec::new();
        let keys: Vec<(String, i32)> = self.reading.keys().cloned().collect();
        for key in keys {
            let Some(reading) = self.reading.get(&key).copied() else {
                continue;
            };
            let holding = self.holds(&key.0, key.1, &reading);
            if reading.holding != Some(holding) {
                if let Some(entry) = self.reading.get_mut(&key) {
                    entry.holding = Some(holding);
                }
                marks.push(LaneMark {
                    lane: partition_key(&key.0, key.1),
                    holding,
                });
            }
        }
        marks
    }

    /// The accumulated batch with the next offset of each partition in it (under its
    /// claim) and the lanes that changed.
    fn take_batch(&mut self) -> RawBatch {
        let mut batch = std::mem::take(&mut self.batch);
        batch.positions = std::mem::take(&mut self.touched)
            .into_iter()
            .map(|((topic, partition), next)| SourcePosition {
                source_key: partition_key(&topic, partition),
                position: next as u64,
                claim: self.reading.get(&(topic, partition)).and_then(|r| r.claim),
                ..SourcePosition::default()
            })
            .collect();
        batch.lanes = self.lane_changes();
        batch
    }
}

/// Hears of committed and void batches: settles them for revocations and commits the
/// offsets to the group (for lag monitoring).
struct GroupAcknowledger {
    consumer: Arc<SourceConsumer>,
    progress: Arc<Progress>,
}

impl Acknowledge for GroupAcknowledger {
    fn committed(&self, seq: u64, positions: &[SourcePosition]) {
        if let Ok(mut offsets) = self.progress.committed.lock() {
            for position in positions {
                if let Some(key) = parse_partition_key(&position.source_key) {
                    offsets.insert(key, position.position as i64);
                }
            }
        }
        self.progress.settle(seq);
        commit_group_offsets(&self.consumer, positions);
    }

    fn discarded(&self, seq: u64) {
        self.progress.settle(seq);
    }
}

impl Source for KafkaSource {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn claims_inputs(&self) -> bool {
        true
    }

    fn establish(&mut self, starts: Vec<Start>) -> Result<(), SourceError> {
        let mut seek = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for start in &starts {
            let Some((topic, partition)) = parse_partition_key(&start.source_key) else {
                continue;
            };
            let (offset, from) = match &start.position {
                Some(position) => (
                    Offset::Offset(position.position as i64),
                    position.position as i64,
                ),
                None => (Offset::Beginning, -1),
            };
            seek.add_partition_offset(&topic, partition, offset)?;
            resume.add_partition(&topic, partition);
            self.reading.insert(
                (topic, partition),
                Reading {
                    from,
                    next: from,
                    claim: start.claim,
                    holding: None,
                },
            );
        }
        if seek.count() == 0 {
            return Ok(());
        }
        // Right after an assignment librdkafka may still be fetching the group's
        // committed offsets for a partition, and refuses to seek it until then
        // (`Local: Erroneous state`): those partitions are sought again shortly.
        let deadline = Instant::now() + SEEK_TIMEOUT;
        loop {
            let positioned = self.consumer.seek_partitions(seek.clone(), SEEK_TIMEOUT)?;
            let mut again = TopicPartitionList::new();
            for element in positioned.elements() {
                if let Err(error) = element.error() {
                    if Instant::now() >= deadline {
                        return Err(SourceError::Kafka(error));
                    }
                    again.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        element.offset(),
                    )?;
                }
            }
            if again.count() == 0 {
                break;
            }
            seek = again;
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(50)));
        }
        self.consumer.resume(&resume)?;
        tracing::info!(
            partitions = starts.len(),
            "partitions positioned at their stored offsets"
        );
        Ok(())
    }

    async fn next(&mut self, cancel: &CancellationToken) -> Result<Pulled, SourceError> {
        loop {
            if let Some(assigned) = self.take_assignment() {
                // Records read before belong to the old assignment: whoever owns their
                // partitions now reads them again from the stored offsets.
                self.batch = RawBatch::default();
                self.touched.clear();
                self.reading.clear();
                let keys = assigned
                    .iter()
                    .map(|(topic, partition)| partition_key(topic, *partition))
                    .collect();
                return Ok(Pulled::Reassigned(keys));
            }
            if cancel.is_cancelled() {
                if self.batch.records.is_empty() {
                    return Ok(Pulled::Ended);
                }
                return Ok(Pulled::Batch(self.take_batch()));
            }
            let consumer = self.consumer.clone();
            let received = tokio::select! {
                biased;
                _ = cancel.cancelled() => continue,
                message = consumer.recv() => Some(message),
                _ = consumer.context().reassigned.notified() => continue,
                _ = tokio::time::sleep_until(self.deadline) => None,
            };
            match received {
                Some(Ok(message)) => {
                    let key = (message.topic().to_string(), message.partition());
                    let Some(reading) = self.reading.get_mut(&key) else {
                        // Not positioned yet (or no longer ours).
                        continue;
                    };
                    if message.offset() < reading.from {
                        continue;
                    }
                    reading.next = message.offset() + 1;
                    self.metrics.messages_consumed(message.topic(), 1);
                    if self.batch.records.is_empty() {
                        self.deadline = tokio::time::Instant::now() + self.wait;
                    }
                    self.batch.records.push(record(
                        &message,
                        self.max_line_bytes,
                        self.max_dead_letter_bytes,
                    ));
                    self.touched.insert(key, message.offset() + 1);
                    if self.batch.records.len() >= self.max_messages {
                        return Ok(Pulled::Batch(self.take_batch()));
                    }
                }
                Some(Err(error)) => {
                    // Broker gone, partition errors: librdkafka retries by itself.
                    tracing::warn!(error = %crate::telemetry::Chain(&error), "kafka consumer error");
                }
                None => {
                    self.deadline = tokio::time::Instant::now() + self.wait;
                    let batch = self.take_batch();
                    if !batch.records.is_empty() || !batch.lanes.is_empty() {
                        return Ok(Pulled::Batch(batch));
                    }
                }
            }
        }
    }

    fn handed(&self, seq: u64) {
        self.progress.handed.store(seq, Ordering::SeqCst);
    }

    fn acknowledger(&self) -> Arc<dyn Acknowledge> {
        Arc::new(GroupAcknowledger {
            consumer: self.consumer.clone(),
            progress: self.progress.clone(),
        })
    }

    fn rejoin(&mut self) -> Result<(), SourceError> {
        tracing::warn!("a batch was refused under a superseded claim: rejoining the group");
        self.batch = RawBatch::default();
        self.touched.clear();
        self.reading.clear();
        self.consumer.unsubscribe();
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names)?;
        Ok(())
    }

    fn close(self) {
        close_consumer(self.consumer, Duration::from_secs(10));
    }
}

/// Leaves the group and closes the consumer on a thread of its own, waiting at
/// most `timeout`: with the broker gone, librdkafka's close can wait for a
/// coordinator that never answers. Offsets live in the store, so an unclean leave
/// only delays the next rebalance by the session timeout.
fn close_consumer(consumer: Arc<SourceConsumer>, timeout: Duration) {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = done.send(());
    });
    if closed.recv_timeout(timeout).is_err() {
        tracing::warn!("the Kafka consumer did not close in time; leaving it behind");
    }
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
            // Producers key by person: the key is masked like the payload, so
            // no origin (of an event or a dead letter) holds a clear resident ID.
            key_base64: message.key().map(|key| {
                let mut key = key.to_vec();
                crate::domain::dead_letter::mask_resident_ids(&mut key);
                base64::engine::general_purpose::STANDARD.encode(key)
            }),
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
        tracing::debug!(error = %crate::telemetry::Chain(&error), "group offset commit failed (lag metrics only)");
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
    fn a_revocation_waits_for_the_batches_in_flight() {
        let progress = Arc::new(Progress::default());
        progress.handed.store(3, Ordering::SeqCst);
        assert!(!progress.wait_settled(Duration::from_millis(10)));
        let writer = progress.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.settle(3);
        });
        assert!(progress.wait_settled(Duration::from_secs(5)));
        thread.join().unwrap();
    }
}
