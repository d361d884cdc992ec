//! Catalog CRUD: sources, schemas and datasets (tables and views). Updates and deletes
//! may name the `version` they read; a stale one is refused with 409.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use quarry_catalog::{
    DatasetDefinition, DatasetRecord, Privilege, SourceConfig, SourceRecord, Stored,
};
use quarry_common::QuarryError;
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, parse_body};
use crate::access::UserAccess;
use crate::datasets::{can_read, source_of};
use crate::engine::catalog_ops::{CreateMode, DatasetUpdate, TableRequest, catalog_error};

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
            "columns": crate::datasets::schema_codec::decode_schema(&t.arrow_schema)
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

/// Sources the user may read from.
fn visible_sources(state: &AppState, actor: &UserAccess) -> ApiResult<Vec<serde_json::Value>> {
    Ok(state
        .engine
        .datasets()
        .catalog()
        .list_sources()
        .map_err(catalog_error)?
        .iter()
        .filter(|s| actor.on_source(Privilege::Select, &s.record.name))
        .map(source_json)
        .collect())
}

/// Catalog schemas the user may see (not `sys`).
fn visible_schemas(state: &AppState, actor: &Arc<UserAccess>) -> Vec<String> {
    state
        .engine
        .datasets()
        .visible_schema_names(&Some(Arc::clone(actor)))
        .into_iter()
        .filter(|s| s != crate::datasets::SYSTEM_SCHEMA)
        .collect()
}

pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let sources = visible_sources(&state, &actor)?;
    let schemas = visible_schemas(&state, &actor);
    Ok(axum::Json(
        json!({"catalog": crate::datasets::CATALOG_NAME, "sources": sources, "schemas": schemas}),
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
pub struct VersionQuery {
    version: Option<u64>,
    #[serde(default)]
    cascade: bool,
}

pub async fn list_sources(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let sources = visible_sources(&state, &actor)?;
    Ok(axum::Json(json!({"sources": sources})).into_response())
}

pub async fn create_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let new: NewSource = parse_body(&body)?;
    let mode = if new.if_not_exists {
        CreateMode::IfNotExists
    } else {
        CreateMode::Create
    };
    let stored = state
        .engine
        .create_source(&actor, &new.name, new.config, mode)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(source_json(&stored))).into_response())
}

pub async fn get_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let stored = state
        .engine
        .datasets()
        .catalog()
        .get_source(&name)
        .map_err(catalog_error)?
        .ok_or_else(|| QuarryError::not_found(format!("source '{name}' does not exist")))?;
    actor.require_source(Privilege::Select, &name)?;
    Ok(axum::Json(source_json(&stored)).into_response())
}

pub async fn update_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let update: SourceUpdate = parse_body(&body)?;
    let stored = state
        .engine
        .update_source(&actor, &name, update.config, update.version)
        .await?;
    Ok(axum::Json(source_json(&stored)).into_response())
}

pub async fn delete_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    state
        .engine
        .drop_source(&actor, &name, false, query.version)?;
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

pub async fn list_schemas(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let visible = visible_schemas(&state, &actor);
    let schemas: Vec<_> = state
        .engine
        .datasets()
        .catalog()
        .list_schemas()
        .map_err(catalog_error)?
        .into_iter()
        .filter(|s| visible.contains(&s.record.name))
        .map(|s| json!({"name": s.record.name, "version": s.version, "createdMs": s.created_ms}))
        .collect();
    Ok(axum::Json(json!({"schemas": schemas})).into_response())
}

pub async fn create_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let new: NewSchema = parse_body(&body)?;
    let created = state
        .engine
        .create_schema(&actor, &new.name, new.if_not_exists)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({"name": new.name}))).into_response())
}

pub async fn get_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let catalog = state.engine.datasets().catalog();
    let stored = catalog
        .get_schema(&schema)
        .map_err(catalog_error)?
        .ok_or_else(|| QuarryError::not_found(format!("schema '{schema}' does not exist")))?;
    if !visible_schemas(&state, &actor).contains(&schema) {
        actor.require_schema(Privilege::Select, &schema)?;
    }
    let viewer = Some(Arc::clone(&actor));
    let datasets: Vec<_> = catalog
        .list_datasets(Some(&schema))
        .map_err(catalog_error)?
        .iter()
        .filter(|d| can_read(&viewer, &d.record))
        .map(dataset_json)
        .collect();
    Ok(axum::Json(
        json!({"name": stored.record.name, "version": stored.version, "datasets": datasets}),
    )
    .into_response())
}

pub async fn delete_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(schema): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    state
        .engine
        .drop_schema(&actor, &schema, false, query.cascade)?;
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

pub async fn list_datasets(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(schema): Path<String>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let viewer = Some(actor);
    let datasets: Vec<_> = state
        .engine
        .datasets()
        .catalog()
        .list_datasets(Some(&schema))
        .map_err(catalog_error)?
        .iter()
        .filter(|d| can_read(&viewer, &d.record))
        .map(dataset_json)
        .collect();
    Ok(axum::Json(json!({"datasets": datasets})).into_response())
}

pub async fn create_dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(schema): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (session, actor) = state.actor(&headers).await?;
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
                .engine
                .create_table(&actor, &schema, &name, table, mode)
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
            let context = if session.default_schema() == quarry_catalog::DEFAULT_SCHEMA {
                schema.clone()
            } else {
                session.default_schema()
            };
            state
                .engine
                .create_view(&actor, &schema, &name, &sql, &context, mode)
                .await?
        }
    };
    Ok((StatusCode::CREATED, axum::Json(dataset_json(&stored))).into_response())
}

pub async fn get_dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((schema, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let stored = state
        .engine
        .datasets()
        .catalog()
        .get_dataset(&schema, &name)
        .map_err(catalog_error)?
        .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
    actor.require_dataset(Privilege::Select, &schema, &name, source_of(&stored.record))?;
    Ok(axum::Json(dataset_json(&stored)).into_response())
}

pub async fn update_dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((schema, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    let (update, version) = match parse_body::<DatasetBody>(&body)? {
        DatasetBody::Table { table, version, .. } => (DatasetUpdate::Table(table), version),
        DatasetBody::View { sql, version, .. } => (DatasetUpdate::View { sql }, version),
    };
    let version = version.ok_or_else(|| {
        QuarryError::invalid("an update must name the version it replaces (\"version\": N)")
    })?;
    let stored = state
        .engine
        .update_dataset(&actor, &schema, &name, update, version)
        .await?;
    Ok(axum::Json(dataset_json(&stored)).into_response())
}

pub async fn delete_dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((schema, name)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Response> {
    let (_, actor) = state.actor(&headers).await?;
    state
        .engine
        .drop_dataset(&actor, &schema, &name, None, false, query.version)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
