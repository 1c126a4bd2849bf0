//! The pipeline: a source -> the core -> the store sink, joined by bounded
//! channels, so a slow store stalls the source instead of growing memory. This
//! module is the only one that knows about threads and channels; the core itself
//! is pure.
//!
//! ```text
//! source ──(RawBatch, cap N)──▶ core thread ──(BatchOutput, cap N)──▶ store sink ──▶ outbox relay
//! NDJSON reader thread, or the Kafka consumer task          (results + positions in one transaction)
//! ```

pub mod core;
#[cfg(test)]
mod core_tests;
pub mod decode;
pub mod detect;
pub mod leader;
pub mod resolve;
pub mod rules;
pub mod sinks;
pub mod sources;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::Consumer;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::batch::SourcePosition;
use crate::batch::{BatchCounts, BatchOutput};
use crate::config::Settings;
use crate::domain::record::Origin;
use crate::store::{BegunBatch, Store, StoreError};
use crate::telemetry::Metrics;
use core::Core;
use detect::settings::Placement;
use sources::kafka::{KafkaSourceError, Progress};
use sources::ndjson::{Input, RawBatch, ReadLimits, SourceError};

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The Kafka source could not start.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    /// The store failed permanently (or for longer than the retry budget).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state could not be reloaded after a rebalance.
    #[error(transparent)]
    Reload(#[from] Box<AppError>),
    /// A pipeline thread panicked (a bug).
    #[error("pipeline thread failed: {0}")]
    Thread(String),
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Totals over committed batches.
    pub counts: BatchCounts,
    /// Alert snapshots written.
    pub alert_changes: u64,
    /// Task snapshots written.
    pub task_changes: u64,
    /// Batches committed.
    pub batches: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time spent in the core.
    pub core_time: Duration,
}

impl RunSummary {
    /// Records per second over the run.
    pub fn records_per_second(&self) -> f64 {
        self.counts.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, batch: &BatchOutput) {
        let c = batch.counts;
        self.counts.records += c.records;
        self.counts.accepted += c.accepted;
        self.counts.duplicates += c.duplicates;
        self.counts.dead_letters += c.dead_letters;
        self.counts.unmatched += c.unmatched;
        self.counts.suppressed += c.suppressed;
        self.alert_changes += batch.alerts.len() as u64;
        self.task_changes += batch.tasks.len() as u64;
        self.batches += 1;
    }
}

/// What the core thread receives.
enum CoreInput {
    /// A batch, with its sequence number.
    Batch(u64, RawBatch),
    /// Replace the core (its state reloaded from the store after a rebalance).
    Replace(Box<Core>),
    /// A finite input ended: judge every day up to the latest event's.
    EndOfInput(u64),
}

/// A processed batch on its way to the store.
struct Processed {
    seq: u64,
    output: BatchOutput,
    positions: Vec<SourcePosition>,
}

/// Runs the core on a blocking thread until its input closes.
fn spawn_core(
    mut core: Core,
    mut input: mpsc::Receiver<CoreInput>,
    output: mpsc::Sender<Processed>,
    metrics: Metrics,
) -> tokio::task::JoinHandle<(Core, Duration)> {
    tokio::task::spawn_blocking(move || {
        let mut core_time = Duration::ZERO;
        while let Some(message) = input.blocking_recv() {
            match message {
                CoreInput::Replace(fresh) => core = *fresh,
                CoreInput::EndOfInput(seq) => {
                    core.end_of_input();
                    let began = Instant::now();
                    let processed = core.process(&[], Utc::now());
                    core_time += began.elapsed();
                    let processed = Processed {
                        seq,
                        output: processed,
                        positions: Vec::new(),
                    };
                    if output.blocking_send(processed).is_err() {
                        break;
                    }
                }
                CoreInput::Batch(seq, batch) => {
                    let began = Instant::now();
                    let processed = core.process(&batch.records, Utc::now());
                    let elapsed = began.elapsed();
                    core_time += elapsed;
                    metrics.batch_processed(elapsed);
                    let processed = Processed {
                        seq,
                        output: processed,
                        positions: batch.positions,
                    };
                    if output.blocking_send(processed).is_err() {
                        break;
                    }
                }
            }
        }
        (core, core_time)
    })
}

