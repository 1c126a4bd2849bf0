//! Integration tests: one binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod detect_reference;
mod embedded;
mod kafka;
mod regional;
mod schemas;
mod support;
