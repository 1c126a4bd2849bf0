//! The PostgreSQL store (sqlx): production. The same contract and the same SQL as
//! SQLite (`store::sql`); migrations in `migrations/postgres`. A batch and its
//! source offsets commit in one transaction; connection losses surface as
//! transient errors, which the sink retries.

use std::io::Write;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use sqlx::{ConnectOptions, Connection};

use super::StoreError;
use crate::config::StoreSettings;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url`, applies migrations. The first connection is tried once,
    /// within `store.connect_timeout_seconds`, so that a server that is down or
    /// mistyped is named at once ([`StoreError::Unreachable`]) instead of after the
    /// pool's retries.
    pub async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
        // Loading a registry or a year of state takes seconds by design.
        let options = options
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(60))
            .application_name("yujing");
        let unreachable = |cause: String| StoreError::Unreachable {
            host: options.get_host().to_string(),
            port: options.get_port(),
            database: options.get_database().unwrap_or("(default)").to_string(),
            cause,
        };
        let timeout = Duration::from_secs(settings.connect_timeout_seconds.max(1));
        match tokio::time::timeout(timeout, options.connect()).await {
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
            Ok(Err(error)) => return Err(unreachable(error.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A connection killed under us is noticed before it is handed out.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(|error| unreachable(error.to_string()))?;
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

    /// Begins a batch's transaction and inserts its events: the first part of
    /// `commit_batch`, for a batch begun while the one before it still commits.
    pub(super) async fn begin_batch(
        &self,
        batch: &crate::batch::BatchOutput,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, &batch.events, now.timestamp_millis()).await?;
        Ok(tx)
    }

    /// Before a batch's transaction: nothing to wait for (the server checkpoints).
    pub(super) async fn before_batch(&self) {}

    /// After a batch's commit: nothing to do.
    pub(super) fn after_commit(&self) {}
}

super::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
super::api::api_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);

/// The advisory lock every writer of the registry change log holds until its commit.
const CHANGE_LOG_LOCK: i64 = 0x79_6a_63_68_61_6e_67_65; // "yjchange"

impl PgStore {
    /// Serialises writers of the change log: ids are drawn and committed one writer
    /// at a time, so they commit in id order and a reader's cursor never passes a
    /// change still to commit.
    pub(super) async fn lock_change_log(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHANGE_LOG_LOCK)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Events after the cursor ($1 txid, $2 id), at most $3, in commit order; only those
/// written by transactions older than the oldest one still running, which have all
/// finished: a row that commits later always lies after the cursor.
const FEED_EVENTS: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE (txid > $1 OR (txid = $1 AND id > $2)) \
     AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
     ORDER BY txid, id LIMIT $3";

/// A batch's progress of one input ($1 lane, $2 holding, $3 latest event time, $4 now):
/// the latest event time never moves back; `txid` is the writing transaction's.
const UPSERT_LANE: &str = "INSERT INTO source_lanes (lane, holding, max_event_time, txid, updated_at) \
     VALUES ($1, $2, $3, pg_current_xact_id()::text::bigint, $4) ON CONFLICT (lane) DO UPDATE SET \
     holding = excluded.holding, max_event_time = CASE \
     WHEN source_lanes.max_event_time IS NULL THEN excluded.max_event_time \
     WHEN excluded.max_event_time IS NULL THEN source_lanes.max_event_time \
     WHEN excluded.max_event_time > source_lanes.max_event_time THEN excluded.max_event_time \
     ELSE source_lanes.max_event_time END, \
     txid = excluded.txid, updated_at = excluded.updated_at";

/// A claimed input's lane ($1 lane, $2 holding, $3 now): it holds the watermark until
/// its new owner's first batch; its latest event time stays.
const CLAIM_LANE: &str = "INSERT INTO source_lanes (lane, holding, max_event_time, txid, updated_at) \
     VALUES ($1, $2, NULL, pg_current_xact_id()::text::bigint, $3) ON CONFLICT (lane) DO UPDATE SET \
     holding = excluded.holding, txid = excluded.txid, updated_at = excluded.updated_at";

/// Lanes under a key prefix ($1) last written by transactions older than the oldest
/// one still running: in the same snapshot as a drained [`FEED_EVENTS`], every event
/// of those transactions is read, so their lanes agree with what was read.
const VISIBLE_LANES: &str = "SELECT lane, holding, max_event_time FROM source_lanes \
     WHERE substr(lane, 1, length($1)) = $1 \
     AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// Makes a read transaction's statements share one snapshot.
async fn snapshot_reads(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Household events and industry-project failures at or before the cursor ($1, $2)
/// that occurred at or after $3 (Unix ms).
const FEED_HISTORY: &str = "SELECT txid, id, event_id, source, kind, occurred_at, reported_at, household_id, region_code, match, payload FROM events \
     WHERE (txid < $1 OR (txid = $1 AND id <= $2)) AND (occurred_at >= $3 OR reported_at > $4) \
     AND (household_id IS NOT NULL OR kind IN ('industry_project_failure', 'disaster_declared')) ORDER BY txid, id";

/// Inserts a batch's accepted events (duplicates ignored) through a binary `COPY`,
/// several times faster than multi-row `INSERT`s with binds (and the binary format
/// spares both sides the text escaping and parsing). COPY cannot skip duplicates, so
/// it goes straight into `events` under a savepoint; when an id is already there
/// (re-sent by a department, or committed meanwhile by another instance) the
/// savepoint is rolled back and the batch goes through a per-session staging table
/// and one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.
pub(super) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[crate::batch::StoredEvent],
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
         ON CONFLICT (source, event_id) DO NOTHING",
    )
    .execute(&mut **tx)
    .await?;
    // Emptied at commit (ON COMMIT DELETE ROWS), and by a rollback.
    Ok(())
}

/// COPYs `data` (rows in COPY's binary format) into `table`'s event columns.
async fn copy_into(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    let mut copy = (**tx)
        .copy_in_raw(&format!(
            "COPY {table} (event_id, source, kind, occurred_at, reported_at, person_key, \
             person_masked, household_id, region_code, match, payload, origin, processed_at) \
             FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// The columns of an event row in [`copy_into`]'s list.
const EVENT_COLUMNS: i16 = 13;

/// The events as COPY's binary format: a signature, flags and header extension
/// length; per row the field count, then each field as its length (-1 for NULL) and
/// its bytes (text as UTF-8, BIGINT as 8 big-endian bytes, BYTEA as is); -1 as the
/// trailer.
fn copy_rows(events: &[crate::batch::StoredEvent], processed_at: i64) -> Vec<u8> {
    let mut data = Vec::with_capacity(19 + events.len() * 400);
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    for event in events {
        data.extend_from_slice(&EVENT_COLUMNS.to_be_bytes());
        copy_bytes(&mut data, Some(event.event_id.as_str().as_bytes()));
        copy_bytes(&mut data, Some(event.source.as_str().as_bytes()));
        copy_bytes(&mut data, Some(event.kind.as_str().as_bytes()));
        copy_bigint(&mut data, event.occurred_at.timestamp_millis());
        copy_bigint(&mut data, event.reported_at.timestamp_millis());
        copy_bytes(&mut data, event.person_key.as_ref().map(|key| &key.0[..]));
        copy_bytes(
            &mut data,
            event.person_masked.as_ref().map(|m| m.as_str().as_bytes()),
        );
        copy_bytes(
            &mut data,
            event.household_id.as_ref().map(|h| h.as_str().as_bytes()),
        );
        match event.region_code {
            Some(code) => {
                // Twelve digits, written in place (writing to a Vec cannot fail).
                data.extend_from_slice(&0i32.to_be_bytes());
                let at = data.len();
                let _ = write!(data, "{code}");
                let written = (data.len() - at) as i32;
                data[at - 4..at].copy_from_slice(&written.to_be_bytes());
            }
            None => data.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        copy_bytes(&mut data, Some(event.matched.as_str().as_bytes()));
        copy_bytes(&mut data, Some(event.payload_json.as_bytes()));
        copy_bytes(&mut data, Some(event.origin.locator().as_bytes()));
        copy_bigint(&mut data, processed_at);
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    data
}

/// A field of COPY's binary format: its length and bytes, or -1 for NULL.
fn copy_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        // A field longer than 2 GiB cannot reach here: a record is at most
        // `input.max_line_bytes`.
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// A BIGINT field of COPY's binary format.
fn copy_bigint(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_fields_carry_their_length_or_minus_one_for_null() {
        let mut out = Vec::new();
        super::copy_bytes(&mut out, Some(b"a\tb\\c\n"));
        assert_eq!(out, [&6i32.to_be_bytes()[..], b"a\tb\\c\n"].concat());
        out.clear();
        super::copy_bytes(&mut out, None);
        assert_eq!(out, (-1i32).to_be_bytes());
        out.clear();
        super::copy_bigint(&mut out, -2);
        assert_eq!(
            out,
            [&8i32.to_be_bytes()[..], &(-2i64).to_be_bytes()].concat()
        );
    }
}
