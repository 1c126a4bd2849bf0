//! What a source hands to the pipeline: the bytes of one record (an NDJSON line, a
//! Kafka message) and where it came from. The origin travels with the record to the
//! store (accepted events) or to the dead letters, so every result can be traced
//! back to a file and line or a topic, partition and offset.

use serde::{Deserialize, Serialize};

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A line of an NDJSON file.
    File {
        /// The path as given (canonicalised); shared by every record of the file.
        path: std::sync::Arc<str>,
        /// 1-based line number.
        line: u64,
        /// Byte offset of the line's first byte.
        byte_offset: u64,
    },
    /// A line of standard input.
    Stdin {
        /// 1-based line number.
        line: u64,
        /// Byte offset of the line's first byte.
        byte_offset: u64,
    },
    /// A Kafka message.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Message key, base64, when present.
        key_base64: Option<String>,
    },
}

impl Origin {
    /// A compact, stable text form (`file:PATH:LINE`, `stdin:LINE`,
    /// `kafka:TOPIC/PARTITION@OFFSET`), used in logs and as an id part.
    pub fn locator(&self) -> String {
        match self {
            Origin::File { path, line, .. } => format!("file:{path}:{line}"),
            Origin::Stdin { line, .. } => format!("stdin:{line}"),
            Origin::Kafka {
                topic,
                partition,
                offset,
                ..
            } => format!("kafka:{topic}/{partition}@{offset}"),
        }
    }
}

impl Origin {
    /// The key of the input the record came from, as its position is stored under:
    /// `file:PATH`, `stdin`, `kafka:TOPIC:PARTITION`.
    pub fn input_key(&self) -> String {
        match self {
            Origin::File { path, .. } => format!("file:{path}"),
            Origin::Stdin { .. } => "stdin".to_string(),
            Origin::Kafka {
                topic, partition, ..
            } => format!("kafka:{topic}:{partition}"),
        }
    }

    /// Whether two records came from the same input.
    pub fn same_input(&self, other: &Origin) -> bool {
        match (self, other) {
            (Origin::File { path: a, .. }, Origin::File { path: b, .. }) => {
                std::sync::Arc::ptr_eq(a, b) || a == b
            }
            (Origin::Stdin { .. }, Origin::Stdin { .. }) => true,
            (
                Origin::Kafka {
                    topic: a,
                    partition: p,
                    ..
                },
                Origin::Kafka {
                    topic: b,
                    partition: q,
                    ..
                },
            ) => p == q && a == b,
            _ => false,
        }
    }
}

/// One record's bytes and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The bytes, without the line terminator. At most the configured cap: a
    /// longer record keeps its first bytes and sets `original_len`.
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub origin: Origin,
    /// The full length, when the record was longer than the line limit and was
    /// cut; such a record is always a dead letter.
    pub original_len: Option<u64>,
}
