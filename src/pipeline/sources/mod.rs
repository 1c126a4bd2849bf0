//! Sources: where raw records come from, behind one [`Source`] trait that the
//! pipeline's driver runs — NDJSON files and stdin ([`ndjson::NdjsonSource`]) and a
//! Kafka consumer group ([`kafka::KafkaSource`]). A source reads; it never touches the
//! store: the driver looks up (or claims) the stored positions and hands them to
//! [`Source::establish`], and tells the source when batches are durable.

pub mod kafka;
pub mod ndjson;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::batch::{LaneMark, SourcePosition};
use crate::domain::record::RawRecord;

/// Opens `path` for reading; a folder is refused here, with words, rather than at the
/// first read ("Is a directory (os error 21)").
pub fn open_for_reading(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a folder; give a file",
        ));
    }
    Ok(file)
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Could not open or read a file.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Kafka client could not be created, subscribed or positioned.
    #[error("the Kafka consumer failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// No input topics are configured.
    #[error("kafka: no input topics configured (kafka.input_topics)")]
    NoTopics,
    /// The reading thread died (a bug).
    #[error("the reading thread failed: {0}")]
    Thread(String),
}

/// A batch of records and where its inputs stand after it.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Records, in input order.
    pub records: Vec<RawRecord>,
    /// Each input's position after its last record here (stored with the results).
    pub positions: Vec<SourcePosition>,
    /// What the source says of its inputs' event time with this batch.
    pub lanes: Vec<LaneMark>,
}

/// What a source gives the driver next.
#[derive(Debug)]
pub enum Pulled {
    /// Records (possibly none: lanes or positions alone).
    Batch(RawBatch),
    /// The inputs this instance reads changed (a Kafka rebalance): records read before
    /// are void; the driver claims the new inputs, hands their stored positions to
    /// [`Source::establish`] and rebuilds the core's state from the store.
    Reassigned(Vec<String>),
    /// A finite source has ended (or the run was cancelled and the last batch given).
    Ended,
}

/// Where one input starts: its stored position (with the claim it is read under),
/// or its beginning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The input's key.
    pub source_key: String,
    /// Its claim's epoch (Kafka partitions).
    pub claim: Option<i64>,
    /// The stored position, if any.
    pub position: Option<SourcePosition>,
}

/// What the pipeline's store writer tells a source: batches by sequence number
/// (as handed over with [`Source::handed`]) are durable or void.
pub trait Acknowledge: Send + Sync {
    /// Batch `seq` (and every one before it) is committed with `positions`.
    fn committed(&self, seq: u64, positions: &[SourcePosition]);
    /// Batch `seq` (and every one before it) will never commit (refused as read
    /// under a superseded claim).
    fn discarded(&self, seq: u64);
}

/// A source of raw records: NDJSON files, stdin, or Kafka.
pub trait Source: Send {
    /// The inputs known before the first record: the files to read (Kafka's come with
    /// its first [`Pulled::Reassigned`]).
    fn inputs(&self) -> Vec<String>;

    /// Whether [`Pulled::Reassigned`] inputs must be claimed in the store (partitions
    /// another instance may take over) before they are read.
    fn claims_inputs(&self) -> bool;

    /// Starts reading each input from its position.
    fn establish(&mut self, starts: Vec<Start>) -> Result<(), SourceError>;

    /// The next batch, reassignment or end. After `cancel`, the records read so far
    /// come as a last batch, then [`Pulled::Ended`].
    fn next(
        &mut self,
        cancel: &CancellationToken,
    ) -> impl std::future::Future<Output = Result<Pulled, SourceError>> + Send;

    /// The batch with sequence number `seq` went to the core.
    fn handed(&self, seq: u64);

    /// Who hears of durable and void batches.
    fn acknowledger(&self) -> Arc<dyn Acknowledge>;

    /// After a batch was refused as read under a superseded claim: gives every input
    /// up and asks for a fresh assignment (the next [`Pulled::Reassigned`]).
    fn rejoin(&mut self) -> Result<(), SourceError>;

    /// Stops reading (a Kafka consumer leaves its group), waiting at most a bounded time.
    fn close(self);
}
