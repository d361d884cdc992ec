//! The executor's HTTP listener (`quarry executor --http ADDR`): `/healthz` (alive),
//! `/readyz` (registered with its coordinator, so tasks can come) and `/metrics`
//! (Prometheus, OpenMetrics text; the names are listed in `docs/metrics.md`), and `POST
//! /drain` (leave the cluster, return once running tasks have finished; with a cluster
//! secret, only for a caller that shows it as a bearer token) for a Kubernetes preStop hook.
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

use quarry_common::cluster_secret::{ClusterSecret, same_secret};

use crate::metrics::ExecutorMetrics;
use crate::service::ExecutorService;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) service: Arc<ExecutorService>,
    pub(crate) metrics: Arc<ExecutorMetrics>,
    pub(crate) registered: Arc<AtomicBool>,
    /// Fired to leave the cluster (the membership loop deregisters).
    pub(crate) drain: CancellationToken,
    pub(crate) secret: Option<ClusterSecret>,
    /// Required of scrapers when set (`--metrics-token`).
    pub(crate) metrics_token: Option<String>,
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A 401 with `message` unless the request's bearer token is `expected` (compared in
/// constant time); None when it is, or when nothing is expected.
fn refuse_unless(
    headers: &axum::http::HeaderMap,
    expected: Option<&str>,
    message: &str,
) -> Option<Response> {
    let expected = expected?;
    if bearer(headers).is_some_and(|given| same_secret(given.as_bytes(), expected.as_bytes())) {
        return None;
    }
    let body = serde_json::json!({ "error": message });
    Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response())
}

/// Leave the cluster and wait (bounded) until no task runs; the process keeps serving its
/// outputs until it is stopped.
async fn drain(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(refused) = refuse_unless(
        &headers,
        state.secret.as_ref().map(ClusterSecret::as_str),
        "draining needs the cluster secret as a bearer token",
    ) {
        return refused;
    }
    tracing::info!("draining: leaving the cluster, letting running tasks finish");
    state.drain.cancel();
    let running = crate::wait_until_idle(&state.service).await;
    let body = serde_json::json!({"drained": running == 0, "running_tasks": running});
    (StatusCode::OK, axum::Json(body)).into_response()
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

async fn metrics_text(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(refused) = refuse_unless(
        &headers,
        state.metrics_token.as_deref(),
        "this executor's /metrics needs its --metrics-token as a bearer token",
    ) {
        return refused;
    }
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
    state: HttpState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/drain", axum::routing::post(drain))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_text))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
