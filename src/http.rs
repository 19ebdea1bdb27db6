//! `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::telemetry::Telemetry;

/// Whether the process is ready to be scraped as complete.
pub trait Ready: Send + Sync {
    fn is_ready(&self) -> bool;
}

impl Ready for crate::source::kube::Readiness {
    fn is_ready(&self) -> bool {
        crate::source::kube::Readiness::is_ready(self)
    }
}

/// Always ready (demo, replay).
pub struct AlwaysReady;

impl Ready for AlwaysReady {
    fn is_ready(&self) -> bool {
        true
    }
}

#[derive(Clone)]
struct AppState {
    registry: prometheus::Registry,
    ready: Arc<dyn Ready>,
}

pub fn router(registry: prometheus::Registry, ready: Arc<dyn Ready>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = Telemetry::render_metrics(&state.registry);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first list of every watch\n")
    }
}

/// Binds the address (so a bad one fails at start) and serves until `shutdown` resolves.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
