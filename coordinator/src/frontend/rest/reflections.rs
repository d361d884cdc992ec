//! Reflections over REST: `/api/v1/reflections` lists (as `sys.reflections` shows them to
//! the caller), creates, gets, updates (`PUT` with the `version` read) and deletes
//! reflections, and `POST .../{name}/refresh`
//! starts a refresh job and answers its id. Each call is the reflection statement of the
//! same meaning, with the same privilege checks.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarry_catalog::{Dimension, Measure, MeasureFunction, ReflectionKind};
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::security::{Rows, batch_values, system_rows};
use super::{ApiResult, AppState, Caller, ErrorBody, parse_body, with_status};
use crate::service::SessionHandle;
use crate::sql::reflections::{ReflectionDefinition, ReflectionStatement};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct NewReflection {
    name: String,
    /// `schema.table` or `table`.
    dataset: String,
    /// `aggregate` or `raw`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dimensions: Vec<NewDimension>,
    #[serde(default)]
    measures: Vec<NewMeasure>,
    #[serde(default)]
    display: Vec<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default)]
    localsort_by: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct NewDimension {
    column: String,
    #[serde(default)]
    by_day: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMeasure {
    column: String,
    /// SUM, COUNT, MIN, MAX, APPROX_COUNT_DISTINCT; SUM and COUNT when left out.
    #[serde(default)]
    functions: Vec<String>,
}

fn function(name: &str) -> Result<MeasureFunction, QuarryError> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "SUM" => MeasureFunction::Sum,
        "COUNT" => MeasureFunction::Count,
        "MIN" => MeasureFunction::Min,
        "MAX" => MeasureFunction::Max,
        "APPROX_COUNT_DISTINCT" | "APPROXIMATE COUNT DISTINCT" => {
            MeasureFunction::ApproxCountDistinct
        }
        other => {
            return Err(QuarryError::invalid(format!(
                "unknown measure function {other}: use SUM, COUNT, MIN, MAX or APPROX_COUNT_DISTINCT"
            )));
        }
    })
}

async fn run(
    state: &AppState,
    session: &SessionHandle,
    statement: ReflectionStatement,
) -> ApiResult<String> {
    let batch = state.service.reflection(session, statement).await?;
    let rows = batch_values(&batch)?;
    Ok(rows
        .first()
        .and_then(|r| r["result"].as_str())
        .unwrap_or_default()
        .to_string())
}

/// The job id at the end of a `... refresh job <id>` message.
fn job_of(message: &str) -> Option<&str> {
    message.rsplit_once("refresh job ").map(|(_, id)| id.trim())
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReflectionList {
    /// Rows of `sys.reflections`.
    #[schema(value_type = Vec<Object>)]
    reflections: Rows,
}

/// List reflections (`sys.reflections` as the caller sees it).
#[utoipa::path(
    get,
    path = "/api/v1/reflections",
    tag = "reflections",
    responses((status = 200, body = ReflectionList))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let reflections = system_rows(&state, &session, "reflections").await?;
    Ok(axum::Json(ReflectionList { reflections }).into_response())
}

