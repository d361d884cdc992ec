//! Jobs: status, listing, cancelling, and paging through results in JSON, NDJSON or
//! Arrow IPC.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quarry_catalog::JobRecord;
use quarry_common::QuarryError;
use serde::Deserialize;
use serde_json::json;

use super::encode::{IpcEncoder, RowFormat, columns, json_rows, ndjson};
use super::{ApiResult, AppState, Caller};
use crate::service::{JobState, SessionHandle, job_error};

pub(super) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub(super) const NDJSON: &str = "application/x-ndjson";

fn job_json(record: &JobRecord) -> serde_json::Value {
    json!({
        "id": record.id,
        "state": record.state,
        "sql": record.sql,
        "user": record.user,
        "submittedMs": record.submitted_ms,
        "startedMs": record.started_ms,
        "finishedMs": record.finished_ms,
        "rowCount": record.row_count,
        "progress": {"tasksDone": record.tasks_done, "tasksTotal": record.tasks_total},
        "error": record.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
        "profile": record.profile,
        "reflections": record.reflections,
        "dataAsOfMs": record.data_as_of_ms,
    })
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(session): Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    let wanted = match &query.state {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            QuarryError::invalid(format!(
                "unknown job state '{s}'; use one of {}",
                known.join(", ")
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(100).min(10_000);
    let jobs = state.service.list_jobs(&session, wanted, limit)?;
    let jobs: Vec<serde_json::Value> = jobs
        .iter()
        .map(|r| {
            let mut j = job_json(r);
            // Profiles can be large; the list leaves them out.
            if let Some(o) = j.as_object_mut() {
                o.remove("profile");
            }
            j
        })
        .collect();
    Ok(axum::Json(json!({"jobs": jobs})).into_response())
}

/// A job the requester may see (their own, or any for admins).
fn find(state: &AppState, session: &SessionHandle, id: &str) -> ApiResult<JobRecord> {
    Ok(state.service.get_job(session, id)?)
}

pub(super) async fn get(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = find(&state, &session, &id)?;
    Ok(axum::Json(job_json(&record)).into_response())
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    find(&state, &session, &id)?;
    let cancelled = state
        .service
        .cancel(&session, &id, "cancelled through the REST API")?;
    let record = state.service.get_job(&session, &id)?;
    Ok(
        axum::Json(json!({"id": id, "cancelled": cancelled, "state": record.state}))
            .into_response(),
    )
}

#[derive(Deserialize)]
pub(super) struct ResultsQuery {
    offset: Option<u64>,
    limit: Option<u64>,
    /// `objects` (the default) or `arrays`.
    #[serde(default, rename = "rowFormat")]
    row_format: RowFormat,
}

pub(super) async fn results(
    State(state): State<AppState>,
    Caller(session): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ResultsQuery>,
) -> ApiResult<Response> {
    let record = find(&state, &session, &id)?;
    if matches!(
        JobState::of(&record.state),
        JobState::Failed | JobState::Canceled
    ) {
        let error = job_error(&record);
        let message = format!("job {id} has no results: {}", error.message);
        return Err(QuarryError::new(error.code, message).into());
    }
    let job = state
        .service
        .live_job(&session, &id)?
        .ok_or_else(|| QuarryError::not_found(format!("results of job {id} are no longer kept")))?;
    let offset = query.offset.unwrap_or(0);
    let schema = job.schema();
    let batches = job.results(offset, query.limit);
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if accept.contains(ARROW_STREAM) {
        let mut encoder = IpcEncoder::new(&schema)?;
        let start = encoder.start();
        let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(start) }).chain(
            batches
                .map(Some)
                .chain(futures::stream::once(async { None }))
                .map(move |item| match item {
                    Some(batch) => {
                        let batch = batch.map_err(std::io::Error::other)?;
                        encoder.batch(&batch).map_err(std::io::Error::other)
                    }
                    None => encoder.finish().map_err(std::io::Error::other),
                }),
        );
        return Ok((
            [(header::CONTENT_TYPE, ARROW_STREAM)],
            Body::from_stream(body),
        )
            .into_response());
    }
    if accept.contains(NDJSON) {
        let body = batches.map(|batch| {
            let batch = batch.map_err(std::io::Error::other)?;
            ndjson(&batch)
                .map(Bytes::from)
                .map_err(std::io::Error::other)
        });
        return Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response());
    }
    let head = format!(
        "{{\"id\":{},\"state\":{},\"rowCount\":{},\"offset\":{offset},\"columns\":{},\"rows\":[",
        serde_json::Value::String(id.clone()),
        serde_json::Value::String(record.state.clone()),
        job.rows(),
        columns(&schema)
    );
    let row_format = query.row_format;
    let mut first = true;
    let mut returned = 0u64;
    let rows = batches
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .map(move |item| match item {
            Some(batch) => {
                let batch = batch.map_err(std::io::Error::other)?;
                let bytes = json_rows(&batch, first, row_format).map_err(std::io::Error::other)?;
                if batch.num_rows() > 0 {
                    first = false;
                }
                returned += batch.num_rows() as u64;
                Ok::<Bytes, std::io::Error>(Bytes::from(bytes))
            }
            None => Ok(Bytes::from(format!("],\"returned\":{returned}}}"))),
        });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(rows);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}
