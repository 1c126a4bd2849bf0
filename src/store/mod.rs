//! The store: registry, accepted events, alerts, tasks, dead letters, counters and
//! source positions, behind one contract with a SQLite implementation (the embedded
//! default) and a PostgreSQL one (production). A batch's results and the source
//! positions that produced them commit in one transaction. Errors say whether a
//! retry can help ([`StoreError::is_transient`]).

pub mod api;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::batch::{BatchOutput, SourcePosition, StoredRegional, StoredState};
use crate::config::StoreSettings;
use crate::domain::alert::HouseholdAlert;
use crate::domain::dead_letter::DeadLetter;
use crate::domain::ids::{HouseholdId, PersonKey};
use crate::domain::registry::{Household, Member, Region};
use crate::domain::task::ScreeningTask;

/// A store failure, with whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error("unsupported store URL (use sqlite://PATH or postgres://...): {0}")]
    UnsupportedUrl(String),
    /// Could not reach or open the database.
    #[error("cannot open the store")]
    Connect(#[source] sqlx::Error),
    /// The PostgreSQL server did not answer or refused the connection (the password
    /// is never part of this).
    #[error(
        "cannot connect to PostgreSQL at {host}:{port} (database {database}): {cause}; is the server running?"
    )]
    Unreachable {
        /// Host (or socket folder).
        host: String,
        /// Port.
        port: u16,
        /// Database name.
        database: String,
        /// What the attempt ended with.
        cause: String,
    },
    /// Migrations failed.
    #[error("cannot migrate the store")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query failed")]
    Query(#[from] sqlx::Error),
    /// Stored data does not parse (a bug or a hand-edited database).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another instance took the regional lead over: this one's results are refused.
    #[error("the regional lead passed to another instance")]
    LeadershipLost,
    /// Another instance has claimed an input this batch was read from (the group gave
    /// it the partition): the batch is refused, and the partition's new owner reads it.
    #[error(
        "input {source_key} is now claimed by another instance; the batch read from it is refused"
    )]
    Fenced {
        /// The input.
        source_key: String,
    },
    /// The write conflicts with what is stored (a name taken).
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether retrying the same operation can succeed: lost connections, pool
    /// timeouts, a busy or locked database. Constraint violations and corrupt data
    /// are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) | StoreError::Unreachable { .. } => true,
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
            StoreError::UnsupportedUrl(_)
            | StoreError::Migrate(_)
            | StoreError::Corrupt(_)
            | StoreError::LeadershipLost
            | StoreError::Fenced { .. }
            | StoreError::Conflict(_) => false,
        }
    }
}

/// A position in the events every instance committed, in commit order: the writing
/// transaction's id (PostgreSQL; 0 in SQLite, whose row ids follow commit order) and
/// the row id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    /// Writing transaction.
    pub txid: i64,
    /// Row.
    pub id: i64,
}

/// The regional lead as held by one instance: a commit under it succeeds only while no
/// other instance has taken the lead over (a higher epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's name (unique per process).
    pub holder: String,
    /// Raised on every acquisition.
    pub epoch: i64,
}

/// What a regional commit under a lease also writes: the cursor of the events counted
/// and the lease's new expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease.
    pub lease: Lease,
    /// Every event up to here is counted by the results.
    pub cursor: FeedCursor,
    /// The lease runs until then (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// A committed event, as regional detection reads it back.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Where it is in commit order.
    pub cursor: FeedCursor,
    /// Id.
    pub event_id: crate::domain::ids::EventId,
    /// Department.
    pub source: crate::domain::event::Source,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// Report time.
    pub reported_at: DateTime<Utc>,
    /// The household it resolved to (person and household events).
    pub household_id: Option<crate::domain::ids::HouseholdId>,
    /// Its region (the household's village, or a region event's region).
    pub region_code: Option<crate::domain::ids::RegionCode>,
    /// How it attached to the registry.
    pub matched: crate::batch::Match,
    /// Typed payload (`None` if the stored JSON no longer parses).
    pub payload: Option<crate::domain::event::Payload>,
    /// The payload as stored.
    pub payload_json: String,
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
    /// Alerts by status (open, closed, expired).
    pub alerts_by_status: BTreeMap<String, u64>,
    /// What each rule's alerts came to: tasks and outcomes.
    pub rule_yield: crate::domain::rule_yield::RuleYieldReport,
    /// Tasks by procedure stage.
    pub tasks_by_stage: BTreeMap<String, u64>,
    /// Active (not cleared) regional signals by severity.
    pub signals_by_severity: BTreeMap<String, u64>,
    /// Regional signals (every episode) by risk kind.
    pub signals_by_kind: BTreeMap<String, u64>,
    /// Events for days the regional stage had already judged.
    pub late_events: u64,
    /// Of them, those that changed a count and re-judged its days.
    pub late_corrections: u64,
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

