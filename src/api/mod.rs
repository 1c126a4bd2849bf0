//! HTTP: the API (`/api/...`, documented by the OpenAPI 3.1 document generated from
//! these handlers and served at `/api/openapi.json`), `/healthz`, `/readyz`,
//! `/metrics`, and the dashboard page at `/` with its embedded assets under `/web/`. Every `/api` route needs a bearer token and is scoped to the account's
//! region; errors are RFC 9457 problem details. Serves until the shutdown token fires.
//!
//! ```text
//! request ─▶ body limit ─▶ route ─▶ metrics (route, status, latency) ─▶ handler
//!                                   Caller (token → account) ─▶ right (403) ─▶ scope (404) ─▶ store
//! ```

pub mod auth;
pub mod handlers;
pub mod problem;
pub mod summary;
pub mod views;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Settings;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}")]
pub struct ListenError {
    /// The address.
    pub address: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Whether this process runs a pipeline, and whether it still does (`/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    /// The pipeline started.
    pub fn pipeline_started(&self) {
        self.0.store(1, Ordering::Relaxed);
    }

    /// The pipeline stopped (the process is about to end, or failed).
    pub fn pipeline_stopped(&self) {
        self.0.store(2, Ordering::Relaxed);
    }

    /// `none`, `running` or `stopped`.
    pub fn pipeline(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            0 => "none",
            1 => "running",
            _ => "stopped",
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Regional figures, cached.
    pub summary: Arc<summary::SummaryCache>,
    /// Pipeline readiness.
    pub readiness: Readiness,
}

impl AppState {
    /// The state over `store`.
    pub fn new(store: Store, metrics: Metrics, settings: &Settings, readiness: Readiness) -> Self {
        AppState {
            summary: Arc::new(summary::SummaryCache::new(Duration::from_millis(
                settings.api.summary_cache_ms,
            ))),
            store,
            metrics,
            settings: Arc::new(settings.clone()),
            readiness,
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "yujing API",
        description = "Household alerts, screening tasks and the identification procedure (识别程序), regional signals, scoped to the caller's region. Authenticate with `Authorization: Bearer <token>` (tokens from `yujing accounts add`). Errors are RFC 9457 problem details (`application/problem+json`). Lists are newest first with keyset pagination: pass a page's `next` as `cursor`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "accounts", description = "Who is calling; accounts below the caller."),
        (name = "regions", description = "The region tree, its figures and count series."),
        (name = "alerts", description = "Household alerts (预警)."),
        (name = "rules", description = "The household rules' yield (预警成效): alerts, tasks and outcomes by rule."),
        (name = "data-quality", description = "Data quality (三一致) and the standing sweeps: registry consistency, subjects not on the roster, reporting delays."),
        (name = "tasks", description = "Screening tasks and the procedure: village accept / record_visit / propose, township approve / return, county decide."),
        (name = "households", description = "The registry's households, masked."),
        (name = "signals", description = "Regional systemic-risk signals (规模性返贫风险)."),
        (name = "operations", description = "Dead letters, audit, health.")
    )
)]
struct ApiDoc;

/// The documented routes (without state), from which the router and the OpenAPI
/// document are both made.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::me))
        .routes(routes!(handlers::regions))
        .routes(routes!(handlers::summary))
        .routes(routes!(handlers::series))
        .routes(routes!(handlers::alerts))
        .routes(routes!(handlers::alert))
        .routes(routes!(handlers::rule_yield))
        .routes(routes!(handlers::data_quality))
        .routes(routes!(handlers::tasks))
        .routes(routes!(handlers::task))
        .routes(routes!(handlers::transition))
        .routes(routes!(handlers::household))
        .routes(routes!(handlers::signals))
        .routes(routes!(handlers::dead_letters))
        .routes(routes!(handlers::audit))
        .routes(routes!(handlers::accounts, handlers::create_account))
        .routes(routes!(handlers::revoke_account))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
}

/// The OpenAPI document (the one served at `/api/openapi.json` and committed as
/// `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The OpenAPI document as the pretty JSON committed in the repository.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn serve_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

async fn not_found() -> problem::Problem {
    problem::Problem::not_found("such path")
}

/// Counts each request and its latency by route template and status.
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let began = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(&method, &route, response.status().as_u16(), began.elapsed());
    response
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    let (api, _) = documented().split_for_parts();
    let limit = state.settings.api.max_body_bytes;
    let metrics = state.metrics.clone();
    api.route("/metrics", get(render_metrics))
        .route("/api/openapi.json", get(serve_openapi))
        .route("/", get(web::index))
        .route("/web/boundaries.geojson", get(web::boundaries))
        .route("/web/{*path}", get(web::asset))
        .route_layer(axum::middleware::from_fn_with_state(metrics, track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Binds `address` and serves `state`'s router in the background; returns the bound
/// address (port 0 picks a free one) and the server task.
pub async fn serve(
    address: &str,
    state: AppState,
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
    let app = router(state);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(error = %crate::telemetry::Chain(&error), "HTTP server failed");
        }
    });
    tracing::info!(address = %bound, "HTTP listening (dashboard /, /api, /metrics, /healthz, /readyz)");
    Ok((bound, task))
}