/// One reflection: its row of `sys.reflections`.
#[utoipa::path(
    get,
    path = "/api/v1/reflections/{name}",
    tag = "reflections",
    params(("name" = String, Path, description = "The reflection's name")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
pub(super) async fn get(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let rows = system_rows(&state, &session, "reflections").await?;
    let found = rows
        .into_iter()
        .find(|r| r["name"] == Value::String(name.clone()))
        .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?;
    Ok(axum::Json(found).into_response())
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReflectionChanged {
    name: String,
    /// The reflection's version after an update.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    /// The refresh job started, if one was.
    refresh_job: Option<String>,
    message: String,
}

impl ReflectionChanged {
    fn new(name: String, version: Option<u64>, message: String) -> Self {
        let refresh_job = job_of(&message).map(str::to_string);
        ReflectionChanged {
            name,
            version,
            refresh_job,
            message,
        }
    }
}

/// Create a reflection; its first refresh starts.
#[utoipa::path(
    post,
    path = "/api/v1/reflections",
    tag = "reflections",
    request_body = NewReflection,
    responses((status = 201, body = ReflectionChanged), (status = 400, body = ErrorBody))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewReflection = parse_body(&body)?;
    let kind = kind_of(&new.kind, new.dimensions, new.measures, new.display)?;
    let dataset: Vec<String> = new.dataset.split('.').map(str::to_string).collect();
    let name = new.name.clone();
    let message = run(
        &state,
        &session,
        ReflectionStatement::Create {
            dataset,
            definition: ReflectionDefinition {
                name: new.name,
                kind,
                partition_by: new.partition_by,
                localsort_by: new.localsort_by,
            },
        },
    )
    .await?;
    let body = ReflectionChanged::new(name, None, message);
    Ok(with_status(StatusCode::CREATED, body))
}

/// A definition from its JSON parts.
fn kind_of(
    kind: &str,
    dimensions: Vec<NewDimension>,
    measures: Vec<NewMeasure>,
    display: Vec<String>,
) -> Result<ReflectionKind, QuarryError> {
    let kind = match kind.to_ascii_lowercase().as_str() {
        "raw" => ReflectionKind::Raw { display },
        "aggregate" | "aggregation" => ReflectionKind::Aggregate {
            dimensions: dimensions
                .into_iter()
                .map(|d| Dimension {
                    column: d.column,
                    by_day: d.by_day,
                })
                .collect(),
            measures: measures
                .into_iter()
                .map(|m| {
                    let mut functions = m
                        .functions
                        .iter()
                        .map(|f| function(f))
                        .collect::<Result<Vec<_>, _>>()?;
                    if functions.is_empty() {
                        functions = vec![MeasureFunction::Sum, MeasureFunction::Count];
                    }
                    functions.sort();
                    functions.dedup();
                    Ok(Measure {
                        column: m.column,
                        functions,
                    })
                })
                .collect::<Result<Vec<_>, QuarryError>>()?,
        },
        other => {
            return Err(QuarryError::invalid(format!(
                "unknown reflection type '{other}': use aggregate or raw"
            )));
        }
    };
    if let ReflectionKind::Aggregate { dimensions, .. } = &kind
        && dimensions.is_empty()
    {
        return Err(QuarryError::invalid(
            "an aggregate reflection needs dimensions",
        ));
    }
    if let ReflectionKind::Raw { display } = &kind
        && display.is_empty()
    {
        return Err(QuarryError::invalid(
            "a raw reflection needs display columns",
        ));
    }
    Ok(kind)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ReflectionChange {
    /// The version the change was made against (`version` of GET).
    version: u64,
    #[serde(default)]
    enabled: Option<bool>,
    /// With `type`, a new definition (its dimensions and measures, or display columns).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    dimensions: Vec<NewDimension>,
    #[serde(default)]
    measures: Vec<NewMeasure>,
    #[serde(default)]
    display: Vec<String>,
    #[serde(default)]
    partition_by: Option<Vec<String>>,
    #[serde(default)]
    localsort_by: Option<Vec<String>>,
}

/// Change a reflection read at `version` (409 when it changed since). A new definition
/// (`type` with its dimensions and measures, or display columns) drops its data and starts
/// a refresh.
#[utoipa::path(
    put,
    path = "/api/v1/reflections/{name}",
    tag = "reflections",
    params(("name" = String, Path, description = "The reflection's name")),
    request_body = ReflectionChange,
    responses((status = 200, body = ReflectionChanged), (status = 409, description = "Changed since `version`", body = ErrorBody))
)]
pub(super) async fn update(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let change: ReflectionChange = parse_body(&body)?;
    let kind = match change.kind {
        Some(kind) => Some(kind_of(
            &kind,
            change.dimensions,
            change.measures,
            change.display,
        )?),
        None if !change.dimensions.is_empty()
            || !change.measures.is_empty()
            || !change.display.is_empty() =>
        {
            return Err(
                QuarryError::invalid("a new definition names its type: aggregate or raw").into(),
            );
        }
        None => None,
    };
    let message = run(
        &state,
        &session,
        ReflectionStatement::Update {
            name: name.clone(),
            version: change.version,
            enabled: change.enabled,
            kind,
            partition_by: change.partition_by,
            localsort_by: change.localsort_by,
        },
    )
    .await?;
    let version = message
        .split("to version ")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = ReflectionChanged::new(name, version, message);
    Ok(axum::Json(body).into_response())
}

/// Drop a reflection and its materializations.
#[utoipa::path(
    delete,
    path = "/api/v1/reflections/{name}",
    tag = "reflections",
    params(("name" = String, Path, description = "The reflection's name")),
    responses((status = 204, description = "Dropped"), (status = 404, body = ErrorBody))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    run(&state, &session, ReflectionStatement::DropByName { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RefreshStarted {
    job_id: Option<String>,
}

/// Start a refresh; answers the job's id.
#[utoipa::path(
    post,
    path = "/api/v1/reflections/{name}/refresh",
    tag = "reflections",
    params(("name" = String, Path, description = "The reflection's name")),
    responses((status = 202, body = RefreshStarted), (status = 404, body = ErrorBody))
)]
pub(super) async fn refresh(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let message = run(&state, &session, ReflectionStatement::RefreshOne { name }).await?;
    let job_id = job_of(&message).map(str::to_string);
    Ok(with_status(StatusCode::ACCEPTED, RefreshStarted { job_id }))
}
