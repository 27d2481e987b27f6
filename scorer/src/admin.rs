//! Admin HTTP: `/healthz` (the process runs), `/readyz` (serving gRPC, not shutting down),
//! `/metrics` (Prometheus text), `POST /admin/reload` (re-read the policies; 422 naming every
//! problem when the file is bad, 404 when the scorer has no reloader).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};

use crate::{metrics::Metrics, reload::Reloader};

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// True while the gRPC server accepts calls.
    pub ready: Arc<AtomicBool>,
    /// Re-reads the policies for `POST /admin/reload`; `None`: not offered.
    pub reloader: Option<Arc<Reloader>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn reload(State(s): State<AdminState>) -> impl IntoResponse {
    let Some(reloader) = s.reloader else {
        return (
            StatusCode::NOT_FOUND,
            "no configuration to reload\n".to_owned(),
        );
    };
    match reloader.reload() {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(e) => {
            tracing::error!("configuration not reloaded: {e}");
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"))
        }
    }
}
