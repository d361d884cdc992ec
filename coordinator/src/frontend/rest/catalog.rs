//! Catalog CRUD: sources, schemas and datasets (tables and views). Updates and deletes
//! may name the `version` they read; a stale one is refused with 409.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarry_catalog::{DatasetDefinition, DatasetRecord, SourceConfig, SourceRecord, Stored};
use quarry_common::QuarryError;
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, Caller, parse_body};
use crate::service::{CreateMode, DatasetUpdate, TableRequest, decode_schema};

/// A source as the API shows it: secrets are never sent back.
fn source_json(stored: &Stored<SourceRecord>) -> serde_json::Value {
    let mut config = serde_json::to_value(&stored.record.config).unwrap_or_default();
    if let Some(secret) = config.get_mut("secret_access_key")
        && !secret.is_null()
    {
        *secret = json!("********");
    }
    json!({
        "name": stored.record.name,
        "config": config,
        "version": stored.version,
        "createdMs": stored.created_ms,
        "updatedMs": stored.updated_ms,
    })
}

fn dataset_json(stored: &Stored<DatasetRecord>) -> serde_json::Value {
    let record = &stored.record;
    let mut out = json!({
        "schema": record.schema,
        "name": record.name,
        "path": [record.schema, record.name],
        "version": stored.version,
        "createdMs": stored.created_ms,
        "updatedMs": stored.updated_ms,
    });
    let details = match &record.definition {
        DatasetDefinition::Table(t) => json!({
            "type": "table",
            "source": t.source,
            "sourcePath": t.path,
            "location": t.location,
            "format": t.format,
            "options": t.options,
            "partitionColumns": t.partition_columns,
            "columns": decode_schema(&t.arrow_schema)
                .map(|s| super::encode::columns(&s))
                .unwrap_or_default(),
        }),
        DatasetDefinition::View(v) => {
            json!({"type": "view", "sql": v.sql, "context": v.default_schema})
        }
    };
    if let (Some(out), Some(details)) = (out.as_object_mut(), details.as_object()) {
        out.extend(details.clone());
    }
    out
}

pub(super) async fn overview(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let sources: Vec<_> = state
        .service
        .list_sources(&session)?
        .iter()
        .map(source_json)
        .collect();
    let schemas: Vec<_> = state
        .service
        .list_schemas(&session)?
        .into_iter()
        .map(|s| s.record.name)
        .collect();
    Ok(axum::Json(
        json!({"catalog": quarry_catalog::CATALOG_NAME, "sources": sources, "schemas": schemas}),
    )
    .into_response())
}

// ---- sources ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSource {
    name: String,
    config: SourceConfig,
    #[serde(default, rename = "ifNotExists")]
    if_not_exists: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceUpdate {
    config: SourceConfig,
    version: u64,
}

#[derive(Deserialize)]
pub(super) struct VersionQuery {
    version: Option<u64>,
    #[serde(default)]
    cascade: bool,
}

pub(super) async fn list_sources(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let sources: Vec<_> = state
        .service
        .list_sources(&session)?
        .iter()
        .map(source_json)
        .collect();
    Ok(axum::Json(json!({"sources": sources})).into_response())
}

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
    Ok((StatusCode::CREATED, axum::Json(source_json(&stored))).into_response())
}

pub(super) async fn get_source(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let stored = state.service.get_source(&session, &name)?;
    Ok(axum::Json(source_json(&stored)).into_response())
}

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
    Ok(axum::Json(source_json(&stored)).into_response())
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSchema {
    name: String,
    #[serde(default, rename = "ifNotExists")]
    if_not_exists: bool,
}

pub(super) async fn list_schemas(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let schemas: Vec<_> = state
        .service
        .list_schemas(&session)?
        .into_iter()
        .map(|s| json!({"name": s.record.name, "version": s.version, "createdMs": s.created_ms}))
        .collect();
    Ok(axum::Json(json!({"schemas": schemas})).into_response())
}

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
    Ok((status, axum::Json(json!({"name": new.name}))).into_response())
}

pub(super) async fn get_schema(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let stored = state.service.get_schema(&session, &schema)?;
    let datasets: Vec<_> = state
        .service
        .list_datasets(&session, Some(&schema))?
        .iter()
        .map(dataset_json)
        .collect();
    Ok(axum::Json(
        json!({"name": stored.record.name, "version": stored.version, "datasets": datasets}),
    )
    .into_response())
}

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

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum DatasetBody {
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

pub(super) async fn list_datasets(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let datasets: Vec<_> = state
        .service
        .list_datasets(&session, Some(&schema))?
        .iter()
        .map(dataset_json)
        .collect();
    Ok(axum::Json(json!({"datasets": datasets})).into_response())
}

pub(super) async fn create_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(schema): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let stored = match parse_body::<DatasetBody>(&body)? {
        DatasetBody::Table {
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
        DatasetBody::View {
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
    Ok((StatusCode::CREATED, axum::Json(dataset_json(&stored))).into_response())
}

pub(super) async fn get_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((schema, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let stored = state.service.get_dataset(&session, &schema, &name)?;
    Ok(axum::Json(dataset_json(&stored)).into_response())
}

pub(super) async fn update_dataset(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((schema, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (update, version) = match parse_body::<DatasetBody>(&body)? {
        DatasetBody::Table { table, version, .. } => (DatasetUpdate::Table(table), version),
        DatasetBody::View { sql, version, .. } => (DatasetUpdate::View { sql }, version),
    };
    let version = version.ok_or_else(|| {
        QuarryError::invalid("an update must name the version it replaces (\"version\": N)")
    })?;
    let stored = state
        .service
        .update_dataset(&session, &schema, &name, update, version)
        .await?;
    Ok(axum::Json(dataset_json(&stored)).into_response())
}

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
