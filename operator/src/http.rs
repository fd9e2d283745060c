//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process serves)
//! and `/readyz` (ready once its Kubernetes client works; standby replicas are ready too, and the
//! body says whether this one leads).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    /// The metrics registry.
    pub metrics: Metrics,
    /// Set once the client reached the apiserver.
    pub ready: Arc<AtomicBool>,
    /// Set while this replica holds the leader Lease.
    pub leading: Arc<AtomicBool>,
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.metrics.render(),
    )
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let role = if h.leading.load(Ordering::SeqCst) {
        "leader"
    } else {
        "standby"
    };
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, format!("ok ({role})\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "apiserver not reached yet\n".to_string(),
        )
    }
}

/// Serves the endpoints on `addr` until the future is dropped.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}