/// A fault-injection point for the crash tests: `YUJING_FAILPOINT=abort_after_commit:N`
/// aborts the process right after the N-th batch commit, before the outbox relay
/// hears of it. Read once; unset in normal operation.
fn abort_after_commit() -> Option<u64> {
    std::env::var("YUJING_FAILPOINT")
        .ok()?
        .strip_prefix("abort_after_commit:")?
        .parse()
        .ok()
}

/// Batches whose transactions may be begun ahead of their turn, at most.
const BEGIN_AHEAD: usize = 2;

/// Commits processed batches in order until the channel closes; calls
/// `committed` after each commit. Stops at the first permanent store error.
///
/// Batches waiting behind the one being committed begin their transactions on other
/// connections (their events inserted, [`Store::begin_ahead`]), up to
/// [`BEGIN_AHEAD`] of them and always leaving a connection of the pool free for
/// the head, so PostgreSQL loads several batches at once; each still commits only
/// after every batch before it has. A batch begun ahead whose finish fails is
/// committed anew; on a permanent failure the batches begun ahead roll back.
async fn write_all(
    mut input: mpsc::Receiver<Processed>,
    store: &Store,
    settings: &Settings,
    metrics: &Metrics,
    cancel: &CancellationToken,
    mut committed: impl FnMut(u64, &[SourcePosition]),
) -> Result<RunSummary, StoreError> {
    type Begun = Option<tokio::task::JoinHandle<Option<BegunBatch>>>;
    let mut summary = RunSummary::default();
    let abort_after = abort_after_commit();
    // SQLite's one writer takes the batches in turn: none is taken early.
    let depth = if store.begins_ahead() {
        BEGIN_AHEAD.min(settings.store.max_connections.saturating_sub(1) as usize)
    } else {
        0
    };
    let mut queue: std::collections::VecDeque<(Arc<Processed>, Begun)> = Default::default();
    let mut open = true;
    loop {
        // Take what is waiting (waiting for a batch only when none is queued).
        while open && queue.len() <= depth {
            let next = if queue.is_empty() {
                input.recv().await
            } else {
                match input.try_recv() {
                    Ok(next) => Some(next),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(next) = next else {
                open = false;
                break;
            };
            let next = Arc::new(next);
            // The head commits in turn; batches behind it begin ahead.
            let begun = (!queue.is_empty() && !next.output.events.is_empty()).then(|| {
                let (store, batch) = (store.clone(), next.clone());
                tokio::spawn(async move {
                    store
                        .begin_ahead(&batch.output, Utc::now())
                        .await
                        .unwrap_or_else(|error| {
                            tracing::debug!(error = %error, "beginning a batch ahead failed; it commits in turn");
                            None
                        })
                })
            });
            queue.push_back((next, begun));
        }
        let Some((processed, begun)) = queue.pop_front() else {
            break;
        };
        // A batch whose beginning failed (or whose task died) commits in turn.
        let begun = match begun {
            Some(handle) => handle.await.ok().flatten(),
            None => None,
        };
        let result = commit_one(store, &processed, begun, settings, metrics, cancel).await;
        if let Err(error) = result {
            tracing::error!(error = %error, "store commit failed; stopping");
            // What was begun ahead is rolled back: stop the tasks, dropping their
            // transactions.
            for (_, begun) in queue {
                if let Some(handle) = begun {
                    handle.abort();
                }
            }
            return Err(error);
        }
        summary.add(&processed.output);
        if abort_after.is_some_and(|n| summary.batches >= n) {
            tracing::error!("failpoint abort_after_commit reached; aborting");
            std::process::abort();
        }
        committed(processed.seq, &processed.positions);
    }
    Ok(summary)
}

/// Commits one batch: finishes its transaction begun ahead when there is one; when
/// that fails, or there is none, commits the whole batch, retrying transient errors.
async fn commit_one(
    store: &Store,
    processed: &Processed,
    begun: Option<BegunBatch>,
    settings: &Settings,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    if let Some(begun) = begun {
        let attempt = Instant::now();
        match store
            .commit_begun(begun, &processed.output, &processed.positions, Utc::now())
            .await
        {
            Ok(()) => {
                metrics.batch_committed(&processed.output, attempt.elapsed());
                return Ok(());
            }
            Err(error) => {
                metrics.commit_retried();
                tracing::warn!(error = %error, "finishing a batch begun ahead failed; committing it anew");
            }
        }
    }
    sinks::store::commit_with_retry(
        store,
        &processed.output,
        &processed.positions,
        &settings.store,
        metrics,
        cancel,
    )
    .await
}

/// Runs NDJSON inputs to their end through `core` into `store`. Files resume from
/// their stored positions. Returns the summary and the core (with its state).
pub async fn run_ndjson(
    core: Core,
    store: &Store,
    settings: &Settings,
    metrics: &Metrics,
    inputs: Vec<Input>,
    cancel: CancellationToken,
    progress: bool,
) -> Result<(RunSummary, Core), PipelineError> {
    let started = Instant::now();
    // Look up where each file stands before the blocking reader starts.
    let mut opened = Vec::with_capacity(inputs.len());
    let mut total_bytes = 0;
    for input in inputs {
        match input {
            Input::File(path) => {
                let path = std::fs::canonicalize(&path).map_err(|source| SourceError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let stored = store.position(&sources::ndjson::file_key(&path)).await?;
                let (reader, start, remaining) = sources::ndjson::open_file(&path, stored)?;
                total_bytes += remaining;
                opened.push(Opened::File(path, reader, start));
            }
            Input::Stdin => opened.push(Opened::Stdin),
        }
    }
    let limits = ReadLimits {
        batch_size: settings.input.batch_size,
        max_line_bytes: settings.input.max_line_bytes,
        max_dead_letter_bytes: settings.input.max_dead_letter_bytes,
    };
    let bar = progress.then(|| progress_bar(total_bytes));
    let capacity = settings.input.channel_capacity;
    let (raw_tx, raw_rx) = mpsc::channel::<CoreInput>(capacity);
    let (out_tx, out_rx) = mpsc::channel::<Processed>(capacity);

    let reader_cancel = cancel.clone();
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
        let progress = |bytes: u64| {
            if let Some(bar) = &reader_bar {
                bar.inc(bytes);
            }
        };
        let mut seq = 0;
        let mut emit = |batch: RawBatch| -> bool {
            seq += 1;
            !reader_cancel.is_cancelled()
                && raw_tx.blocking_send(CoreInput::Batch(seq, batch)).is_ok()
        };
        for input in opened {
            if reader_cancel.is_cancelled() {
                break;
            }
            match input {
                Opened::File(path, reader, start) => {
                    let name = path.display().to_string();
                    let shared: Arc<str> = Arc::from(name.as_str());
                    let origin = |line, byte_offset| Origin::File {
                        path: shared.clone(),
                        line,
                        byte_offset,
                    };
                    let span =
                        tracing::info_span!("read", input = %name, from_offset = start.position);
                    let _entered = span.enter();
                    sources::ndjson::read_input(
                        reader, &origin, start, limits, &mut emit, &progress,
                    )
                    .map_err(|source| SourceError::Io {
                        path: name.clone(),
                        source,
                    })?;
                }
                Opened::Stdin => {
                    let stdin = std::io::stdin();
                    let origin = |line, byte_offset| Origin::Stdin { line, byte_offset };
                    let start = SourcePosition {
                        source_key: "stdin".into(),
                        position: 0,
                        line: 0,
                        fingerprint: None,
                    };
                    sources::ndjson::read_input(
                        stdin.lock(),
                        &origin,
                        start,
                        limits,
                        &mut emit,
                        &progress,
                    )
                    .map_err(|source| SourceError::Io {
                        path: "stdin".into(),
                        source,
                    })?;
                }
            }
        }
        if !reader_cancel.is_cancelled() {
            let _ = raw_tx.blocking_send(CoreInput::EndOfInput(seq + 1));
        }
        Ok(())
    });
    let core_task = spawn_core(core, raw_rx, out_tx, metrics.clone());
    // Stdin positions cannot be resumed from; they are not stored.
    let (stdin_free_tx, stdin_free_rx) = mpsc::channel::<Processed>(capacity);
    let filter = tokio::spawn(strip_stdin_positions(out_rx, stdin_free_tx));
    let written = write_all(stdin_free_rx, store, settings, metrics, &cancel, |_, _| {}).await;
    if written.is_err() {
        cancel.cancel();
    }
    let _ = filter.await;
    let read_result = reader
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    let (core, core_time) = core_task
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut summary = written?;
    read_result?;
    summary.elapsed = started.elapsed();
    summary.core_time = core_time;
    Ok((summary, core))
}

async fn strip_stdin_positions(
    mut input: mpsc::Receiver<Processed>,
    output: mpsc::Sender<Processed>,
) {
    while let Some(mut processed) = input.recv().await {
        processed.positions.retain(|p| p.source_key != "stdin");
        if output.send(processed).await.is_err() {
            break;
        }
    }
}

enum Opened {
    File(
        std::path::PathBuf,
        std::io::BufReader<std::fs::File>,
        SourcePosition,
    ),
    Stdin,
}

/// Consumes the configured Kafka topics until `cancel` fires: batches go through
/// the core into the store with their offsets, outputs leave through the outbox.
/// On cancel: the partial batch is processed and committed, the outbox flushed,
/// offsets committed to the group, then it returns.
pub async fn run_kafka(app: &App, cancel: CancellationToken) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let settings = &app.settings;
    let kafka = &settings.kafka;
    let progress = Arc::new(Progress::default());
    let regional_inline = settings.detect.placement == Placement::Inline;
    let consumer = sources::kafka::subscribe(
        kafka,
        app.store.clone(),
        progress.clone(),
        app.metrics.clone(),
        regional_inline,
    )?;
    let core = app
        .load_core_with(regional_inline)
        .await
        .map_err(Box::new)?;
    // With several instances, one elected among them counts every instance's events.
    let leader_cancel = cancel.child_token();
    let leader =
        (!regional_inline).then(|| tokio::spawn(leader::run(app.clone(), leader_cancel.clone())));
    let capacity = settings.input.channel_capacity;
    let (raw_tx, raw_rx) = mpsc::channel::<CoreInput>(capacity);
    let (out_tx, out_rx) = mpsc::channel::<Processed>(capacity);
    let core_task = spawn_core(core, raw_rx, out_tx, app.metrics.clone());

    // The outbox relay runs until the writer is done and the backlog is flushed.
    let wake = Arc::new(Notify::new());
    let relay_cancel = CancellationToken::new();
    let relay = match (kafka.publish_outputs, app.store.outbox_topics()) {
        (true, Some(_)) => {
            let producer = sinks::outbox::producer(kafka).map_err(KafkaSourceError::from)?;
            Some(tokio::spawn(sinks::outbox::relay(
                app.store.clone(),
                producer,
                kafka.clone(),
                app.metrics.clone(),
                wake.clone(),
                relay_cancel.clone(),
            )))
        }
        _ => None,
    };

    let writer_progress = progress.clone();
    let writer_consumer = consumer.clone();
    let writer_wake = wake.clone();
    let writer_cancel = cancel.clone();
    let store = app.store.clone();
    let writer_settings = settings.clone();
    let metrics = app.metrics.clone();
    let writer = tokio::spawn(async move {
        let result = write_all(
            out_rx,
            &store,
            &writer_settings,
            &metrics,
            &writer_cancel,
            |seq, positions| {
                writer_progress.committed(seq, positions);
                sources::kafka::commit_group_offsets(&writer_consumer, positions);
                writer_wake.notify_one();
            },
        )
        .await;
        if result.is_err() {
            writer_cancel.cancel();
        }
        result
    });

    // The consumer loop: accumulate a batch, hand it over when full or old enough.
    let mut seq = 0u64;
    let mut batch = RawBatch::default();
    let mut offsets: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    let mut generation = progress.generation();
    let mut first_assignment = true;
    let wait = Duration::from_millis(kafka.batch_max_wait_ms);
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut failure = None;
    loop {
        let received = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            message = consumer.recv() => Some(message),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        if progress.generation() != generation {
            // The assignment changed: records read before it are read again from
            // the stored offsets by whoever owns their partitions now.
            generation = progress.generation();
            batch = RawBatch::default();
            offsets.clear();
        }
        if progress.take_reload() {
            if !first_assignment {
                let drained =
                    tokio::task::block_in_place(|| progress.wait_drained(Duration::from_secs(120)));
                if !drained {
                    tracing::warn!("batches in flight did not commit before the reload");
                }
                match app.load_core_with(regional_inline).await {
                    Ok(core) => {
                        if raw_tx
                            .send(CoreInput::Replace(Box::new(core)))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(error) => {
                        failure = Some(PipelineError::Reload(Box::new(error)));
                        break;
                    }
                }
            }
            first_assignment = false;
        }
        match received {
            Some(Ok(message)) => {
                use rdkafka::message::Message;
                let record = sources::kafka::record(
                    &message,
                    settings.input.max_line_bytes,
                    settings.input.max_dead_letter_bytes,
                );
                app.metrics.messages_consumed(message.topic(), 1);
                offsets.insert(
                    (message.topic().to_string(), message.partition()),
                    message.offset() + 1,
                );
                if batch.records.is_empty() {
                    deadline = tokio::time::Instant::now() + wait;
                }
                batch.records.push(record);
                if batch.records.len() < kafka.batch_max_messages {
                    continue;
                }
            }
            Some(Err(error)) => {
                // Broker gone, partition errors: librdkafka retries by itself.
                tracing::warn!(error = %error, "kafka consumer error");
                continue;
            }
            None => {
                deadline = tokio::time::Instant::now() + wait;
                if batch.records.is_empty() {
                    continue;
                }
            }
        }
        seq += 1;
        if hand_over(&raw_tx, &progress, seq, &mut batch, &mut offsets)
            .await
            .is_err()
        {
            break;
        }
    }
    // Drain: the partial batch is processed and committed too.
    if failure.is_none() && !batch.records.is_empty() && progress.generation() == generation {
        seq += 1;
        let _ = hand_over(&raw_tx, &progress, seq, &mut batch, &mut offsets).await;
    }
    drop(raw_tx);
    let (_, core_time) = core_task
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    let written = writer
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    // The regional leader's last commit first, so the relay flushes its outputs too.
    leader_cancel.cancel();
    if let Some(leader) = leader {
        let _ = leader.await;
    }
    relay_cancel.cancel();
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    // A last synchronous group commit, for lag monitoring.
    if let Ok(positions) = app.store.positions_with_prefix("kafka:").await {
        sources::kafka::commit_group_offsets(&consumer, &positions);
    }
    close_consumer(consumer, Duration::from_secs(10));
    if let Some(failure) = failure {
        return Err(failure);
    }
    let mut summary = written?;
    summary.elapsed = started.elapsed();
    summary.core_time = core_time;
    Ok(summary)
}

/// Leaves the group and closes the consumer on a thread of its own, waiting at
/// most `timeout`: with the broker gone, librdkafka's close can wait for a
/// coordinator that never answers. Offsets live in the store, so an unclean leave
/// only delays the next rebalance by the session timeout.
fn close_consumer(consumer: Arc<sources::kafka::SourceConsumer>, timeout: Duration) {
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

/// Hands the accumulated batch, with the next offset of each partition in it, to
/// the core.
async fn hand_over(
    core: &mpsc::Sender<CoreInput>,
    progress: &Progress,
    seq: u64,
    batch: &mut RawBatch,
    offsets: &mut std::collections::BTreeMap<(String, i32), i64>,
) -> Result<(), ()> {
    let mut taken = std::mem::take(batch);
    taken.positions = std::mem::take(offsets)
        .into_iter()
        .map(|((topic, partition), next)| SourcePosition {
            source_key: sources::kafka::partition_key(&topic, partition),
            position: next as u64,
            line: 0,
            fingerprint: None,
        })
        .collect();
    progress.handed(seq);
    core.send(CoreInput::Batch(seq, taken))
        .await
        .map_err(|_| ())
}

/// A byte progress bar on stderr.
pub fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
