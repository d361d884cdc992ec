//! `POST /api/v1/sql`: run SQL, answering with rows (or, with `"async": true`, a job id).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quarry_common::QuarryError;
use serde::Deserialize;
use serde_json::json;

use super::encode::{RowFormat, columns, json_rows};
use super::{ApiResult, AppState, Caller, parse_body};
use crate::service::{JobHandle, JobState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
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
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": job.id()}))).into_response());
    }
    // A client that stops waiting cancels the job.
    let record = job.finished().await?;
    Ok(rows_response(&job, record.row_count, request.row_format))
}

/// `{"id", "state", "columns", "rows", "rowCount"}`, streamed.
fn rows_response(job: &JobHandle, row_count: u64, format: RowFormat) -> Response {
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
        columns(&schema)
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
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}
