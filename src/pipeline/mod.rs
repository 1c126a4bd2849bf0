//! The pipeline: sources -> core -> store sink, joined by bounded channels, so a
//! slow store stalls the readers instead of growing memory. This module is the only
//! one that knows about threads and channels; the core itself is pure.
//!
//! ```text
//! reader thread ──(RawBatch, cap N)──▶ core thread ──(BatchOutput, cap N)──▶ store sink
//! ```

pub mod core;
pub mod decode;
pub mod detect;
pub mod resolve;
pub mod rules;
pub mod sinks;
pub mod sources;

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::record::Origin;
use crate::store::{SourcePosition, Store, StoreError};
use crate::telemetry::Metrics;
use core::{BatchCounts, BatchOutput, Core};
use sources::ndjson::{Input, RawBatch, ReadLimits, SourceError};

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The store failed permanently (or for longer than the retry budget).
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Runs NDJSON inputs to their end through `core` into `store`. Files resume from
/// their stored positions. Returns the summary and the core (with its state).
pub async fn run_ndjson(
    mut core: Core,
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
    let (raw_tx, mut raw_rx) = mpsc::channel::<RawBatch>(capacity);
    let (out_tx, mut out_rx) = mpsc::channel::<(BatchOutput, Vec<SourcePosition>)>(capacity);

    let reader_cancel = cancel.clone();
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
        let progress = |bytes: u64| {
            if let Some(bar) = &reader_bar {
                bar.inc(bytes);
            }
        };
        let mut emit = |batch: RawBatch| -> bool {
            !reader_cancel.is_cancelled() && raw_tx.blocking_send(batch).is_ok()
        };
        for input in opened {
            if reader_cancel.is_cancelled() {
                break;
            }
            match input {
                Opened::File(path, reader, start) => {
                    let name = path.display().to_string();
                    let shared: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
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
        Ok(())
    });

    let core_metrics = metrics.clone();
    let core_task = tokio::task::spawn_blocking(move || {
        let mut core_time = Duration::ZERO;
        while let Some(batch) = raw_rx.blocking_recv() {
            let began = Instant::now();
            let output = core.process(&batch.records, Utc::now());
            let elapsed = began.elapsed();
            core_time += elapsed;
            core_metrics.batch_processed(elapsed);
            if out_tx.blocking_send((output, batch.positions)).is_err() {
                break;
            }
        }
        (core, core_time)
    });

    let mut summary = RunSummary::default();
    let mut failure = None;
    while let Some((output, positions)) = out_rx.recv().await {
        // Stdin positions cannot be resumed from; they are not stored.
        let positions: Vec<SourcePosition> = positions
            .into_iter()
            .filter(|p| p.source_key != "stdin")
            .collect();
        match sinks::store::commit_with_retry(
            store,
            &output,
            &positions,
            &settings.store,
            metrics,
            &cancel,
        )
        .await
        {
            Ok(()) => summary.add(&output),
            Err(error) => {
                tracing::error!(error = %error, "store commit failed; stopping");
                failure = Some(error);
                cancel.cancel();
                break;
            }
        }
    }
    drop(out_rx);
    let read_result = reader
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    let (core, core_time) = core_task
        .await
        .map_err(|e| PipelineError::Thread(e.to_string()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    read_result?;
    summary.elapsed = started.elapsed();
    summary.core_time = core_time;
    Ok((summary, core))
}

enum Opened {
    File(
        std::path::PathBuf,
        std::io::BufReader<std::fs::File>,
        SourcePosition,
    ),
    Stdin,
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
