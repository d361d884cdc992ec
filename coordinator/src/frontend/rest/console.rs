//! The browser console: the bundle `web/build.mjs` writes to `web/dist` (committed),
//! compiled into the binary so a server needs no Node, no network and no files beside it.
//! `/` is the page; `/assets/<file>` its script, styles and fonts.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static BUNDLE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../web/dist");

/// What a file of the bundle is, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The page may load and connect to nothing but this server; inline scripts never run.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn file(name: &str) -> Response {
    let Some(found) = BUNDLE.get_file(name) else {
        return super::ApiError(quarry_common::QuarryError::not_found(format!(
            "the console has no file {name}"
        )))
        .into_response();
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(name))],
        found.contents(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page names its assets by content hash, so they may be kept; the page may not.
    let cache = if name == "index.html" {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

pub(super) async fn page() -> Response {
    file("index.html")
}

pub(super) async fn asset(Path(name): Path<String>) -> Response {
    if name == "index.html" || name.contains('/') {
        return file("");
    }
    file(&name)
}
