//! Catalog CRUD: sources, schemas and datasets (tables and views). Updates and deletes
//! may name the `version` they read; a stale one is refused with 409.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarry_catalog::{DatasetDefinition, DatasetRecord, SourceConfig, SourceRecord, Stored};
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::encode::Column;
use super::{ApiResult, AppState, Caller, ErrorBody, Named, parse_body, with_status};
use crate::service::{CreateMode, DatasetUpdate, TableRequest, decode_schema};

/// A source as the API shows it: secrets are never sent back.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Source {
    name: String,
    /// The settings, with `secret_access_key` shown as `********`.
    #[schema(value_type = SourceConfig)]
    config: serde_json::Value,
    /// Name it in an update or delete to be refused (409) if someone changed it since.
    version: u64,
    created_ms: u64,
    updated_ms: u64,
}

impl Source {
    fn of(stored: &Stored<SourceRecord>) -> Self {
        let mut config = serde_json::to_value(&stored.record.config).unwrap_or_default();
        if let Some(secret) = config.get_mut("secret_access_key")
            && !secret.is_null()
        {
            *secret = serde_json::Value::from("********");
        }
        Source {
            name: stored.record.name.clone(),
            config,
            version: stored.version,
            created_ms: stored.created_ms,
            updated_ms: stored.updated_ms,
        }
    }
}

/// A table or a view.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Dataset {
    schema: String,
    name: String,
    /// `[schema, name]`.
    path: Vec<String>,
    version: u64,
    created_ms: u64,
    updated_ms: u64,
    #[serde(flatten)]
    details: DatasetDetails,
}

#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum DatasetDetails {
    #[serde(rename_all = "camelCase")]
    Table {
        source: Option<String>,
        source_path: Option<String>,
        location: String,
        format: String,
        options: BTreeMap<String, String>,
        partition_columns: Vec<String>,
        columns: Vec<Column>,
    },
    View {
        sql: String,
        /// The schema its unqualified names resolve against.
        context: Option<String>,
    },
}

