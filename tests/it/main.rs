//! Integration tests: one binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod cli;
mod dashboard;
mod data_quality;
mod detect_reference;
mod embedded;
mod history;
mod kafka;
mod mock_kafka;
mod privacy;
mod regional;
mod schemas;
mod store_contract;
mod support;
