//! HTTP: `/metrics` (Prometheus text) and `/healthz` for now; the alerts, tasks,
//! signals and dashboard API grows here. Serves until the shutdown token fires.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    /// The address.
    pub address: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// The router.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

/// Binds `address` and serves in the background; returns the bound address (port
/// 0 picks a free one) and the server task.
pub async fn serve(
    address: &str,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError {
            address: address.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ListenError {
        address: address.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router(metrics))
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(error = %error, "HTTP server failed");
        }
    });
    tracing::info!(address = %bound, "HTTP listening (/metrics, /healthz)");
    Ok((bound, task))
}