impl Dataset {
    fn of(stored: &Stored<DatasetRecord>) -> Self {
        let record = &stored.record;
        let details = match &record.definition {
            DatasetDefinition::Table(t) => DatasetDetails::Table {
                source: t.source.clone(),
                source_path: t.path.clone(),
                location: t.location.clone(),
                format: t.format.clone(),
                options: t.options.clone(),
                partition_columns: t.partition_columns.clone(),
                columns: decode_schema(&t.arrow_schema)
                    .map(|s| super::encode::columns(&s))
                    .unwrap_or_default(),
            },
            DatasetDefinition::View(v) => DatasetDetails::View {
                sql: v.sql.clone(),
                context: v.default_schema.clone(),
            },
        };
        Dataset {
            schema: record.schema.clone(),
            name: record.name.clone(),
            path: vec![record.schema.clone(), record.name.clone()],
            version: stored.version,
            created_ms: stored.created_ms,
            updated_ms: stored.updated_ms,
            details,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct Overview {
    /// The catalog's name in SQL (`quarry`).
    catalog: &'static str,
    sources: Vec<Source>,
    /// Schema names.
    schemas: Vec<String>,
}

/// Sources and schemas.
#[utoipa::path(get, path = "/api/v1/catalog", tag = "catalog", responses((status = 200, body = Overview)))]
pub(super) async fn overview(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let sources = sources(&state, &session)?;
    let schemas = state
        .service
        .list_schemas(&session)?
        .into_iter()
        .map(|s| s.record.name)
        .collect();
    let body = Overview {
        catalog: quarry_catalog::CATALOG_NAME,
        sources,
        schemas,
    };
    Ok(axum::Json(body).into_response())
}

// ---- sources ----

fn sources(state: &AppState, session: &crate::service::SessionHandle) -> ApiResult<Vec<Source>> {
    Ok(state
        .service
        .list_sources(session)?
        .iter()
        .map(Source::of)
        .collect())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSource {
    name: String,
    config: SourceConfig,
    #[serde(default, rename = "ifNotExists")]
    if_not_exists: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceUpdate {
    config: SourceConfig,
    version: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct VersionQuery {
    /// The version read: refused with 409 if it changed since.
    version: Option<u64>,
    /// Schemas only: drop their datasets too.
    #[serde(default)]
    cascade: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SourceList {
    sources: Vec<Source>,
}

/// List sources.
#[utoipa::path(get, path = "/api/v1/catalog/sources", tag = "catalog", responses((status = 200, body = SourceList)))]
pub(super) async fn list_sources(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let sources = sources(&state, &session)?;
    Ok(axum::Json(SourceList { sources }).into_response())
}

/// Create a source.
#[utoipa::path(
    post,
    path = "/api/v1/catalog/sources",
    tag = "catalog",
    request_body = NewSource,
    responses((status = 201, body = Source), (status = 409, description = "It exists", body = ErrorBody))
)]
pub(super) async fn create_source(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewSource = parse_body(&body)?;
    let mode = if new.if_not_exists {
        CreateMode::IfNotExists
    } else {
        CreateMode::Create
    };
    let stored = state
        .service
        .create_source(&session, &new.name, new.config, mode)
        .await?;
    Ok(with_status(StatusCode::CREATED, Source::of(&stored)))
}

/// A source (secrets redacted).
#[utoipa::path(
    get,
    path = "/api/v1/catalog/sources/{name}",
    tag = "catalog",
    params(("name" = String, Path, description = "The source's name")),
    responses((status = 200, body = Source), (status = 404, body = ErrorBody))
)]
pub(super) async fn get_source(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let stored = state.service.get_source(&session, &name)?;
    Ok(axum::Json(Source::of(&stored)).into_response())
}

/// Replace a source's settings; `version` must be current (409 otherwise).
#[utoipa::path(
    put,
    path = "/api/v1/catalog/sources/{name}",
    tag = "catalog",
    params(("name" = String, Path, description = "The source's name")),
    request_body = SourceUpdate,
    responses((status = 200, body = Source), (status = 409, description = "Changed since `version`", body = ErrorBody))
)]
pub(super) async fn update_source(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let update: SourceUpdate = parse_body(&body)?;
    let stored = state
        .service
        .update_source(&session, &name, update.config, update.version)
        .await?;
    Ok(axum::Json(Source::of(&stored)).into_response())
}

/// Drop a source (refused while tables use it).
#[utoipa::path(
    delete,
    path = "/api/v1/catalog/sources/{name}",
    tag = "catalog",
    params(("name" = String, Path, description = "The source's name"), VersionQuery),
    responses((status = 204, description = "Dropped"), (status = 409, body = ErrorBody))
)]
pub(super) async fn delete_source(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    state
        .service
        .drop_source(&session, &name, query.version)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- schemas ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSchema {
    name: String,
    #[serde(default, rename = "ifNotExists")]
    if_not_exists: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SchemaEntry {
    name: String,
    version: u64,
    created_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SchemaList {
    schemas: Vec<SchemaEntry>,
}

/// List schemas.
#[utoipa::path(get, path = "/api/v1/catalog/schemas", tag = "catalog", responses((status = 200, body = SchemaList)))]
pub(super) async fn list_schemas(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let schemas = state
        .service
        .list_schemas(&session)?
        .into_iter()
        .map(|s| SchemaEntry {
            name: s.record.name,
            version: s.version,
            created_ms: s.created_ms,
        })
        .collect();
    Ok(axum::Json(SchemaList { schemas }).into_response())
}

/// Create a schema (200 instead of 201 when `ifNotExists` found it).
#[utoipa::path(
    post,
    path = "/api/v1/catalog/schemas",
    tag = "catalog",
    request_body = NewSchema,
    responses((status = 201, body = Named), (status = 200, body = Named), (status = 409, body = ErrorBody))
)]
pub(super) async fn create_schema(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewSchema = parse_body(&body)?;
    let created = state
        .service
        .create_schema(&session, &new.name, new.if_not_exists)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_status(status, Named { name: new.name }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct SchemaDetail {
    name: String,
    version: u64,
    datasets: Vec<Dataset>,
}

/// A schema and its datasets.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/schemas/{schema}",
    tag = "catalog",
    params(("schema" = String, Path, description = "The schema's name")),
    responses((status = 200, body = SchemaDetail), (status = 404, body = ErrorBody))
)]
pub(super) async fn get_schema(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let stored = state.service.get_schema(&session, &schema)?;
    let body = SchemaDetail {
        name: stored.record.name,
        version: stored.version,
        datasets: datasets(&state, &session, &schema)?,
    };
    Ok(axum::Json(body).into_response())
}

/// Drop a schema (`cascade=true` drops its datasets).
#[utoipa::path(
    delete,
    path = "/api/v1/catalog/schemas/{schema}",
    tag = "catalog",
    params(("schema" = String, Path, description = "The schema's name"), VersionQuery),
    responses((status = 204, description = "Dropped"), (status = 409, body = ErrorBody))
)]
pub(super) async fn delete_schema(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    state
        .service
        .drop_schema(&session, &schema, query.cascade, query.version)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- datasets ----

/// A table (from a source path or a location) or a view; `version` in updates.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum DatasetRequest {
    Table {
        name: Option<String>,
        #[serde(flatten)]
        table: TableRequest,
        version: Option<u64>,
        #[serde(default, rename = "ifNotExists")]
        if_not_exists: bool,
        #[serde(default, rename = "orReplace")]
        or_replace: bool,
    },
    View {
        name: Option<String>,
        sql: String,
        version: Option<u64>,
        #[serde(default, rename = "ifNotExists")]
        if_not_exists: bool,
        #[serde(default, rename = "orReplace")]
        or_replace: bool,
    },
}

