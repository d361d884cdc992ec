//! Health, logging in and logging out.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, AppState, Caller, ErrorBody, parse_body};

#[derive(Deserialize, ToSchema)]
pub(super) struct Login {
    #[serde(alias = "userName", alias = "username")]
    user: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct LoggedIn {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    user: String,
}

/// Log in; returns a bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "server",
    request_body = Login,
    responses(
        (status = 200, body = LoggedIn),
        (status = 401, description = "Wrong user or password", body = ErrorBody),
    )
)]
pub(super) async fn login(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let login: Login = parse_body(&body)?;
    let token = state.service.login(&login.user, &login.password).await?;
    let body = LoggedIn {
        token,
        user: login.user,
    };
    Ok(axum::Json(body).into_response())
}

/// Log out: the bearer token of the request stops working and its session (settings,
/// prepared statements) is forgotten.
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "server",
    responses((status = 204, description = "Logged out"))
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    state.service.logout(&session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok` whenever the coordinator answers.
    status: &'static str,
    /// Executors heard from recently.
    executors: usize,
    queries: QueryCounts,
}

#[derive(Serialize, ToSchema)]
pub(super) struct QueryCounts {
    running: usize,
    queued: usize,
}

/// Liveness: status, number of active executors, and queries running and queued.
#[utoipa::path(get, path = "/healthz", tag = "server", responses((status = 200, body = Health)))]
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.service.health();
    axum::Json(Health {
        status: "ok",
        executors: health.executors,
        queries: QueryCounts {
            running: health.running,
            queued: health.queued,
        },
    })
    .into_response()
}

/// Whether the coordinator can run queries now.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    ready: bool,
    /// Executors heard from recently.
    executors: usize,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// Readiness, for load balancers and orchestrators: 200 once an executor is registered
/// (queries can run), else 503. `/healthz` stays liveness.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: no executor is registered", body = Readiness),
    )
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let executors = state.service.health().executors;
    let ready = executors > 0;
    let body = Readiness {
        ready,
        executors,
        reason: (!ready).then_some("no executor is registered yet: queries would wait for one"),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    super::with_status(status, body)
}

/// Prometheus metrics of this coordinator (OpenMetrics text; `docs/metrics.md` lists
/// them). With authentication on, the scrape needs credentials like any call.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        (status = 401, body = super::ErrorBody),
    )
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    super::Caller(_session): super::Caller,
) -> super::ApiResult<Response> {
    let text = state.service.metrics().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BackupQuery {
    /// Include the job history (`true`); left out by default.
    #[serde(default)]
    jobs: bool,
}

/// A backup of the catalog as of one moment, taken without stopping the coordinator
/// (admins only): sources, schemas, tables, views, reflections' definitions, users, roles,
/// grants and token hashes; the job history with `jobs=true`. Restore it with `quarry
/// restore`. Managed tables' data stays in the warehouse.
#[utoipa::path(
    get,
    path = "/api/v1/admin/backup",
    tag = "server",
    params(BackupQuery),
    responses(
        (status = 200, description = "The backup file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody),
    )
)]
pub(super) async fn backup(
    State(state): State<AppState>,
    super::Caller(session): super::Caller,
    axum::extract::Query(query): axum::extract::Query<BackupQuery>,
) -> super::ApiResult<Response> {
    let bytes = state.service.backup(&session, query.jobs).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"quarry-catalog.backup\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
