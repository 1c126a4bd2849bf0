//! What each CLI command does, as library functions the binary calls and the tests
//! call too. Each takes typed arguments and returns a typed result; printing is the
//! binary's business, except for exports, which stream to the writer given.

pub mod accounts;
pub mod data_quality;
pub mod demo;
pub mod detect;
pub mod evaluate;
pub mod history;
pub mod produce;
pub mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::batch::SourcePosition;
use crate::config::Settings;
use crate::domain::dead_letter::{DeadLetter, Rejection};
use crate::domain::record::Origin;
use crate::pipeline::decode::Decoder;
use crate::pipeline::sources::ndjson::{Ending, Input, ReadLimits, read_input};
use crate::pipeline::{PipelineError, RunSummary, run_ndjson};
use crate::registry::{
    Encoding, ImportError, RowError, decoded, parse_households, parse_members, parse_regions,
};
use crate::store::{Report, StoreError};

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Start-up failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input file could not be read at all.
    #[error("cannot import {path}")]
    Import {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: ImportError,
    },
    /// A file could not be opened or read.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An output (stdout) could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The output.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store named does not exist (a mistyped path must not create an empty one).
    #[error(
        "no store at {path}: give --store sqlite://PATH of an existing file (or run `yujing demo` first)"
    )]
    NoStore {
        /// The path of the SQLite file.
        path: String,
    },
    /// Generating failed.
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The HTTP listener failed.
    #[error(transparent)]
    Listen(#[from] crate::api::ListenError),
    /// An account command was refused.
    #[error("{0}")]
    Accounts(String),
}

