//! The store: registry, accepted events, alerts, tasks, dead letters, counters and
//! source positions, behind one contract with a SQLite implementation (the embedded
//! default) and a PostgreSQL one (production). A batch's results and the source
//! positions that produced them commit in one transaction. Errors say whether a
//! retry can help ([`StoreError::is_transient`]).

pub mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::StoreSettings;
use crate::domain::alert::HouseholdAlert;
use crate::domain::ids::{HouseholdId, PersonKey};
use crate::domain::registry::{Household, Member, Region};
use crate::domain::task::ScreeningTask;
use crate::pipeline::core::{BatchOutput, RestoredEvent};
use crate::pipeline::rules::ClosedAlert;

/// A store failure, with whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error("unsupported store URL (use sqlite://PATH or postgres://...): {0}")]
    UnsupportedUrl(String),
    /// Could not reach or open the database.
    #[error("cannot open the store: {0}")]
    Connect(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// Stored data does not parse (a bug or a hand-edited database).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same operation can succeed: lost connections, pool
    /// timeouts, a busy or locked database. Constraint violations and corrupt data
    /// are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Query(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                    // SQLite BUSY/LOCKED; PostgreSQL connection, shutdown and
                    // serialization classes.
                    matches!(code.as_str(), "5" | "6" | "261" | "517")
                        || code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                }
                _ => false,
            },
            StoreError::UnsupportedUrl(_) | StoreError::Migrate(_) | StoreError::Corrupt(_) => {
                false
            }
        }
    }
}

/// Where one input stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// `file:/abs/path`, `stdin`, or `kafka:topic:partition`.
    pub source_key: String,
    /// Byte offset (files) or next offset (Kafka).
    pub position: u64,
    /// Lines read (files).
    pub line: u64,
    /// Digest of the file's first bytes, to notice a replaced file.
    pub fingerprint: Option<String>,
}

/// The state the pipeline rebuilds at start-up.
#[derive(Debug, Default)]
pub struct StoredState {
    /// Digests of every accepted event id.
    pub seen: Vec<u128>,
    /// Household events within reach of the rules' windows.
    pub events: Vec<RestoredEvent>,
    /// Open alerts with their tasks and episode numbers.
    pub open_alerts: Vec<(HouseholdAlert, Option<ScreeningTask>, u32)>,
    /// Closed alerts still relevant to cool-downs.
    pub closed_alerts: Vec<(HouseholdId, ClosedAlert, u32)>,
}

/// The figures `yujing report` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Records handled (accepted + duplicates + dead letters).
    pub events_processed: u64,
    /// Valid new events.
    pub events_accepted: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Accepted events the registry could not place.
    pub unmatched: u64,
    /// Valid events whose id was seen before.
    pub duplicates: u64,
    /// Findings held back by cool-downs.
    pub suppressed: u64,
    /// Alerts by level.
    pub alerts_by_level: BTreeMap<String, u64>,
    /// Alerts by action.
    pub alerts_by_action: BTreeMap<String, u64>,
    /// Tasks by status.
    pub tasks_by_status: BTreeMap<String, u64>,
    /// Dead letters by rule.
    pub dead_letters_by_rule: BTreeMap<String, u64>,
    /// Registry households.
    pub households: u64,
    /// Registry members.
    pub members: u64,
}

/// The registry as stored.
#[derive(Debug, Default)]
pub struct StoredRegistry {
    /// Households.
    pub households: Vec<Household>,
    /// Members: pseudonym, household, labour capacity.
    pub members: Vec<(PersonKey, HouseholdId, bool)>,
    /// Regions.
    pub regions: Vec<Region>,
}

/// One event behind an alert, as displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceItem {
    /// Event id.
    pub event_id: String,
    /// Feed kind.
    pub kind: String,
    /// Masked resident ID, for person events.
    pub person_masked: Option<String>,
}

/// A dead letter as exported (`schemas/outputs/dead_letter.json`).
pub type DeadLetterDoc = serde_json::Value;

/// The store, whichever backend.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded default.
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(url, settings).await?,
            ))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Commits a batch's results and the positions that produced them, atomically.
    pub async fn commit_batch(
        &self,
        batch: &BatchOutput,
        positions: &[SourcePosition],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.commit_batch(batch, positions, now).await,
        }
    }

    /// The stored position of an input.
    pub async fn position(&self, source_key: &str) -> Result<Option<SourcePosition>, StoreError> {
        match self {
            Store::Sqlite(store) => store.position(source_key).await,
        }
    }

    /// Inserts or updates regions.
    pub async fn upsert_regions(&self, regions: &[Region]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.upsert_regions(regions).await,
        }
    }

    /// Inserts or updates households.
    pub async fn upsert_households(
        &self,
        households: &[Household],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.upsert_households(households, now).await,
        }
    }

    /// Inserts or updates members.
    pub async fn upsert_members(
        &self,
        members: &[Member],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.upsert_members(members, now).await,
        }
    }

    /// Reads the registry.
    pub async fn load_registry(&self) -> Result<StoredRegistry, StoreError> {
        match self {
            Store::Sqlite(store) => store.load_registry().await,
        }
    }

    /// Reads the pipeline state: seen ids, household events since `events_since`,
    /// open alerts, and alerts closed since `closed_since`.
    pub async fn load_state(
        &self,
        events_since: Option<DateTime<Utc>>,
        closed_since: DateTime<Utc>,
    ) -> Result<StoredState, StoreError> {
        match self {
            Store::Sqlite(store) => store.load_state(events_since, closed_since).await,
        }
    }

    /// The latest event time stored, if any.
    pub async fn latest_event_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self {
            Store::Sqlite(store) => store.latest_event_time().await,
        }
    }

    /// The report figures.
    pub async fn report(&self) -> Result<Report, StoreError> {
        match self {
            Store::Sqlite(store) => store.report().await,
        }
    }

    /// Every alert, as exported.
    pub async fn export_alerts(
        &self,
        each: &mut (dyn FnMut(HouseholdAlert) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.export_alerts(each).await,
        }
    }

    /// Every task, as exported.
    pub async fn export_tasks(
        &self,
        each: &mut (dyn FnMut(ScreeningTask) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.export_tasks(each).await,
        }
    }

    /// Every dead letter, as exported.
    pub async fn export_dead_letters(
        &self,
        each: &mut (dyn FnMut(DeadLetterDoc) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.export_dead_letters(each).await,
        }
    }

    /// For display: each event's kind and masked person (if a person event).
    pub async fn evidence(&self, event_ids: &[String]) -> Result<Vec<EvidenceItem>, StoreError> {
        match self {
            Store::Sqlite(store) => store.evidence(event_ids).await,
        }
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(store) => store.close().await,
        }
    }
}

/// A URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://yj:secret@db:5432/yujing"),
            "postgres://yj:***@db:5432/yujing"
        );
        assert_eq!(redact_url("sqlite://yujing.db"), "sqlite://yujing.db");
    }
}
