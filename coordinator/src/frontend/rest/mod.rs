//! The REST API (`/api/v1/...`), the console and health checks, on the HTTP port.
//!
//! Errors are JSON `{code, message}` with the HTTP status of their code. Requests carry
//! `Authorization: Bearer <token>` when authentication is on (tokens from
//! `POST /api/v1/login`); with a token, `SET` settings persist across requests.
//!
//! Every route is a handler annotated with `#[utoipa::path]` and registered through
//! `routes!`, so the OpenAPI document (`doc.rs`) is generated from the same list the router
//! serves, and its bodies from the same types the handlers send.

mod catalog;
mod console;
mod doc;
mod encode;
mod jobs;
mod login;
mod reflections;
mod security;
mod sql;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quarry_common::QuarryError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::{Credentials, Frontend, QueryService, SessionHandle};

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

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`,
    /// `UNAUTHENTICATED`, `ABORTED` (a stale `version`), `RESOURCE_EXHAUSTED`, ...
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = self.0.for_client();
        let body = ErrorBody {
            code: error.code.as_str(),
            message: error.message,
        };
        (status, axum::Json(body)).into_response()
    }
}

/// An object named in an answer (a schema, user or role created or changed).
#[derive(Serialize, ToSchema)]
pub(crate) struct Named {
    pub(crate) name: String,
}

/// A JSON answer with a status other than 200.
pub(crate) fn with_status<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, axum::Json(body)).into_response()
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
        Ok(self.service.session(&principal, !fresh, Frontend::Rest))
    }
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
    let body = ErrorBody {
        code: "RESOURCE_EXHAUSTED",
        message,
    };
    with_status(StatusCode::PAYLOAD_TOO_LARGE, body)
}

/// Every documented route; the router and the OpenAPI document are both made from it.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(doc::base())
        .routes(routes!(login::healthz))
        .routes(routes!(login::readyz))
        .routes(routes!(login::metrics))
        .routes(routes!(login::backup))
        .routes(routes!(doc::openapi))
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
        .routes(routes!(sql::submit))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::results))
        .routes(routes!(reflections::list, reflections::create))
        .routes(routes!(
            reflections::get,
            reflections::update,
            reflections::delete
        ))
        .routes(routes!(reflections::refresh))
        .routes(routes!(security::list_users, security::create_user))
        .routes(routes!(security::update_user, security::delete_user))
        .routes(routes!(security::list_roles, security::create_role))
        .routes(routes!(security::delete_role))
        .routes(routes!(security::add_member))
        .routes(routes!(security::remove_member))
        .routes(routes!(security::list_grants, security::grant))
        .routes(routes!(security::revoke))
        .routes(routes!(security::list_tokens, security::create_token))
        .routes(routes!(security::delete_token))
        .routes(routes!(catalog::overview))
        .routes(routes!(catalog::list_sources, catalog::create_source))
        .routes(routes!(
            catalog::get_source,
            catalog::update_source,
            catalog::delete_source
        ))
        .routes(routes!(catalog::list_schemas, catalog::create_schema))
        .routes(routes!(catalog::get_schema, catalog::delete_schema))
        .routes(routes!(catalog::list_datasets, catalog::create_dataset))
        .routes(routes!(
            catalog::get_dataset,
            catalog::update_dataset,
            catalog::delete_dataset
        ))
}

pub(crate) fn router(state: AppState, limits: &crate::limits::Limits) -> Router {
    let body_limit = limits.request_body;
    let (api, document) = api().split_for_parts();
    // The console's page and assets are the routes outside the API (and its document).
    api.route("/", axum::routing::get(console::page))
        .route("/assets/{name}", axum::routing::get(console::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(axum::Extension(doc::Document::new(&document)))
        .layer(axum::middleware::map_response(move |response: Response| {
            too_large(body_limit, response)
        }))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
