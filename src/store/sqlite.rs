//! The SQLite store (sqlx): the embedded default. WAL journal; a batch and its
//! source positions commit in one transaction, so a killed run resumes exactly
//! where its last commit left it. Migrations in `migrations/sqlite`; the SQL itself
//! is shared with PostgreSQL (`store::sql`).
//!
//! Checkpoints run beside the writer: after each batch commit a connection of its
//! own copies the new WAL frames into the database file (and syncs it) while the
//! writer goes on with the next batch. A WAL only starts over when a write begins
//! after a checkpoint has caught up with it, so once the WAL has grown past the
//! configured size the writer waits, before its next batch, for the checkpoint of
//! the last commit to finish; the WAL then restarts from its beginning.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::config::StoreSettings;

/// How long the writer waits for a checkpoint before going on without it (the
/// connections' own automatic checkpoint still bounds the WAL).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(60);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for the batches: SQLite drops a connection's page cache when
    /// another connection has written, so batches that took turns on the pool's
    /// connections would each start from a cold cache.
    writer: SqlitePool,
    checkpointer: Arc<Checkpointer>,
}

impl SqliteStore {
    /// Opens `url` (creating the file), applies migrations.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let synchronous = if settings.sqlite_synchronous == "full" {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
        let wal_pages = i64::from(settings.sqlite_wal_autocheckpoint_pages.max(1));
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(30))
            // Applies to a new file only (set before its first table is created).
            .page_size(settings.sqlite_page_size)
            // 256 MiB of page cache: the event id index and the alerts stay in memory
            // on a county-sized store.
            .pragma("cache_size", "-262144")
            .pragma("temp_store", "memory")
            // A safety net only: the checkpointer keeps the WAL near `wal_pages`.
            // Writers outside the batch path (imports, the API) and a checkpointer
            // that fell behind are caught here, at four times that size.
            .pragma("wal_autocheckpoint", (4 * wal_pages).to_string())
            // Loading a registry or a year of state takes seconds by design.
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(60));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Connect)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A batch waits for the one before it as it would for SQLite's lock.
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Connect)?;
        let connection = options.connect().await.map_err(StoreError::Connect)?;
        let checkpointer = Checkpointer::start(connection, wal_pages);
        Ok(SqliteStore {
            pool,
            writer,
            checkpointer,
        })
    }

    /// Where batches are written.
    pub(super) fn batch_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Stops the checkpointer, then closes the pool (the last connection to close
    /// checkpoints what is left).
    pub async fn close(&self) {
        self.checkpointer.stop().await;
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Before a batch's transaction: when the WAL has grown past its size, waits
    /// for the checkpoint of the last commit, so that this batch starts the WAL
    /// over.
    pub(super) async fn before_batch(&self) {
        self.checkpointer.catch_up().await;
    }

    /// After a batch's commit: starts a checkpoint of what it wrote.
    pub(super) fn after_commit(&self) {
        self.checkpointer.committed.send_modify(|seq| *seq += 1);
    }
}

/// Checkpoints the WAL on its own connection after commits (see the module doc).
#[derive(Debug)]
struct Checkpointer {
    /// The sequence number of the last batch commit.
    committed: watch::Sender<u64>,
    /// The last commit a finished checkpoint covers.
    checkpointed: watch::Receiver<u64>,
    /// Frames in the WAL at the last checkpoint; reset when the writer has waited
    /// for a checkpoint (its next write restarts the WAL).
    wal_frames: Arc<AtomicI64>,
    /// The WAL size (frames) past which the writer waits.
    wal_pages: i64,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpointer {
    fn start(connection: SqliteConnection, wal_pages: i64) -> Arc<Checkpointer> {
        let (committed, commits) = watch::channel(0);
        let (done, checkpointed) = watch::channel(0);
        let wal_frames = Arc::new(AtomicI64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(checkpoint_loop(
            connection,
            commits,
            done,
            wal_frames.clone(),
            stop.clone(),
        ));
        Arc::new(Checkpointer {
            committed,
            checkpointed,
            wal_frames,
            wal_pages,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    async fn catch_up(&self) {
        if self.wal_frames.load(Ordering::Relaxed) < self.wal_pages {
            return;
        }
        let last = *self.committed.borrow();
        let mut checkpointed = self.checkpointed.clone();
        match tokio::time::timeout(
            CHECKPOINT_WAIT,
            checkpointed.wait_for(|&commit| commit >= last),
        )
        .await
        {
            Ok(Ok(_)) => self.wal_frames.store(0, Ordering::Relaxed),
            Ok(Err(_)) => tracing::warn!("the WAL checkpointer has stopped"),
            Err(_) => tracing::warn!(
                waited_s = CHECKPOINT_WAIT.as_secs(),
                "the WAL checkpoint is slow; going on without it"
            ),
        }
    }

    async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn checkpoint_loop(
    mut connection: SqliteConnection,
    mut commits: watch::Receiver<u64>,
    done: watch::Sender<u64>,
    wal_frames: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            changed = commits.changed() => if changed.is_err() { break },
        }
        let commit = *commits.borrow_and_update();
        // PASSIVE: copies what no reader still needs, never blocks the writer.
        let result: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut connection)
                .await;
        match result {
            Ok((_busy, log_frames, _checkpointed)) => {
                wal_frames.store(log_frames, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::Chain(&error), "WAL checkpoint failed")
            }
        }
        done.send_replace(commit);
    }
    let _ = connection.close().await;
}

super::sql::sql_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
super::api::api_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);

impl SqliteStore {
    /// Nothing to lock: SQLite's one writer commits change-log rows in id order.
    pub(super) async fn lock_change_log(
        &self,
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Events after the cursor ($2 id; $1, the txid, is always 0 here: one writer, so row
/// ids follow commit order), at most $3.
const FEED_EVENTS: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE txid = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Household events and industry-project failures at or before the cursor ($1, $2)
/// that occurred at or after $3 (Unix ms).
const FEED_HISTORY: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE txid = $1 AND id <= $2 AND (occurred_at >= $3 OR reported_at > $4) \
     AND (household_id IS NOT NULL OR kind IN ('industry_project_failure', 'disaster_declared')) ORDER BY id";
/// A batch's progress of one input ($1 lane, $2 holding, $3 latest event time, $4 now):
/// the latest event time never moves back; `txid` is the writing transaction's.
const UPSERT_LANE: &str = "INSERT INTO source_lanes (lane, holding, max_event_time, txid, updated_at) \
     VALUES ($1, $2, $3, 0, $4) ON CONFLICT (lane) DO UPDATE SET \
     holding = excluded.holding, max_event_time = CASE \
     WHEN source_lanes.max_event_time IS NULL THEN excluded.max_event_time \
     WHEN excluded.max_event_time IS NULL THEN source_lanes.max_event_time \
     WHEN excluded.max_event_time > source_lanes.max_event_time THEN excluded.max_event_time \
     ELSE source_lanes.max_event_time END, \
     txid = excluded.txid, updated_at = excluded.updated_at";

/// A claimed input's lane ($1 lane, $2 holding, $3 now): it holds the watermark until
/// its new owner's first batch; its latest event time stays.
const CLAIM_LANE: &str = "INSERT INTO source_lanes (lane, holding, max_event_time, txid, updated_at) \
     VALUES ($1, $2, NULL, 0, $3) ON CONFLICT (lane) DO UPDATE SET \
     holding = excluded.holding, txid = excluded.txid, updated_at = excluded.updated_at";

/// Lanes under a key prefix ($1). One writer, and a read transaction sees whole
/// commits: in the same transaction as a drained [`FEED_EVENTS`], they agree with the
/// events read.
const VISIBLE_LANES: &str = "SELECT lane, holding, max_event_time FROM source_lanes \
     WHERE substr(lane, 1, length($1)) = $1";

/// A read transaction in WAL mode already reads one snapshot.
async fn snapshot_reads(_tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<(), StoreError> {
    Ok(())
}

super::sql::insert_events_by_values!(sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use chrono::Utc;

    use super::*;
    use crate::batch::BatchOutput;
    use crate::batch::SourcePosition;
    use crate::config::Settings;

    async fn open(path: &Path, wal_pages: u32) -> SqliteStore {
        let mut settings = Settings::defaults().store;
        settings.sqlite_wal_autocheckpoint_pages = wal_pages;
        let url = format!("sqlite://{}", path.display());
        SqliteStore::connect(&url, &settings).await.unwrap()
    }

    /// Commits a batch that counts one record and moves one file position.
    async fn commit(store: &SqliteStore, line: u64) {
        let mut batch = BatchOutput::default();
        batch.counts.records = 1;
        let position = SourcePosition {
            source_key: "file:/feeds/a.ndjson".into(),
            position: line * 100,
            line,
            fingerprint: None,
            claim: None,
        };
        store
            .commit_batch(&batch, &[position], None, None, Utc::now())
            .await
            .unwrap();
    }

    /// The records counter as the database file alone holds it (a copy opened
    /// without its WAL).
    async fn records_in_file(path: &Path, copy: &Path) -> i64 {
        std::fs::copy(path, copy).unwrap();
        let url = format!("sqlite://{}", copy.display());
        let mut connection = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Before the first checkpoint the file lacks even the tables (the
        // migrations are in the WAL too).
        let value: Option<(i64,)> =
            sqlx::query_as("SELECT value FROM counters WHERE name = 'records'")
                .fetch_optional(&mut connection)
                .await
                .unwrap_or_default();
        connection.close().await.unwrap();
        std::fs::remove_file(copy).unwrap();
        value.map_or(0, |(value,)| value)
    }

    /// The checkpointer's last reported WAL size after it has covered every commit.
    async fn settled_wal_frames(store: &SqliteStore) -> i64 {
        let checkpointer = &store.checkpointer;
        let last = *checkpointer.committed.borrow();
        let mut done = checkpointer.checkpointed.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            done.wait_for(|&commit| commit >= last),
        )
        .await
        .expect("the checkpointer covers the last commit")
        .unwrap();
        checkpointer.wal_frames.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn commits_reach_the_database_file_long_before_the_wal_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // The connections' own checkpoint would wait for 4 × 5000 pages.
        let store = open(&path, 5000).await;
        for line in 1..=3 {
            commit(&store, line).await;
        }
        let began = Instant::now();
        let mut records = 0;
        while records < 3 && began.elapsed() < Duration::from_secs(10) {
            records = records_in_file(&path, &dir.path().join("copy.db")).await;
            if records < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(
            records, 3,
            "the checkpointer copied the commits into the file"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn past_its_size_the_wal_starts_over_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // One page: every batch is past the size.
        let store = open(&path, 1).await;
        commit(&store, 1).await;
        let first = settled_wal_frames(&store).await;
        assert!(first >= 1, "the first batch wrote WAL frames");
        let checkpointer = &store.checkpointer;
        for line in 2..=6 {
            commit(&store, line).await;
            // Right after the commit its checkpoint is still running. As when the
            // last report found the WAL past its size, the next batch waits for it.
            checkpointer.wal_frames.store(1, Ordering::Relaxed);
            store.before_batch().await;
            let last = *checkpointer.committed.borrow();
            assert_eq!(*checkpointer.checkpointed.borrow(), last);
            assert_eq!(checkpointer.wal_frames.load(Ordering::Relaxed), 0);
        }
        // The same pages each time: a WAL that started over holds one batch.
        commit(&store, 7).await;
        let frames = settled_wal_frames(&store).await;
        assert!(
            frames <= first,
            "{frames} WAL frames after seven batches; the first batch alone wrote {first}"
        );
        store.close().await;
    }
}
