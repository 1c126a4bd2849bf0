//! The pipeline: one driver runs any [`sources::Source`] -> the core -> the store
//! sink, joined by bounded channels, so a slow store stalls the source instead of
//! growing memory. The driver also owns what a source's inputs need from the store
//! (their stored positions, and for Kafka partitions a claim that fences a former
//! owner) and rebuilds the core's state from the store whenever the inputs change.
//! This module is the only one that knows about threads and channels; the core
//! itself is pure.
//!
//! ```text
//! source ──(RawBatch, cap N)──▶ core thread ──(BatchOutput, cap N)──▶ store writer ──▶ outbox relay
//!   ▲ establish(stored positions)                                     │ committed / discarded
//!   └──────────────── driver (claims, state reloads) ◀────────────────┘
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::batch::{BatchCounts, BatchOutput, SourcePosition};
use crate::config::Settings;
use crate::store::{BegunBatch, Store, StoreError};
use crate::telemetry::Metrics;
use core::Core;
use detect::settings::Placement;
use sources::kafka::KafkaSource;
use sources::ndjson::{Input, NdjsonSource};
use sources::{Acknowledge, Pulled, RawBatch, Source, SourceError, Start};

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input could not be read (or the Kafka source could not start).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The outbox producer could not be created.
    #[error("cannot create the Kafka producer")]
    Producer(#[from] rdkafka::error::KafkaError),
    /// The store failed permanently (or for longer than the retry budget).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state could not be loaded (at the start, or after a rebalance).
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
    /// A batch, with its sequence number and the assignment generation it was read in.
    Batch(u64, u64, RawBatch),
    /// Replace the core (its state reloaded from the store after a rebalance).
    Replace(Box<Core>),
    /// A finite input ended: judge every day up to the latest event's.
    EndOfInput(u64, u64),
}

/// A processed batch on its way to the store.
struct Processed {
    seq: u64,
    generation: u64,
    output: BatchOutput,
    positions: Vec<SourcePosition>,
}

/// The source position under which the registry change log's cursor commits with
/// the batches (exactly once: a batch judged after change N commits N).
pub const REGISTRY_CHANGES_KEY: &str = "registry:changes";

/// The registry change log as the core thread follows it: before a batch, at most
/// every `poll`, the changes after the core's cursor are read and applied, and the
/// cursor goes out with the batch's positions.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    /// Where the log is.
    pub store: Store,
    /// How often to look.
    pub poll: Duration,
}

impl ChangeFeed {
    /// The feed of `store`, looked at every `procedure.change_poll_ms`.
    pub fn new(store: &Store, settings: &Settings) -> Self {
        ChangeFeed {
            store: store.clone(),
            poll: Duration::from_millis(settings.procedure.change_poll_ms),
        }
    }

    /// Applies what is new to `core` (blocking: called on the core's thread) and
    /// appends the cursor to `positions`. A store error leaves the changes for the
    /// next batch.
    fn apply(
        &self,
        core: &mut Core,
        last: &mut Option<Instant>,
        positions: &mut Vec<SourcePosition>,
        metrics: &Metrics,
    ) {
        if last.is_none_or(|at| at.elapsed() >= self.poll) {
            *last = Some(Instant::now());
            loop {
                let read = tokio::runtime::Handle::current().block_on(
                    self.store
                        .registry_changes_after(core.registry_cursor(), 1000),
                );
                match read {
                    Ok(changes) if !changes.is_empty() => {
                        let applied = core.apply_registry_changes(&changes, Utc::now());
                        metrics.registry_changes_applied(applied);
                        if changes.len() < 1000 {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::Chain(&error), "reading the registry change log failed; retrying at the next batch");
                        break;
                    }
                }
            }
        }
        if core.registry_cursor() > 0 {
            positions.push(SourcePosition {
                source_key: REGISTRY_CHANGES_KEY.to_string(),
                position: core.registry_cursor() as u64,
                line: 0,
                fingerprint: None,
                claim: None,
            });
        }
    }
}