/// An input claimed by this instance ([`Store::claim_inputs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The input.
    pub source_key: String,
    /// The claim's epoch: positions commit under it.
    pub epoch: i64,
    /// Its stored position (with the claim), if it has one.
    pub position: Option<SourcePosition>,
}

/// One step of the regional leader's reading ([`Store::feed_step`]).
#[derive(Debug, Default)]
pub struct FeedStep {
    /// Committed events after the cursor, in commit order.
    pub events: Vec<FeedEvent>,
    /// When `events` reached the end of what has committed: every input's progress as
    /// of the same transactions. `None` when more events are waiting.
    pub lanes: Option<Vec<crate::batch::LaneProgress>>,
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

/// Kafka topics the outbox writes to (none: no outbox rows are written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTopics {
    /// Alert snapshots, keyed by household id.
    pub household_alerts: String,
    /// Task snapshots, keyed by village code.
    pub screening_tasks: String,
    /// Regional signals, keyed by region code.
    pub regional_signals: String,
    /// Dead letters, keyed by dead-letter id.
    pub dead_letters: String,
    /// The most of a record's bytes a published dead letter carries.
    pub dead_letter_raw_bytes: usize,
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id (publication order).
    pub id: i64,
    /// Topic.
    pub topic: String,
    /// Message key.
    pub key: String,
    /// JSON document.
    pub payload: String,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever backend.
macro_rules! dispatch {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

/// A batch's transaction begun ahead of its turn ([`Store::begin_ahead`]): its events
/// are inserted, nothing is committed, and dropping it rolls it back.
#[derive(Debug)]
pub struct BegunBatch {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    store: postgres::PgStore,
}

/// The store, whichever backend.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    outbox: Option<std::sync::Arc<OutboxTopics>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`:
    /// `sqlite://PATH` or `postgres://...`.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteStore::connect(url, settings).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres(postgres::PgStore::connect(url, settings).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store {
            backend,
            outbox: None,
        })
    }

    /// The same store, writing outbox rows for `topics` with every batch.
    pub fn with_outbox(mut self, topics: OutboxTopics) -> Store {
        self.outbox = Some(std::sync::Arc::new(topics));
        self
    }

    /// Whether batches write outbox rows.
    pub fn outbox_topics(&self) -> Option<&OutboxTopics> {
        self.outbox.as_deref()
    }

    /// The backend's name, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Commits a batch's results, its outbox rows and the positions that produced
    /// them, atomically.
    pub async fn commit_batch(
        &self,
        batch: &BatchOutput,
        positions: &[SourcePosition],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outbox = self.outbox.as_deref();
        dispatch!(self, store => store.commit_batch(batch, positions, outbox, None, now).await)
    }

    /// Whether [`Store::begin_ahead`] begins anything (PostgreSQL).
    pub fn begins_ahead(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Begins `batch`'s transaction and inserts its events while the batch before it is
    /// still being committed, so the database loads two batches at once: PostgreSQL
    /// only (`None` for SQLite, whose one writer takes the batches in turn). Nothing
    /// is visible until [`Store::commit_begun`]; dropping the result rolls it back.
    pub async fn begin_ahead(
        &self,
        batch: &BatchOutput,
        now: DateTime<Utc>,
    ) -> Result<Option<BegunBatch>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(store) => Ok(Some(BegunBatch {
                tx: store.begin_batch(batch, now).await?,
                store: store.clone(),
            })),
        }
    }

    /// Finishes and commits a batch begun ahead with the positions that produced it,
    /// as [`Store::commit_batch`] would have; called only once every batch before it
    /// is committed.
    pub async fn commit_begun(
        &self,
        begun: BegunBatch,
        batch: &BatchOutput,
        positions: &[SourcePosition],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outbox = self.outbox.as_deref();
        begun
            .store
            .finish_batch(begun.tx, batch, positions, outbox, now)
            .await
    }

    /// Commits the regional stage's results under the regional lead, with the cursor of
    /// the events they count, in one transaction; [`StoreError::LeadershipLost`] (and
    /// nothing written) when another instance has taken the lead over.
    pub async fn commit_regional(
        &self,
        batch: &BatchOutput,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outbox = self.outbox.as_deref();
        dispatch!(self, store => store.commit_batch(batch, &[], outbox, Some(fence), now).await)
    }

    /// Takes the regional lead for `holder` until `expires_at_ms` if it is free (never
    /// taken, expired, or already `holder`'s): the lease, with a new epoch, and the
    /// cursor of the events counted so far. `None` while another instance holds it.
    pub async fn acquire_regional_lead(
        &self,
        holder: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<Option<(Lease, FeedCursor)>, StoreError> {
        dispatch!(self, store => store.acquire_regional_lead(holder, expires_at_ms, now_ms).await)
    }

    /// Gives the regional lead up (another instance may take it at once).
    pub async fn release_regional_lead(&self, lease: &Lease) -> Result<(), StoreError> {
        dispatch!(self, store => store.release_regional_lead(lease).await)
    }

    /// Claims `keys` (Kafka partitions just assigned) for `holder`, raising each one's
    /// epoch, and returns each with its stored position: from now on only positions
    /// under the new epochs commit ([`StoreError::Fenced`] otherwise). Each lane holds
    /// the regional watermark until the new owner's first batch says otherwise.
    pub async fn claim_inputs(
        &self,
        keys: &[String],
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        dispatch!(self, store => store.claim_inputs(keys, holder, now).await)
    }

    /// Up to `limit` committed events after `after`, as [`Store::feed_events`] gives
    /// them, and — when they reach the end of what has committed — the progress of
    /// every input whose key starts with `lane_prefix`, read in the same snapshot.
    pub async fn feed_step(
        &self,
        after: FeedCursor,
        limit: i64,
        lane_prefix: &str,
    ) -> Result<FeedStep, StoreError> {
        dispatch!(self, store => store.feed_step(after, limit, lane_prefix).await)
    }

    /// Up to `limit` committed events after `after`, in commit order; in PostgreSQL
    /// only those whose writing transaction and every earlier one have finished, so a
    /// cursor over them never passes an event that commits later.
    pub async fn feed_events(
        &self,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        dispatch!(self, store => store.feed_events(after, limit).await)
    }

    /// The household events (and industry-project failures) at or before `upto` that
    /// occurred at or after `since` or were reported after `held_after`: what the
    /// regional stage's windows rebuild from, and the events it still holds.
    pub async fn feed_history(
        &self,
        since: Option<DateTime<Utc>>,
        held_after: Option<DateTime<Utc>>,
        upto: FeedCursor,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        dispatch!(self, store => store.feed_history(since, held_after, upto).await)
    }

    /// The stored position of an input.
    pub async fn position(&self, source_key: &str) -> Result<Option<SourcePosition>, StoreError> {
        dispatch!(self, store => store.position(source_key).await)
    }

    /// Every stored position whose key starts with `prefix`.
    pub async fn positions_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<SourcePosition>, StoreError> {
        dispatch!(self, store => store.positions_with_prefix(prefix).await)
    }

    /// The stored value of setting `name`, storing `value` first when there is none
    /// (the first writer wins, also between processes).
    pub async fn claim_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        dispatch!(self, store => store.claim_setting(name, value).await)
    }

    /// The codes of the villages in the regions table.
    pub async fn village_codes(&self) -> Result<Vec<crate::domain::ids::RegionCode>, StoreError> {
        dispatch!(self, store => store.village_codes().await)
    }

    /// Inserts or updates regions.
    pub async fn upsert_regions(&self, regions: &[Region]) -> Result<(), StoreError> {
        dispatch!(self, store => store.upsert_regions(regions).await)
    }

    /// Inserts or updates households.
    pub async fn upsert_households(
        &self,
        households: &[Household],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.upsert_households(households, now).await)
    }

    /// Inserts or updates members.
    pub async fn upsert_members(
        &self,
        members: &[Member],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.upsert_members(members, now).await)
    }

    /// Reads the registry.
    pub async fn load_registry(&self) -> Result<StoredRegistry, StoreError> {
        dispatch!(self, store => store.load_registry().await)
    }

    /// Reads households and regions (no members).
    pub async fn load_households_and_regions(&self) -> Result<StoredRegistry, StoreError> {
        dispatch!(self, store => store.load_households_and_regions().await)
    }

    /// Streams members (pseudonym, household id, labour capacity), so a province's
    /// roster is never held twice in memory.
    pub async fn for_each_member(
        &self,
        each: &mut (dyn FnMut(PersonKey, &str, bool) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.for_each_member(each).await)
    }

    /// Reads the pipeline state: the dedupe digests of events since `seen_since`,
    /// household events since `events_since` (and, apart, the earlier ones reported
    /// after `held_after`), open alerts, and alerts closed since `closed_since`.
    pub async fn load_state(
        &self,
        events_since: Option<DateTime<Utc>>,
        held_after: Option<DateTime<Utc>>,
        closed_since: DateTime<Utc>,
        seen_since: Option<DateTime<Utc>>,
    ) -> Result<StoredState, StoreError> {
        dispatch!(self, store => store.load_state(events_since, held_after, closed_since, seen_since).await)
    }

    /// The latest event time stored, if any.
    pub async fn latest_event_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        dispatch!(self, store => store.latest_event_time().await)
    }

    /// The report figures.
    pub async fn report(&self) -> Result<Report, StoreError> {
        dispatch!(self, store => store.report().await)
    }

    /// For display: each event's kind and masked person (if a person event).
    pub async fn evidence(&self, event_ids: &[String]) -> Result<Vec<EvidenceItem>, StoreError> {
        dispatch!(self, store => store.evidence(event_ids).await)
    }

    /// Every alert, in household order.
    pub async fn export_alerts(
        &self,
        each: &mut (dyn FnMut(HouseholdAlert) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.export_alerts(each).await)
    }

    /// Every task.
    pub async fn export_tasks(
        &self,
        each: &mut (dyn FnMut(ScreeningTask) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.export_tasks(each).await)
    }

    /// Every dead letter.
    pub async fn export_dead_letters(
        &self,
        each: &mut (dyn FnMut(DeadLetter) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.export_dead_letters(each).await)
    }

    /// The regional stage's clock, if it has run.
    pub async fn regional_clock(&self) -> Result<Option<crate::batch::WatermarkState>, StoreError> {
        dispatch!(self, store => store.regional_clock().await)
    }

    /// The regional stage's counts (from `counts_from`), series states and latest
    /// signals.
    pub async fn load_regional(
        &self,
        counts_from: Option<chrono::NaiveDate>,
    ) -> Result<StoredRegional, StoreError> {
        dispatch!(self, store => store.load_regional(counts_from).await)
    }

    /// Upserts daily count rows (history from before the stream) into the regional
    /// stage's counts, in one transaction: a row replaces the count of its (region, kind,
    /// day). The stage reads them at its next start.
    pub async fn import_counts(&self, counts: &[crate::batch::CountRow]) -> Result<(), StoreError> {
        dispatch!(self, store => store.import_counts(counts).await)
    }

    /// Every regional signal episode.
    pub async fn export_signals(
        &self,
        each: &mut (dyn FnMut(crate::domain::signal::RegionalSignal) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.export_signals(each).await)
    }

    /// Up to `limit` unsent outbox rows, oldest first.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        dispatch!(self, store => store.outbox_pending(limit).await)
    }

    /// Marks outbox rows as published.
    pub async fn outbox_mark_sent(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.outbox_mark_sent(ids, now).await)
    }

    /// Records that the broker can never take outbox row `id` (`failure` says why):
    /// it counts as handled, so the rows behind it go out, and it is kept when
    /// published rows are purged.
    pub async fn outbox_mark_undeliverable(
        &self,
        id: i64,
        failure: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, store => store.outbox_mark_undeliverable(id, failure, now).await)
    }

    /// The outbox rows recorded as undeliverable, with the reason, oldest first.
    pub async fn outbox_undeliverable(&self) -> Result<Vec<(OutboxRow, String)>, StoreError> {
        dispatch!(self, store => store.outbox_undeliverable().await)
    }

    /// Unsent outbox rows.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        dispatch!(self, store => store.outbox_backlog().await)
    }

    /// Deletes the events that occurred before `before`; returns how many.
    pub async fn events_purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, store => store.events_purge(before).await)
    }

    /// Deletes rows published before `sent_before` (not the undeliverable ones);
    /// returns how many.
    pub async fn outbox_purge(&self, sent_before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, store => store.outbox_purge(sent_before).await)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self, store => store.close().await)
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
