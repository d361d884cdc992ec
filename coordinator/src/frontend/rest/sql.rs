//! `POST /api/v1/sql`: run SQL, answering with rows (or, with `"async": true`, a job id).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::encode::{Column, RowFormat, columns_json, json_rows};
use super::{ApiResult, AppState, Caller, ErrorBody, parse_body, with_status};
use crate::service::{JobHandle, JobState};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlRequest {
    sql: String,
    /// The schema unqualified names resolve against, as a path (`["demo"]`).
    #[serde(default)]
    context: Option<Vec<String>>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
    /// `objects` (the default) or `arrays`.
    #[serde(default, rename = "rowFormat")]
    row_format: RowFormat,
}

/// A job's id, for following it under `/api/v1/jobs/{id}`.
#[derive(Serialize, ToSchema)]
pub(super) struct JobId {
    id: String,
}

/// Rows of a finished statement. The body is streamed as it is read, so it is described
/// here rather than built from this type.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct SqlResult {
    id: String,
    /// `COMPLETED`.
    state: String,
    row_count: u64,
    /// With an answer from reflections: when their oldest data was read (ms since the epoch).
    data_as_of_ms: Option<u64>,
    /// With an answer from reflections: which were considered, and why.
    reflections: Option<Vec<String>>,
    columns: Vec<Column>,
    /// Objects keyed by column name, or arrays in column order (`rowFormat`).
    rows: Vec<serde_json::Value>,
}

/// Run SQL. Synchronous by default (rows in the response); with `async: true` the job's id
/// at once. A client that stops waiting cancels its job.
#[utoipa::path(
    post,
    path = "/api/v1/sql",
    tag = "sql",
    request_body = SqlRequest,
    responses(
        (status = 200, body = SqlResult),
        (status = 202, description = "Submitted (`async: true`)", body = JobId),
        (status = 400, description = "Malformed SQL or body", body = ErrorBody),
    )
)]
pub(super) async fn submit(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let request: SqlRequest = parse_body(&body)?;
    if let Some(context) = &request.context {
        match context.as_slice() {
            [] => {}
            [schema] => state.service.use_schema(&session, schema)?,
            _ => {
                return Err(QuarryError::invalid(
                    "context is a schema: a list of one name, like [\"demo\"]",
                )
                .into());
            }
        }
    }
    let job = state.service.submit(&session, &request.sql, None).await?;
    if request.asynchronous {
        // Newer jobs must not push its results out before the client comes for them.
        job.keep_for_reader(state.service.fetch_timeout());
        let id = job.id().to_string();
        return Ok(with_status(StatusCode::ACCEPTED, JobId { id }));
    }
    // A client that stops waiting cancels the job.
    let record = job.finished().await?;
    rows_response(&job, record.row_count, request.row_format)
}

/// `{"id", "state", "columns", "rows", "rowCount"}`, streamed.
fn rows_response(job: &JobHandle, row_count: u64, format: RowFormat) -> ApiResult<Response> {
    let schema = job.schema();
    // Answers from reflections say how old their data is, and which reflections.
    let record = job.record();
    let accelerated = match record.data_as_of_ms {
        Some(as_of) => format!(
            "\"dataAsOfMs\":{as_of},\"reflections\":{},",
            serde_json::Value::from(record.reflections)
        ),
        None => String::new(),
    };
    let head = format!(
        "{{\"id\":{},\"state\":\"{}\",\"rowCount\":{row_count},{accelerated}\"columns\":{},\"rows\":[",
        serde_json::Value::String(job.id().to_string()),
        JobState::Completed,
        columns_json(&schema)?
    );
    let mut first = true;
    let rows = job.results(0, None).map(move |batch| {
        let batch = batch.map_err(std::io::Error::other)?;
        let bytes = json_rows(&batch, first, format).map_err(std::io::Error::other)?;
        if batch.num_rows() > 0 {
            first = false;
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(bytes))
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(rows)
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"]}"))
        }));
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}
