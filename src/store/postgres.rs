//! The PostgreSQL store (sqlx): production. The same contract and the same SQL as
//! SQLite (`store::sql`); migrations in `migrations/postgres`. A batch and its
//! source offsets commit in one transaction; connection losses surface as
//! transient errors, which the sink retries.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use sqlx::ConnectOptions;

use super::StoreError;
use crate::config::StoreSettings;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url`, applies migrations.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
        // Loading a registry or a year of state takes seconds by design.
        let options = options.log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(60));
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A connection killed under us is noticed before it is handed out.
            .test_before_acquire(true)
            .connect_with(options.application_name("yujing"))
            .await
            .map_err(StoreError::Connect)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Where batches are written: any connection of the pool.
    pub(super) fn batch_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Before a batch's transaction: nothing to wait for (the server checkpoints).
    pub(super) async fn before_batch(&self) {}

    /// After a batch's commit: nothing to do.
    pub(super) fn after_commit(&self) {}
}

super::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);

/// Events after the cursor ($1 txid, $2 id), at most $3, in commit order; only those
/// written by transactions older than the oldest one still running, which have all
/// finished: a row that commits later always lies after the cursor.
const FEED_EVENTS: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE (txid > $1 OR (txid = $1 AND id > $2)) \
     AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
     ORDER BY txid, id LIMIT $3";

/// Household events and industry-project failures at or before the cursor ($1, $2)
/// that occurred at or after $3 (Unix ms).
const FEED_HISTORY: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE (txid < $1 OR (txid = $1 AND id <= $2)) AND occurred_at >= $3 \
     AND (household_id IS NOT NULL OR kind = 'industry_project_failure') ORDER BY txid, id";

/// Inserts a batch's accepted events (duplicates ignored) through `COPY`, several
/// times faster than multi-row `INSERT`s with binds. COPY cannot skip duplicates, so
/// it goes straight into `events` under a savepoint; when an id is already there
/// (re-sent by a department, or committed meanwhile by another instance) the
/// savepoint is rolled back and the batch goes through a per-session staging table
/// and one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.
pub(super) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[crate::pipeline::core::StoredEvent],
    processed_at: i64,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let data = copy_rows(events, processed_at);
    let mut direct = sqlx::Connection::begin(&mut **tx).await?;
    match copy_into(&mut direct, "events", &data).await {
        Ok(()) => {
            direct.commit().await?;
            return Ok(());
        }
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            direct.rollback().await?;
        }
        Err(error) => return Err(error.into()),
    }
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS events_incoming (event_id TEXT, source TEXT, kind TEXT, \
         occurred_at BIGINT, reported_at BIGINT, person_key BYTEA, person_masked TEXT, household_id TEXT, \
         region_code TEXT, match TEXT, payload TEXT, origin TEXT, processed_at BIGINT) ON COMMIT DELETE ROWS",
    )
    .execute(&mut **tx)
    .await?;
    copy_into(tx, "events_incoming", &data).await?;
    sqlx::query(
        "INSERT INTO events (event_id, source, kind, occurred_at, reported_at, person_key, \
         person_masked, household_id, region_code, match, payload, origin, processed_at) \
         SELECT event_id, source, kind, occurred_at, reported_at, person_key, person_masked, \
         household_id, region_code, match, payload, origin, processed_at FROM events_incoming \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .execute(&mut **tx)
    .await?;
    // Emptied at commit (ON COMMIT DELETE ROWS), and by a rollback.
    Ok(())
}

/// COPYs `data` (rows in COPY's text format) into `table`'s event columns.
async fn copy_into(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    let mut copy = (**tx)
        .copy_in_raw(&format!(
            "COPY {table} (event_id, source, kind, occurred_at, reported_at, person_key, \
             person_masked, household_id, region_code, match, payload, origin, processed_at) FROM STDIN"
        ))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// The events as rows of COPY's text format.
fn copy_rows(events: &[crate::pipeline::core::StoredEvent], processed_at: i64) -> Vec<u8> {
    let mut data = Vec::with_capacity(events.len() * 400);
    for event in events {
        copy_text(&mut data, Some(event.event_id.as_str()));
        data.push(b'\t');
        copy_text(&mut data, Some(event.source.as_str()));
        data.push(b'\t');
        copy_text(&mut data, Some(event.kind.as_str()));
        data.push(b'\t');
        data.extend_from_slice(event.occurred_at.timestamp_millis().to_string().as_bytes());
        data.push(b'\t');
        data.extend_from_slice(event.reported_at.timestamp_millis().to_string().as_bytes());
        data.push(b'\t');
        match event.person_key {
            Some(key) => {
                data.extend_from_slice(b"\\\\x");
                let mut digits = [0u8; 64];
                hex::encode_to_slice(key.0, &mut digits).expect("32 bytes are 64 hex digits");
                data.extend_from_slice(&digits);
            }
            None => data.extend_from_slice(b"\\N"),
        }
        data.push(b'\t');
        copy_text(&mut data, event.person_masked.as_ref().map(|m| m.as_str()));
        data.push(b'\t');
        copy_text(&mut data, event.household_id.as_ref().map(|h| h.as_str()));
        data.push(b'\t');
        copy_text(
            &mut data,
            event.region_code.map(|c| c.to_string()).as_deref(),
        );
        data.push(b'\t');
        copy_text(&mut data, Some(event.matched.as_str()));
        data.push(b'\t');
        copy_text(&mut data, Some(&event.payload_json));
        data.push(b'\t');
        copy_text(&mut data, Some(&event.origin.locator()));
        data.push(b'\t');
        data.extend_from_slice(processed_at.to_string().as_bytes());
        data.push(b'\n');
    }
    data
}

/// A text value in COPY's text format: `\N` for NULL, backslash, tab, newline and
/// carriage return escaped.
fn copy_text(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    let bytes = value.as_bytes();
    // Runs without special bytes are copied whole.
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..at]);
        out.extend_from_slice(escaped);
        run = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = Vec::new();
        super::copy_text(&mut out, Some("a\\b\tc\nd\re"));
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re");
        out.clear();
        super::copy_text(&mut out, None);
        assert_eq!(out, b"\\N");
    }
}