#[derive(Serialize, ToSchema)]
pub(super) struct DatasetList {
    datasets: Vec<Dataset>,
}

fn datasets(
    state: &AppState,
    session: &crate::service::SessionHandle,
    schema: &str,
) -> ApiResult<Vec<Dataset>> {
    Ok(state
        .service
        .list_datasets(session, Some(schema))?
        .iter()
        .map(Dataset::of)
        .collect())
}

/// Datasets of a schema.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/schemas/{schema}/datasets",
    tag = "catalog",
    params(("schema" = String, Path, description = "The schema's name")),
    responses((status = 200, body = DatasetList), (status = 404, body = ErrorBody))
)]
pub(super) async fn list_datasets(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let datasets = datasets(&state, &session, &schema)?;
    Ok(axum::Json(DatasetList { datasets }).into_response())
}

/// Create a table (from a source path or a location) or a view.
#[utoipa::path(
    post,
    path = "/api/v1/catalog/schemas/{schema}/datasets",
    tag = "catalog",
    params(("schema" = String, Path, description = "The schema's name")),
    request_body = DatasetRequest,
    responses((status = 201, body = Dataset), (status = 409, body = ErrorBody))
)]
pub(super) async fn create_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let stored = match parse_body::<DatasetRequest>(&body)? {
        DatasetRequest::Table {
            name,
            table,
            if_not_exists,
            or_replace,
            ..
        } => {
            let name = name.ok_or_else(|| QuarryError::invalid("a dataset needs a name"))?;
            let mode = CreateMode::from_flags(if_not_exists, or_replace);
            state
                .service
                .create_table(&session, &schema, &name, table, mode)
                .await?
        }
        DatasetRequest::View {
            name,
            sql,
            if_not_exists,
            or_replace,
            ..
        } => {
            let name = name.ok_or_else(|| QuarryError::invalid("a dataset needs a name"))?;
            let mode = CreateMode::from_flags(if_not_exists, or_replace);
            state
                .service
                .create_view(&session, &schema, &name, &sql, mode)
                .await?
        }
    };
    Ok(with_status(StatusCode::CREATED, Dataset::of(&stored)))
}

/// A dataset with its columns.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/schemas/{schema}/datasets/{name}",
    tag = "catalog",
    params(
        ("schema" = String, Path, description = "The schema's name"),
        ("name" = String, Path, description = "The dataset's name"),
    ),
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody))
)]
pub(super) async fn get_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((schema, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let stored = state.service.get_dataset(&session, &schema, &name)?;
    Ok(axum::Json(Dataset::of(&stored)).into_response())
}

/// Replace a dataset's definition; `version` must be current (409 otherwise).
#[utoipa::path(
    put,
    path = "/api/v1/catalog/schemas/{schema}/datasets/{name}",
    tag = "catalog",
    params(
        ("schema" = String, Path, description = "The schema's name"),
        ("name" = String, Path, description = "The dataset's name"),
    ),
    request_body = DatasetRequest,
    responses((status = 200, body = Dataset), (status = 409, description = "Changed since `version`", body = ErrorBody))
)]
pub(super) async fn update_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((schema, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (update, version) = match parse_body::<DatasetRequest>(&body)? {
        DatasetRequest::Table { table, version, .. } => (DatasetUpdate::Table(table), version),
        DatasetRequest::View { sql, version, .. } => (DatasetUpdate::View { sql }, version),
    };
    let version = version.ok_or_else(|| {
        QuarryError::invalid("an update must name the version it replaces (\"version\": N)")
    })?;
    let stored = state
        .service
        .update_dataset(&session, &schema, &name, update, version)
        .await?;
    Ok(axum::Json(Dataset::of(&stored)).into_response())
}

/// Drop a dataset.
#[utoipa::path(
    delete,
    path = "/api/v1/catalog/schemas/{schema}/datasets/{name}",
    tag = "catalog",
    params(
        ("schema" = String, Path, description = "The schema's name"),
        ("name" = String, Path, description = "The dataset's name"),
        VersionQuery,
    ),
    responses((status = 204, description = "Dropped"), (status = 409, body = ErrorBody))
)]
pub(super) async fn delete_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((schema, name)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    state
        .service
        .drop_dataset(&session, &schema, &name, query.version)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
