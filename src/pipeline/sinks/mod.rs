//! Sinks: where results go.

pub mod outbox;
pub mod store;
