//! The SQLite store (sqlx): the embedded default. WAL journal; a batch and its
//! source positions commit in one transaction, so a killed run resumes exactly
//! where its last commit left it. Migrations in `migrations/sqlite`; the SQL itself
//! is shared with PostgreSQL (`store::sql`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use sqlx::ConnectOptions;

use super::StoreError;
use crate::config::StoreSettings;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `url` (creating the file), applies migrations.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let synchronous = if settings.sqlite_synchronous == "full" {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
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
            // Checkpoint every ~80 MiB of WAL (by default) rather than SQLite's 4 MiB:
            // batches are tens of MiB, and each checkpoint syncs the database file.
            .pragma(
                "wal_autocheckpoint",
                settings.sqlite_wal_autocheckpoint_pages.to_string(),
            )
            // Loading a registry or a year of state takes seconds by design.
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(60));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

super::sql::sql_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);

/// Events after the cursor ($2 id; $1, the txid, is always 0 here: one writer, so row
/// ids follow commit order), at most $3.
const FEED_EVENTS: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE txid = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Household events and industry-project failures at or before the cursor ($1, $2)
/// that occurred at or after $3 (Unix ms).
const FEED_HISTORY: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE txid = $1 AND id <= $2 AND occurred_at >= $3 \
     AND (household_id IS NOT NULL OR kind = 'industry_project_failure') ORDER BY id";
super::sql::insert_events_by_values!(sqlx::Sqlite);
