//! yujing (预警): a risk-alert stream processor for rural China's "prevent return to
//! poverty" monitoring (防止返贫动态监测). Department feeds in; household alerts,
//! screening tasks and regional signals out.
//!
//! ```text
//! sources ──▶ decode+validate ──▶ dedupe ──▶ resolve household ──▶ household rules ──▶ alerts, tasks
//!  NDJSON files    │ (schemas, ID          (registry,              (look-back window,
//!  stdin           │  checksum, clocks)     pseudonyms)             cool-downs)
//!                  ▼
//!             dead letters
//! sinks: store (results + source positions in ONE transaction)
//! api:   HTTP (accounts, scoped reads, the procedure) ─▶ store: task + registry + audit
//!        + registry change log in ONE transaction ─▶ the core applies the log in order
//! ```
//!
//! - [`domain`]: what flows between stages; identifier newtypes; no I/O.
//! - [`pipeline`]: the stages. [`pipeline::core`] is pure (records in, results out);
//!   [`pipeline::sources`] and [`pipeline::sinks`] are the I/O adapters around it.
//! - [`batch`]: the contract between the core and the store: what a batch produces
//!   (with the source positions behind it) and what the store gives back at start-up.
//! - [`store`]: the storage contract, SQLite (embedded) and PostgreSQL (production);
//!   it imports `domain` and `batch`, never a pipeline stage.
//! - [`registry`]: CSV import of the household roster and the regions.
//! - [`sweeps`]: standing sweeps and data-quality (三一致) rules over the registry,
//!   per household and in a full pass (pure); the department rules' figures come from
//!   the store's events, and `yujing data-quality --record` keeps the findings.
//! - [`generate`]: a synthetic county with planted cases and an answer key.
//! - [`config`]: layered, typed settings. [`app`]: builds the application.
//! - [`schemas`]: the published JSON Schemas, compiled. [`telemetry`]: logs, metrics.
//! - [`api`]: the HTTP API, its OpenAPI document, auth and region scopes, and the
//!   dashboard page (`web/`, embedded) served at `/`;
//!   [`accounts`]: creating and revoking accounts; [`overdue`]: the deadline timer.
//! - [`commands`]: what each CLI command does.

pub mod accounts;
pub mod api;
pub mod app;
pub mod batch;
pub mod commands;
pub mod config;
pub mod domain;
pub mod generate;
pub mod overdue;
pub mod pipeline;
pub mod registry;
pub mod schemas;
pub mod store;
pub mod sweeps;
pub mod telemetry;
