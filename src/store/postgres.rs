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
}

super::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