fn open(path: &Path) -> Result<std::fs::File, CommandError> {
    crate::pipeline::sources::open_for_reading(path).map_err(|source| CommandError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// An import file read through a byte progress bar on stderr when `progress`; the
/// bar then turns into a spinner while the rows are stored (see [`Importing::storing`]).
struct Importing {
    bar: Option<indicatif::ProgressBar>,
}

/// How an import reads its files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// A progress bar on stderr.
    pub progress: bool,
    /// The files' encoding.
    pub encoding: Encoding,
}

impl Importing {
    fn open(
        path: &Path,
        options: &ImportOptions,
    ) -> Result<(Self, Box<dyn std::io::Read + Send>), CommandError> {
        let file = open(path)?;
        let read_error = |source| CommandError::Read {
            path: path.display().to_string(),
            source,
        };
        if !options.progress {
            let text = decoded(Box::new(file), options.encoding).map_err(read_error)?;
            return Ok((Importing { bar: None }, text));
        }
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = crate::pipeline::progress_bar(total);
        let reader = bar.wrap_read(file);
        let text = decoded(Box::new(reader), options.encoding).map_err(read_error)?;
        Ok((Importing { bar: Some(bar) }, text))
    }

    /// The file is read: show that `rows` rows are being stored.
    fn storing(&self, rows: usize) {
        if let Some(bar) = &self.bar {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_message(format!("storing {rows} rows"));
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Importing {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `yujing run` on files or stdin: processes the inputs into the store. With
/// Kafka outputs configured, the outbox is published as the run goes and flushed
/// at its end.
pub async fn run(
    app: &App,
    inputs: Vec<Input>,
    cancel: CancellationToken,
    progress: bool,
) -> Result<RunSummary, CommandError> {
    Ok(run_ndjson(app, inputs, cancel, progress).await?)
}

/// `yujing run` on Kafka: consumes the department topics until cancelled.
pub async fn run_kafka(app: &App, cancel: CancellationToken) -> Result<RunSummary, CommandError> {
    Ok(crate::pipeline::run_kafka(app, cancel).await?)
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Rows stored, per file.
    pub imported: Vec<(String, usize)>,
    /// Bad rows, per file.
    pub errors: Vec<(String, RowError)>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

/// `yujing registry import`: households, then members (whose household must exist
/// in the file or the store).
pub async fn import_registry(
    app: &App,
    households: &Path,
    members: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, CommandError> {
    let pseudonymiser = app.pseudonymiser().await?;
    let mut summary = ImportSummary::default();
    let (importing, reader) = Importing::open(households, options)?;
    let villages: std::collections::HashSet<crate::domain::ids::RegionCode> =
        app.store.village_codes().await?.into_iter().collect();
    if villages.is_empty() {
        summary.notes.push(
            "villages not checked: the regions table holds none (run `yujing regions import` first to check them)"
                .to_string(),
        );
    }
    let known_village = |code: &crate::domain::ids::RegionCode| villages.contains(code);
    let known_village: Option<&dyn Fn(&crate::domain::ids::RegionCode) -> bool> =
        (!villages.is_empty()).then_some(&known_village);
    let parsed =
        parse_households(reader, known_village).map_err(|source| CommandError::Import {
            path: households.display().to_string(),
            source,
        })?;
    let name = households.display().to_string();
    importing.storing(parsed.rows.len());
    app.store
        .upsert_households(&parsed.rows, Utc::now())
        .await?;
    drop(importing);
    summary.imported.push((name.clone(), parsed.rows.len()));
    summary
        .errors
        .extend(parsed.errors.into_iter().map(|e| (name.clone(), e)));

    let known: std::collections::HashSet<String> = app
        .store
        .load_registry()
        .await?
        .households
        .into_iter()
        .map(|h| h.household_id.as_str().to_string())
        .collect();
    let is_known = |id: &crate::domain::ids::HouseholdId| known.contains(id.as_str());
    let (importing, reader) = Importing::open(members, options)?;
    let today = Utc::now().date_naive();
    let parsed = parse_members(reader, &pseudonymiser, &is_known, today).map_err(|source| {
        CommandError::Import {
            path: members.display().to_string(),
            source,
        }
    })?;
    let name = members.display().to_string();
    let rows = parsed.rows;
    importing.storing(rows.len());
    app.store.upsert_members(&rows, Utc::now()).await?;
    drop(importing);
    summary.imported.push((name.clone(), rows.len()));
    summary
        .errors
        .extend(parsed.errors.into_iter().map(|e| (name.clone(), e)));
    Ok(summary)
}

/// `yujing regions import`.
pub async fn import_regions(
    app: &App,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, CommandError> {
    let (importing, reader) = Importing::open(path, options)?;
    let parsed = parse_regions(reader).map_err(|source| CommandError::Import {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.display().to_string();
    importing.storing(parsed.rows.len());
    app.store.upsert_regions(&parsed.rows).await?;
    drop(importing);
    Ok(ImportSummary {
        imported: vec![(name.clone(), parsed.rows.len())],
        errors: parsed
            .errors
            .into_iter()
            .map(|e| (name.clone(), e))
            .collect(),
        notes: Vec::new(),
    })
}

/// One bad line found by `yujing validate`.
#[derive(Debug, Clone, Serialize)]
pub struct BadLine {
    /// File.
    pub path: String,
    /// Line number.
    pub line: u64,
    /// Stage.
    pub stage: String,
    /// Rule.
    pub rule: String,
    /// Field.
    pub field: Option<String>,
    /// Reason (resident IDs masked).
    pub reason: String,
}

/// What `yujing validate` found.
#[derive(Debug, Default, Serialize)]
pub struct ValidateReport {
    /// Lines read.
    pub lines: u64,
    /// Valid lines.
    pub valid: u64,
    /// Bad lines.
    pub bad: Vec<BadLine>,
}

/// `yujing validate`: checks every line of the files without storing anything.
pub fn validate(settings: &Settings, paths: &[PathBuf]) -> Result<ValidateReport, CommandError> {
    let decoder = Decoder::new(&settings.validation);
    let limits = ReadLimits {
        batch_size: settings.input.batch_size,
        max_line_bytes: settings.input.max_line_bytes,
        max_dead_letter_bytes: settings.input.max_line_bytes.min(4096),
    };
    let mut report = ValidateReport::default();
    for path in paths {
        let name = path.display().to_string();
        let reader = std::io::BufReader::new(open(path)?);
        let shared: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
        let origin = |line, byte_offset| Origin::File {
            path: shared.clone(),
            line,
            byte_offset,
        };
        let now = Utc::now();
        let mut check = |batch: crate::pipeline::sources::RawBatch| {
            for record in batch.records {
                report.lines += 1;
                let rejection: Option<Rejection> = match record.original_len {
                    Some(full) => Some(Rejection::new(
                        crate::domain::dead_letter::Stage::Read,
                        "line.too_long",
                        format!("record is {full} bytes, longer than input.max_line_bytes"),
                    )),
                    None => decoder
                        .decode(&record.bytes, now)
                        .err()
                        .map(|refusal| refusal.rejection),
                };
                match rejection {
                    None => report.valid += 1,
                    Some(rejection) => {
                        // Through DeadLetter so the reason is masked exactly as stored.
                        let letter = DeadLetter::new(&record, rejection, Default::default(), now);
                        let line = match record.origin {
                            Origin::File { line, .. } => line,
                            _ => 0,
                        };
                        report.bad.push(BadLine {
                            path: name.clone(),
                            line,
                            stage: letter.rejection.stage.as_str().to_string(),
                            rule: letter.rejection.rule,
                            field: letter.rejection.field,
                            reason: letter.rejection.reason,
                        });
                    }
                }
            }
            true
        };
        let start = SourcePosition {
            source_key: name.clone(),
            ..SourcePosition::default()
        };
        let ending = Ending {
            complete: true,
            lane: None,
            head: None,
        };
        read_input(reader, &origin, start, limits, ending, &mut check, &|_| {}).map_err(
            |source| CommandError::Read {
                path: name.clone(),
                source,
            },
        )?;
    }
    Ok(report)
}

/// `yujing report`.
pub async fn report(app: &App) -> Result<Report, CommandError> {
    Ok(app.store.report().await?)
}

/// What `yujing export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// Household alerts.
    Alerts,
    /// Screening tasks.
    Tasks,
    /// Dead letters.
    DeadLetters,
    /// Regional signals.
    Signals,
}

/// `yujing export`: one JSON document per line on `out`.
pub async fn export(
    app: &App,
    kind: ExportKind,
    out: &mut (dyn Write + Send),
) -> Result<u64, CommandError> {
    let mut count = 0u64;
    match kind {
        ExportKind::Alerts => {
            app.store
                .export_alerts(&mut |alert| {
                    count += 1;
                    write_line(out, &alert)
                })
                .await?
        }
        ExportKind::Tasks => {
            app.store
                .export_tasks(&mut |task| {
                    count += 1;
                    write_line(out, &task)
                })
                .await?
        }
        ExportKind::Signals => {
            app.store
                .export_signals(&mut |signal| {
                    count += 1;
                    write_line(out, &signal)
                })
                .await?
        }
        ExportKind::DeadLetters => {
            app.store
                .export_dead_letters(&mut |letter| {
                    count += 1;
                    write_line(out, &letter.to_document())
                })
                .await?
        }
    }
    out.flush().map_err(|source| CommandError::Write {
        path: "stdout".into(),
        source,
    })?;
    Ok(count)
}

fn write_line(out: &mut (dyn Write + Send), value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}
