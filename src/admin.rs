//! The admin HTTP server (`--metrics-addr`): `/metrics` (Prometheus text), `/healthz` (the
//! process serves), `/readyz` (ready after the first watch sync, or while standing by for the
//! lease).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// Set once the operator can serve (watch synced, or standing by).
    pub ready: Arc<AtomicBool>,
    /// Called before each scrape to refresh gauges computed from the cache.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (s.refresh)();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first watch sync",
        )
    }
}

/// The router (also used by tests without a socket).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Binds `addr` and serves until the process ends. Binding errors are returned at once.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening (/metrics /healthz /readyz)");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    }))
}
