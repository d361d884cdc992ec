//! The executor's HTTP listener (`quarry executor --http ADDR`): `/healthz` (alive),
//! `/readyz` (registered with its coordinator, so tasks can come) and `/metrics`
//! (Prometheus, OpenMetrics text; the names are listed in `docs/metrics.md`).
//!
//! Executors started inside `quarry up` have none: the coordinator's `/metrics` reports
//! every executor from its heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::ExecutorMetrics;
use crate::service::ExecutorService;

#[derive(Clone)]
struct HttpState {
    service: Arc<ExecutorService>,
    metrics: Arc<ExecutorMetrics>,
    registered: Arc<AtomicBool>,
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.registered.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"ready": true})),
        )
            .into_response()
    } else {
        let body = serde_json::json!({
            "ready": false,
            "reason": "not registered with the coordinator (starting, draining, or the coordinator is unreachable)",
        });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics_text(State(state): State<HttpState>) -> Response {
    // Reading /proc is file I/O: off the async workers.
    let rendered =
        tokio::task::spawn_blocking(move || state.metrics.render(&state.service.status())).await;
    match rendered {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response(),
    }
}

/// Serve the listener until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<ExecutorService>,
    metrics: Arc<ExecutorMetrics>,
    registered: Arc<AtomicBool>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let state = HttpState {
        service,
        metrics,
        registered,
    };
    let router = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_text))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
