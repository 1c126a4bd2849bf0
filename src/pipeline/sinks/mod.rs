//! Sinks: where results go.

pub mod store;
