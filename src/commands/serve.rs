//! `yujing serve` (the API over an existing store) and the API that `yujing run`
//! starts beside its pipeline: the HTTP listener and the overdue timer, stopped by
//! one cancellation token.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CommandError;
use crate::api::{AppState, Readiness};
use crate::app::App;
use crate::overdue::OverdueTimer;

/// The running API: its address and its tasks.
#[derive(Debug)]
pub struct RunningApi {
    /// The bound address.
    pub address: SocketAddr,
    /// What `/readyz` reports of the pipeline.
    pub readiness: Readiness,
    server: tokio::task::JoinHandle<()>,
    timer: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

impl RunningApi {
    /// Stops the server (gracefully) and the timer.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        let _ = self.timer.await;
    }

    /// Waits until `shutdown` fires, then stops.
    pub async fn until(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.stop().await;
    }
}

/// Starts the API on `listen` over `app`'s store, with the overdue timer.
pub async fn start(app: &App, listen: &str) -> Result<RunningApi, CommandError> {
    let readiness = Readiness::default();
    let state = AppState::new(
        app.store.clone(),
        app.metrics.clone(),
        &app.settings,
        readiness.clone(),
    );
    let cancel = CancellationToken::new();
    let (address, server) = crate::api::serve(listen, state, cancel.clone()).await?;
    let timer = OverdueTimer::new(
        app.store.clone(),
        app.metrics.clone(),
        Duration::from_secs(app.settings.procedure.overdue_rescan_seconds),
    );
    let timer = tokio::spawn(timer.run(cancel.clone()));
    Ok(RunningApi {
        address,
        readiness,
        server,
        timer,
        cancel,
    })
}

/// Refuses a SQLite path that does not exist (a mistyped path would otherwise serve
/// an empty store).
pub fn require_existing_store(url: &str) -> Result<(), CommandError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).exists() {
            return Err(CommandError::NoStore {
                path: path.to_string(),
            });
        }
    }
    Ok(())
}
