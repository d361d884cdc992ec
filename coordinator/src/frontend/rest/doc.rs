//! The OpenAPI document of the REST API, generated: `base()` holds what no handler says
//! (title, the bearer scheme, the error body), and `mod.rs` adds every route from its
//! `#[utoipa::path]` annotation and the body types it names.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quarry REST API",
        version = "1",
        description = "Submit SQL, follow jobs, page through results (JSON, NDJSON, Arrow IPC) \
            and manage the catalog, reflections, users, roles, grants and tokens. Errors are \
            JSON {code, message}. With authentication on, send `Authorization: Bearer <token>` \
            with a token from /api/v1/login or a personal access token."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security((), ("bearer" = [])),
    tags(
        (name = "server", description = "Health, this document, logging in and out"),
        (name = "sql", description = "Running SQL and following its jobs"),
        (name = "catalog", description = "Sources, schemas, tables and views"),
        (name = "reflections", description = "Precomputed reflections"),
        (name = "security", description = "Users, roles, grants and personal access tokens"),
    )
)]
struct ApiDoc;

/// Adds the bearer scheme the `security` list names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = Http::new(HttpAuthScheme::Bearer);
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What the routes are added to.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The finished document as served, made once when the router is.
#[derive(Clone)]
pub(super) struct Document(Arc<str>);

impl Document {
    pub(super) fn new(document: &utoipa::openapi::OpenApi) -> Self {
        // Serializing plain data structures cannot fail; an empty object would show it did.
        let json = document.to_json().unwrap_or_else(|_| "{}".to_string());
        Document(json.into())
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json"))
)]
pub(super) async fn openapi(Extension(document): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::api;

    /// Every operation says what it does and answers, and names each `{param}` of its path.
    #[test]
    fn every_operation_is_described() {
        let (_, document) = api().split_for_parts();
        let json = serde_json::to_value(&document).expect("document serializes");
        let paths = json["paths"].as_object().expect("paths");
        assert!(paths.len() >= 28, "only {} paths", paths.len());
        for (path, item) in paths {
            let Some(operations) = item.as_object() else {
                panic!("{path} is not an object");
            };
            for (method, operation) in operations {
                let what = format!("{} {path}", method.to_uppercase());
                assert!(
                    operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{what} has no summary"
                );
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{what} has no responses"
                );
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                for segment in path.split('/') {
                    if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        assert!(declared.contains(&name), "{what} does not declare {name}");
                    }
                }
            }
        }
    }
}
