//! Sources: where raw records come from.

pub mod kafka;
pub mod ndjson;