/// Runs the core on a blocking thread until its input closes; with `changes`, the
/// registry change log is applied before each batch.
fn spawn_core(
    mut core: Core,
    mut input: mpsc::Receiver<CoreInput>,
    output: mpsc::Sender<Processed>,
    metrics: Metrics,
    changes: Option<ChangeFeed>,
) -> tokio::task::JoinHandle<(Core, Duration)> {
    tokio::task::spawn_blocking(move || {
        let mut core_time = Duration::ZERO;
        let mut polled = None;
        while let Some(message) = input.blocking_recv() {
            let (seq, generation, processed, positions) = match message {
                CoreInput::Replace(fresh) => {
                    core = *fresh;
                    polled = None;
                    continue;
                }
                CoreInput::EndOfInput(seq, generation) => {
                    let mut positions = Vec::new();
                    if let Some(feed) = &changes {
                        feed.apply(&mut core, &mut polled, &mut positions, &metrics);
                    }
                    core.end_of_input();
                    let began = Instant::now();
                    let processed = core.process(&[], Utc::now());
                    core_time += began.elapsed();
                    (seq, generation, processed, positions)
                }
                CoreInput::Batch(seq, generation, mut batch) => {
                    if let Some(feed) = &changes {
                        feed.apply(&mut core, &mut polled, &mut batch.positions, &metrics);
                    }
                    let began = Instant::now();
                    core.mark_lanes(&batch.lanes);
                    let processed = core.process(&batch.records, Utc::now());
                    let elapsed = began.elapsed();
                    core_time += elapsed;
                    metrics.batch_processed(elapsed);
                    (seq, generation, processed, batch.positions)
                }
            };
            let processed = Processed {
                seq,
                generation,
                output: processed,
                positions,
            };
            if output.blocking_send(processed).is_err() {
                break;
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

/// What the store writer reports to the driver.
enum Written {
    /// A batch read in the current generation was refused: another instance claims an
    /// input it was read from.
    Fenced(u64),
}

/// The store writer's view of the driver: who hears of settled batches, the current
/// assignment generation, and where to report a refused claim.
struct WriterLink {
    acknowledge: Arc<dyn Acknowledge>,
    generation: Arc<AtomicU64>,
    fenced: mpsc::UnboundedSender<Written>,
    wake: Arc<Notify>,
}

/// Commits processed batches in order until the channel closes. Stops at the first
/// permanent store error — but a batch refused because another instance claimed one
/// of its inputs ([`StoreError::Fenced`]) is void, with every batch of its generation
/// or older after it (committing them would skip its records), and the driver hears
/// of it when it belongs to the current generation.
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
    link: &WriterLink,
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
    let mut void_through: Option<u64> = None;
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
                            tracing::debug!(error = %crate::telemetry::Chain(&error), "beginning a batch ahead failed; it commits in turn");
                            None
                        })
                })
            });
            queue.push_back((next, begun));
        }
        let Some((processed, begun)) = queue.pop_front() else {
            break;
        };
        if void_through.is_some_and(|generation| processed.generation <= generation) {
            if let Some(handle) = begun {
                handle.abort();
            }
            link.acknowledge.discarded(processed.seq);
            continue;
        }
        // A batch whose beginning failed (or whose task died) commits in turn.
        let begun = match begun {
            Some(handle) => handle.await.ok().flatten(),
            None => None,
        };
        match commit_one(store, &processed, begun, settings, metrics, cancel).await {
            Ok(()) => {}
            Err(StoreError::Fenced { source_key }) => {
                tracing::warn!(input = %source_key, seq = processed.seq, "batch refused: another instance claims its input; it and the batches read after it are void");
                void_through = Some(processed.generation.max(void_through.unwrap_or(0)));
                link.acknowledge.discarded(processed.seq);
                if processed.generation == link.generation.load(Ordering::SeqCst) {
                    let _ = link.fenced.send(Written::Fenced(processed.generation));
                }
                continue;
            }
            Err(error) => {
                tracing::error!(error = %crate::telemetry::Chain(&error), "store commit failed; stopping");
                // What was begun ahead is rolled back: stop the tasks, dropping their
                // transactions.
                for (_, begun) in queue {
                    if let Some(handle) = begun {
                        handle.abort();
                    }
                }
                return Err(error);
            }
        }
        summary.add(&processed.output);
        if abort_after.is_some_and(|n| summary.batches >= n) {
            tracing::error!("failpoint abort_after_commit reached; aborting");
            std::process::abort();
        }
        link.acknowledge
            .committed(processed.seq, &processed.positions);
        link.wake.notify_one();
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
            Err(error @ StoreError::Fenced { .. }) => return Err(error),
            Err(error) => {
                metrics.commit_retried();
                tracing::warn!(error = %crate::telemetry::Chain(&error), "finishing a batch begun ahead failed; committing it anew");
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

/// The days of events kept with `store.event_retention_days`: never fewer than the
/// state read back at start-up needs (the dedupe horizon, and twice the rules'
/// look-back and lateness).
pub fn event_retention_days(settings: &Settings) -> i64 {
    let needed = settings
        .input
        .dedupe_horizon_days
        .max(2 * (settings.rules.lookback_days + settings.rules.max_lateness_days));
    settings.store.event_retention_days.max(needed)
}

/// Deletes the events older than the retention (in event time, before the latest
/// event stored) at once and then hourly, until `cancel`.
async fn event_retention(app: App, cancel: CancellationToken) {
    let days = event_retention_days(&app.settings);
    if days > app.settings.store.event_retention_days {
        tracing::warn!(
            configured = app.settings.store.event_retention_days,
            kept = days,
            "store.event_retention_days is shorter than the state needs; events are kept for longer"
        );
    }
    loop {
        match app.store.latest_event_time().await {
            Ok(Some(latest)) => {
                let before = latest - chrono::Duration::days(days);
                match app.store.events_purge(before).await {
                    Ok(rows) => {
                        app.metrics.events_purged(rows);
                        if rows > 0 {
                            tracing::info!(rows, before = %before, "old events deleted (store.event_retention_days)");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot delete old events")
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::Chain(&error), "cannot read the latest event time")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// Runs NDJSON inputs (files resume from their stored positions; `-` is stdin) to
/// their end, or until `cancel`. With Kafka outputs configured, the outbox is
/// published as the run goes and flushed at its end.
pub async fn run_ndjson(
    app: &App,
    inputs: Vec<Input>,
    cancel: CancellationToken,
    progress: bool,
) -> Result<RunSummary, PipelineError> {
    // A missing key is what a newcomer must fix first.
    app.pseudonymiser().await.map_err(Box::new)?;
    let source = NdjsonSource::open(inputs, &app.settings.input, progress)?;
    drive(app, source, cancel).await
}

/// Consumes the configured Kafka topics until `cancel` fires: batches go through
/// the core into the store with their offsets, outputs leave through the outbox.
/// On cancel: the partial batch is processed and committed, the outbox flushed,
/// offsets committed to the group, then it returns.
pub async fn run_kafka(app: &App, cancel: CancellationToken) -> Result<RunSummary, PipelineError> {
    let regional_inline = app.settings.detect.placement == Placement::Inline;
    let source = KafkaSource::subscribe(
        &app.settings.kafka,
        &app.settings.input,
        app.metrics.clone(),
        regional_inline,
    )?;
    drive(app, source, cancel).await
}

/// A name for this process among the instances of a consumer group.
fn holder_name(app: &App) -> String {
    format!(
        "{}-{}-{}",
        app.settings.kafka.client_id,
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// Claims inputs in the store, retrying transient failures with capped backoff (an
/// assignment never starts without the positions stored with the results).
async fn claim_with_retry(
    app: &App,
    keys: &[String],
    holder: &str,
    cancel: &CancellationToken,
) -> Result<Vec<crate::store::Claimed>, StoreError> {
    let mut backoff = Duration::from_millis(100);
    let cap = Duration::from_secs(app.settings.store.max_backoff_seconds);
    loop {
        match app.store.claim_inputs(keys, holder, Utc::now()).await {
            Ok(claimed) => return Ok(claimed),
            Err(error) if error.is_transient() && !cancel.is_cancelled() => {
                tracing::warn!(error = %crate::telemetry::Chain(&error), retry_in_ms = backoff.as_millis() as u64, "cannot claim the assigned partitions; retrying");
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

/// The core for `lanes`, its state rebuilt from the store, retrying transient store
/// failures (a cut connection, a restarting server) with capped backoff.
async fn load_core(
    app: &App,
    regional_inline: bool,
    lanes: &[String],
    cancel: &CancellationToken,
) -> Result<Core, PipelineError> {
    let mut backoff = Duration::from_millis(100);
    let cap = Duration::from_secs(app.settings.store.max_backoff_seconds);
    loop {
        match app.load_core_with(regional_inline).await {
            Ok(mut core) => {
                core.declare_lanes(lanes);
                return Ok(core);
            }
            Err(crate::app::AppError::Store(error))
                if error.is_transient() && !cancel.is_cancelled() =>
            {
                tracing::warn!(error = %crate::telemetry::Chain(&error), retry_in_ms = backoff.as_millis() as u64, "cannot load the pipeline state; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Box::new(crate::app::AppError::Store(error)).into()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(cap);
            }
            Err(error) => return Err(Box::new(error).into()),
        }
    }
}

/// Runs `source` through the core into the store until it ends or `cancel` fires.
async fn drive<S: Source>(
    app: &App,
    mut source: S,
    cancel: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let settings = &app.settings;
    let claims = source.claims_inputs();
    let regional_inline = !claims || settings.detect.placement == Placement::Inline;
    let holder = holder_name(app);

    // Inputs known from the start (files) begin at their stored positions; a consumer
    // group's come with its first assignment, and the core's state is loaded then.
    let inputs = source.inputs();
    let core = if claims {
        Core::new(
            settings,
            app.pseudonymiser().await.map_err(Box::new)?,
            Default::default(),
        )
    } else {
        let mut starts = Vec::with_capacity(inputs.len());
        for key in &inputs {
            starts.push(Start {
                source_key: key.clone(),
                claim: None,
                position: app.store.position(key).await?,
            });
        }
        let core = load_core(app, regional_inline, &inputs, &cancel).await?;
        source.establish(starts)?;
        core
    };

    // Old events leave the store, at the start and hourly (when a retention is set).
    let retention_cancel = CancellationToken::new();
    let retention = (settings.store.event_retention_days > 0)
        .then(|| tokio::spawn(event_retention(app.clone(), retention_cancel.clone())));
    // With several instances, one elected among them counts every instance's events.
    let leader_cancel = cancel.child_token();
    let leader =
        (!regional_inline).then(|| tokio::spawn(leader::run(app.clone(), leader_cancel.clone())));
    // The outbox relay runs until the writer is done and the backlog is flushed.
    let wake = Arc::new(Notify::new());
    let relay_cancel = CancellationToken::new();
    let relay = match (settings.kafka.publish_outputs, app.store.outbox_topics()) {
        (true, Some(_)) => {
            let producer = sinks::outbox::producer(&settings.kafka)?;
            Some(tokio::spawn(sinks::outbox::relay(
                app.store.clone(),
                producer,
                settings.kafka.clone(),
                app.metrics.clone(),
                wake.clone(),
                relay_cancel.clone(),
            )))
        }
        _ => None,
    };

    let capacity = settings.input.channel_capacity;
    let (core_tx, core_rx) = mpsc::channel::<CoreInput>(capacity);
    let (out_tx, out_rx) = mpsc::channel::<Processed>(capacity);
    let feed = ChangeFeed::new(&app.store, settings);
    let core_task = spawn_core(core, core_rx, out_tx, app.metrics.clone(), Some(feed));
    let generation = Arc::new(AtomicU64::new(0));
    let (fenced_tx, mut fenced_rx) = mpsc::unbounded_channel();
    let link = WriterLink {
        acknowledge: source.acknowledger(),
        generation: generation.clone(),
        fenced: fenced_tx,
        wake: wake.clone(),
    };
    let writer_cancel = cancel.clone();
    let (store, writer_settings, metrics) =
        (app.store.clone(), settings.clone(), app.metrics.clone());
    let writer = tokio::spawn(async move {
        let result = write_all(
            out_rx,
            &store,
            &writer_settings,
            &metrics,
            &writer_cancel,
            &link,
        )
        .await;
        if result.is_err() {
            writer_cancel.cancel();
        }
        result
    });

    let mut seq = 0u64;
    let mut failure = None;
    let mut ended = false;
    loop {
        if let Ok(Written::Fenced(refused)) = fenced_rx.try_recv()
            && refused == generation.load(Ordering::SeqCst)
        {
            // Read under a claim another instance holds now: give everything up and
            // start again from a fresh assignment.
            generation.fetch_add(1, Ordering::SeqCst);
            if let Err(error) = source.rejoin() {
                failure = Some(error.into());
                break;
            }
        }
        let pulled = match source.next(&cancel).await {
            Ok(pulled) => pulled,
            Err(error) => {
                failure = Some(error.into());
                break;
            }
        };
        match pulled {
            Pulled::Batch(batch) => {
                seq += 1;
                source.handed(seq);
                let current = generation.load(Ordering::SeqCst);
                if core_tx
                    .send(CoreInput::Batch(seq, current, batch))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Pulled::Reassigned(keys) => {
                generation.fetch_add(1, Ordering::SeqCst);
                let claimed = match claim_with_retry(app, &keys, &holder, &cancel).await {
                    Ok(claimed) => claimed,
                    Err(_) if cancel.is_cancelled() => break,
                    Err(error) => {
                        failure = Some(error.into());
                        break;
                    }
                };
                // The state as committed by whoever read these partitions before.
                let core = match load_core(app, regional_inline, &keys, &cancel).await {
                    Ok(core) => core,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                };
                if core_tx
                    .send(CoreInput::Replace(Box::new(core)))
                    .await
                    .is_err()
                {
                    break;
                }
                let starts = claimed
                    .into_iter()
                    .map(|claim| Start {
                        source_key: claim.source_key,
                        claim: Some(claim.epoch),
                        position: claim.position,
                    })
                    .collect();
                if let Err(error) = source.establish(starts) {
                    failure = Some(error.into());
                    break;
                }
            }
            Pulled::Ended => {
                ended = true;
                break;
            }
        }
    }
    // A complete finite input read to its end: judge every day up to its latest
    // event. An input that may continue (tomorrow's files) leaves the days within the
    // allowed lateness open, for the next run to fill and judge.
    if ended && !claims && settings.input.complete && !cancel.is_cancelled() {
        seq += 1;
        let current = generation.load(Ordering::SeqCst);
        let _ = core_tx.send(CoreInput::EndOfInput(seq, current)).await;
    }
    drop(core_tx);
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
    retention_cancel.cancel();
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    // A last group commit of what is stored, for lag monitoring.
    if claims && let Ok(positions) = app.store.positions_with_prefix("kafka:").await {
        source.acknowledger().committed(seq, &positions);
    }
    source.close();
    if let Some(failure) = failure {
        return Err(failure);
    }
    let mut summary = written?;
    summary.elapsed = started.elapsed();
    summary.core_time = core_time;
    Ok(summary)
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
