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
use serde::Deserialize;
use serde_json::{Value, json};

use super::security::{batch_values, system_rows};
use super::{ApiResult, AppState, Caller, parse_body};
use crate::service::SessionHandle;
use crate::sql::reflections::{ReflectionDefinition, ReflectionStatement};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewReflection {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewDimension {
    column: String,
    #[serde(default)]
    by_day: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMeasure {
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

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let rows = system_rows(&state, &session, "reflections").await?;
    Ok(axum::Json(json!({ "reflections": rows })).into_response())
}

pub(super) async fn get(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let rows = system_rows(&state, &session, "reflections").await?;
    let found = rows
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["name"] == Value::String(name.clone()))
        })
        .cloned()
        .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?;
    Ok(axum::Json(found).into_response())
}

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
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"name": name, "refreshJob": job_of(&message), "message": message})),
    )
        .into_response())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReflectionChange {
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

/// `PUT /api/v1/reflections/{name}`: change a reflection as read at `version` (409 when it
/// changed since). A new definition drops the old data and starts a refresh.
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
    Ok(axum::Json(
        json!({"name": name, "version": version, "refreshJob": job_of(&message), "message": message}),
    )
    .into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    run(&state, &session, ReflectionStatement::DropByName { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let message = run(&state, &session, ReflectionStatement::RefreshOne { name }).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"jobId": job_of(&message)})),
    )
        .into_response())
}
