//! Sources: where raw records come from.

pub mod ndjson;
