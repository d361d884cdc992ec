//! The REST API (`/api/v1/...`), the console and health checks, on the HTTP port.
//!
//! Errors are JSON `{code, message}` with the HTTP status of their code. Requests carry
//! `Authorization: Bearer <token>` when authentication is on (tokens from
//! `POST /api/v1/login`); with a token, `SET` settings persist across requests.

mod catalog;
mod encode;
mod jobs;
mod reflections;
mod security;
mod sql;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use quarry_common::QuarryError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::service::{Credentials, QueryService, SessionHandle};

/// The OpenAPI description of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");
const CONSOLE: &str = include_str!("../../../../web/index.html");

#[derive(Clone)]
pub(crate) struct AppState {
    pub service: Arc<dyn QueryService>,
}

/// An error as the API reports it.
#[derive(Debug)]
pub(crate) struct ApiError(pub QuarryError);

impl From<QuarryError> for ApiError {
    fn from(e: QuarryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = self.0.for_client();
        (
            status,
            axum::Json(json!({"code": error.code.as_str(), "message": error.message})),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Parse a JSON body, reporting where it is malformed.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(QuarryError::invalid("the request needs a JSON body").into());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError(QuarryError::invalid(format!("malformed JSON body: {e}"))))
}

/// Who a request is from: its session, keyed by its token; without credentials (and with
/// authentication off) a fresh one that is never stored. Every handler that acts for
/// someone takes one, so none can forget to authenticate.
pub(crate) struct Caller(pub SessionHandle);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        state.session(&parts.headers).await.map(Caller)
    }
}

impl AppState {
    /// The session of a request (see [`Caller`]).
    async fn session(&self, headers: &HeaderMap) -> ApiResult<SessionHandle> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let credentials = Credentials::parse(header)?;
        let fresh = credentials == Credentials::None;
        let principal = self.service.authenticate(credentials).await?;
        Ok(self.service.session(&principal, !fresh))
    }
}

#[derive(Deserialize)]
struct Login {
    #[serde(alias = "userName", alias = "username")]
    user: String,
    password: String,
}

async fn login(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let login: Login = parse_body(&body)?;
    let token = state.service.login(&login.user, &login.password).await?;
    Ok(axum::Json(json!({"token": token, "user": login.user})).into_response())
}

/// Revoke the request's token and forget its session.
async fn logout(State(state): State<AppState>, Caller(session): Caller) -> ApiResult<Response> {
    state.service.logout(&session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.service.health();
    axum::Json(json!({
        "status": "ok",
        "executors": health.executors,
        "queries": {"running": health.running, "queued": health.queued},
    }))
    .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn console() -> Html<&'static str> {
    Html(CONSOLE)
}

async fn not_found(request: Request) -> ApiError {
    ApiError(QuarryError::not_found(format!(
        "no route {} {}",
        request.method(),
        request.uri().path()
    )))
}

/// The JSON error for a body past `--max-request-body`, in place of axum's plain text.
async fn too_large(limit: usize, response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return response;
    }
    let body = crate::limits::REQUEST_BODY;
    let message = format!(
        "{} is larger than the server accepts ({} bytes); {}",
        body.what,
        crate::limits::group_digits(limit),
        body.how_to_raise()
    );
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(json!({"code": "RESOURCE_EXHAUSTED", "message": message})),
    )
        .into_response()
}

pub(crate) fn router(state: AppState, limits: &crate::limits::Limits) -> Router {
    let body_limit = limits.request_body;
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/sql", post(sql::submit))
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/results", get(jobs::results))
        .route(
            "/api/v1/reflections",
            get(reflections::list).post(reflections::create),
        )
        .route(
            "/api/v1/reflections/{name}",
            get(reflections::get)
                .put(reflections::update)
                .delete(reflections::delete),
        )
        .route(
            "/api/v1/reflections/{name}/refresh",
            post(reflections::refresh),
        )
        .route(
            "/api/v1/users",
            get(security::list_users).post(security::create_user),
        )
        .route(
            "/api/v1/users/{name}",
            axum::routing::put(security::update_user).delete(security::delete_user),
        )
        .route(
            "/api/v1/roles",
            get(security::list_roles).post(security::create_role),
        )
        .route(
            "/api/v1/roles/{name}",
            axum::routing::delete(security::delete_role),
        )
        .route("/api/v1/roles/{name}/members", post(security::add_member))
        .route(
            "/api/v1/roles/{name}/members/{user}",
            axum::routing::delete(security::remove_member),
        )
        .route(
            "/api/v1/grants",
            get(security::list_grants).post(security::grant),
        )
        .route("/api/v1/grants/revoke", post(security::revoke))
        .route(
            "/api/v1/tokens",
            get(security::list_tokens).post(security::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(security::delete_token),
        )
        .route("/api/v1/catalog", get(catalog::overview))
        .route(
            "/api/v1/catalog/sources",
            get(catalog::list_sources).post(catalog::create_source),
        )
        .route(
            "/api/v1/catalog/sources/{name}",
            get(catalog::get_source)
                .put(catalog::update_source)
                .delete(catalog::delete_source),
        )
        .route(
            "/api/v1/catalog/schemas",
            get(catalog::list_schemas).post(catalog::create_schema),
        )
        .route(
            "/api/v1/catalog/schemas/{schema}",
            get(catalog::get_schema).delete(catalog::delete_schema),
        )
        .route(
            "/api/v1/catalog/schemas/{schema}/datasets",
            get(catalog::list_datasets).post(catalog::create_dataset),
        )
        .route(
            "/api/v1/catalog/schemas/{schema}/datasets/{name}",
            get(catalog::get_dataset)
                .put(catalog::update_dataset)
                .delete(catalog::delete_dataset),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(axum::middleware::map_response(move |response: Response| {
            too_large(body_limit, response)
        }))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The paths the router serves, for checking the OpenAPI document.
#[cfg(test)]
const ROUTES: [&str; 28] = [
    "/healthz",
    "/api/v1/openapi.json",
    "/api/v1/login",
    "/api/v1/logout",
    "/api/v1/sql",
    "/api/v1/jobs",
    "/api/v1/jobs/{id}",
    "/api/v1/jobs/{id}/cancel",
    "/api/v1/jobs/{id}/results",
    "/api/v1/reflections",
    "/api/v1/reflections/{name}",
    "/api/v1/reflections/{name}/refresh",
    "/api/v1/catalog",
    "/api/v1/catalog/sources",
    "/api/v1/catalog/sources/{name}",
    "/api/v1/catalog/schemas",
    "/api/v1/catalog/schemas/{schema}",
    "/api/v1/catalog/schemas/{schema}/datasets",
    "/api/v1/users",
    "/api/v1/users/{name}",
    "/api/v1/roles",
    "/api/v1/roles/{name}",
    "/api/v1/roles/{name}/members",
    "/api/v1/roles/{name}/members/{user}",
    "/api/v1/grants",
    "/api/v1/grants/revoke",
    "/api/v1/tokens",
    "/api/v1/tokens/{id}",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let paths = doc["paths"].as_object().expect("paths");
        for route in ROUTES
            .iter()
            .chain(["/api/v1/catalog/schemas/{schema}/datasets/{name}"].iter())
        {
            assert!(paths.contains_key(*route), "openapi.json lacks {route}");
        }
    }
}
