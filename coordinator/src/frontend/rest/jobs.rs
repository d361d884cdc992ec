//! Jobs: status, listing, cancelling, and paging through results in JSON, NDJSON or
//! Arrow IPC, or saving all of them as CSV, NDJSON, Arrow IPC or Parquet.

use arrow::array::RecordBatch;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quarry_catalog::JobRecord;
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::encode::{
    Column, CsvEncoder, IpcEncoder, ParquetEncoder, RowFormat, columns_json, json_rows, ndjson,
};
use super::{ApiResult, AppState, Caller, ErrorBody};
use crate::service::{JobState, SessionHandle, job_error};

pub(super) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub(super) const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";
const PARQUET: &str = "application/vnd.apache.parquet";

/// A job as the API shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Job {
    id: String,
    /// `PLANNING`, `QUEUED`, `RUNNING`, `COMPLETED`, `FAILED` or `CANCELED`.
    state: String,
    sql: String,
    user: String,
    submitted_ms: u64,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    row_count: u64,
    progress: Progress,
    error: Option<JobFailure>,
    /// Stages, tasks and their metrics; left out of listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<serde_json::Value>,
    /// The reflections planning considered: `name: chosen ...` or why not.
    reflections: Vec<String>,
    /// When the oldest data of the reflections it used was read; absent for base data.
    data_as_of_ms: Option<u64>,
    /// The door the statement came in by: `flight_sql`, `rest`, `pgwire`, `in_process`;
    /// empty for the engine's own jobs (reflection refreshes).
    frontend: String,
    /// The job's OpenTelemetry trace id, when traces are exported (`--otlp-endpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// "served from the results cache (...)" when an earlier run's rows answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    results_cache: Option<String>,
    /// Microseconds from submission to the end of each phase it went through: `parse`,
    /// `plan`, `admission`, `stages`, `first_batch`, `last_batch`.
    timings_us: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Progress {
    tasks_done: u64,
    tasks_total: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct JobFailure {
    code: String,
    message: String,
}

impl Job {
    fn of(record: &JobRecord, with_profile: bool) -> Self {
        Job {
            id: record.id.clone(),
            state: record.state.clone(),
            sql: record.sql.clone(),
            user: record.user.clone(),
            submitted_ms: record.submitted_ms,
            started_ms: record.started_ms,
            finished_ms: record.finished_ms,
            row_count: record.row_count,
            progress: Progress {
                tasks_done: record.tasks_done,
                tasks_total: record.tasks_total,
            },
            error: record.error.as_ref().map(|e| JobFailure {
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            profile: with_profile.then(|| record.profile.clone()),
            reflections: record.reflections.clone(),
            data_as_of_ms: record.data_as_of_ms,
            frontend: record.frontend.clone(),
            trace_id: record.trace_id.clone(),
            results_cache: record.results_cache.clone(),
            timings_us: record.timings_us.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct JobList {
    jobs: Vec<Job>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// At most this many (100 when absent, 10,000 at most).
    limit: Option<usize>,
}

/// List jobs, newest first (non-admins: their own).
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "sql",
    params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody))
)]
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
    // Profiles can be large; the list leaves them out.
    let jobs = jobs.iter().map(|r| Job::of(r, false)).collect();
    Ok(axum::Json(JobList { jobs }).into_response())
}

/// A job the requester may see (their own, or any for admins).
fn find(state: &AppState, session: &SessionHandle, id: &str) -> ApiResult<JobRecord> {
    Ok(state.service.get_job(session, id)?)
}

/// A job: state, progress, error and profile.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "sql",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody))
)]
pub(super) async fn get(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = find(&state, &session, &id)?;
    Ok(axum::Json(Job::of(&record, true)).into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct Cancelled {
    id: String,
    /// False when the job had already ended.
    cancelled: bool,
    state: String,
}

/// Cancel a job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "sql",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody))
)]
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
    let body = Cancelled {
        id,
        cancelled,
        state: record.state,
    };
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ResultsQuery {
    /// The first row to answer (0 when absent).
    offset: Option<u64>,
    /// At most this many rows (all from `offset` when absent).
    limit: Option<u64>,
    /// JSON rows as `objects` (the default) or `arrays`.
    #[serde(default, rename = "rowFormat")]
    #[param(inline)]
    row_format: RowFormat,
    /// `json`, `ndjson`, `arrow` (an Arrow IPC stream), `csv` or `parquet`; in place of
    /// `Accept`.
    format: Option<String>,
    /// Answer as a file to save (`Content-Disposition: attachment`).
    #[serde(default)]
    download: bool,
}

/// The encodings results come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultFormat {
    Json,
    Ndjson,
    Arrow,
    Csv,
    Parquet,
}

impl ResultFormat {
    const NAMES: [(&str, ResultFormat); 5] = [
        ("json", ResultFormat::Json),
        ("ndjson", ResultFormat::Ndjson),
        ("arrow", ResultFormat::Arrow),
        ("csv", ResultFormat::Csv),
        ("parquet", ResultFormat::Parquet),
    ];

    fn named(name: &str) -> ApiResult<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                QuarryError::invalid(format!(
                    "unknown result format '{name}'; use one of {}",
                    known.join(", ")
                ))
                .into()
            })
    }

    fn accepted(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        [
            (ARROW_STREAM, ResultFormat::Arrow),
            (NDJSON, ResultFormat::Ndjson),
            (CSV, ResultFormat::Csv),
            (PARQUET, ResultFormat::Parquet),
        ]
        .into_iter()
        .find(|(media, _)| accept.contains(media))
        .map_or(ResultFormat::Json, |(_, f)| f)
    }

    fn media_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::Ndjson => NDJSON,
            ResultFormat::Arrow => ARROW_STREAM,
            ResultFormat::Csv => CSV,
            ResultFormat::Parquet => PARQUET,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ResultFormat::Arrow => "arrows",
            other => Self::NAMES
                .iter()
                .find(|(_, f)| *f == other)
                .map_or("bin", |(n, _)| n),
        }
    }
}

/// A streaming encoder of one of the file formats.
enum Encoder {
    Ndjson,
    Arrow(IpcEncoder),
    Csv(CsvEncoder),
    Parquet(ParquetEncoder),
}

impl Encoder {
    fn new(format: ResultFormat, schema: &arrow::datatypes::Schema) -> ApiResult<Self> {
        Ok(match format {
            ResultFormat::Json | ResultFormat::Ndjson => Encoder::Ndjson,
            ResultFormat::Arrow => Encoder::Arrow(IpcEncoder::new(schema)?),
            ResultFormat::Csv => Encoder::Csv(CsvEncoder::new()),
            ResultFormat::Parquet => Encoder::Parquet(ParquetEncoder::new(schema)?),
        })
    }

    fn start(&mut self) -> Bytes {
        match self {
            Encoder::Arrow(e) => e.start(),
            _ => Bytes::new(),
        }
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, QuarryError> {
        match self {
            Encoder::Ndjson => ndjson(batch).map(Bytes::from),
            Encoder::Arrow(e) => e.batch(batch),
            Encoder::Csv(e) => e.batch(batch),
            Encoder::Parquet(e) => e.batch(batch),
        }
    }

    fn finish(&mut self) -> Result<Bytes, QuarryError> {
        match self {
            Encoder::Arrow(e) => e.finish(),
            Encoder::Parquet(e) => e.finish(),
            Encoder::Ndjson | Encoder::Csv(_) => Ok(Bytes::new()),
        }
    }
}

/// A page of results in JSON. The body is streamed as it is read, so it is described here
/// rather than built from this type.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct ResultsPage {
    id: String,
    state: String,
    row_count: u64,
    offset: u64,
    columns: Vec<Column>,
    /// Objects keyed by column name, or arrays in column order (`rowFormat`).
    rows: Vec<serde_json::Value>,
    /// How many rows this page holds.
    returned: u64,
}

/// Result rows from `offset`; follows a running job. `Accept: application/json` (the
/// default), `application/x-ndjson`, `application/vnd.apache.arrow.stream`, `text/csv` or
/// `application/vnd.apache.parquet`, or `format=...`; `download=true` to save as a file.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/results",
    tag = "sql",
    params(("id" = String, Path, description = "The job's id"), ResultsQuery),
    responses(
        (status = 200, content(
            (ResultsPage = "application/json"),
            (String = "application/x-ndjson"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
        (status = 400, description = "An unknown format", body = ErrorBody),
        (status = 404, description = "No such job, or its results are no longer kept", body = ErrorBody),
    )
)]
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
    let format = match query.format.as_deref() {
        Some(name) => ResultFormat::named(name)?,
        None => ResultFormat::accepted(&headers),
    };
    if format != ResultFormat::Json {
        let mut encoder = Encoder::new(format, &schema)?;
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
        let mut response = (
            [(header::CONTENT_TYPE, format.media_type())],
            Body::from_stream(body),
        )
            .into_response();
        if query.download {
            let disposition = format!(
                "attachment; filename=\"quarry-{id}.{}\"",
                format.extension()
            );
            if let Ok(value) = header::HeaderValue::from_str(&disposition) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
        }
        return Ok(response);
    }
    let head = format!(
        "{{\"id\":{},\"state\":{},\"rowCount\":{},\"offset\":{offset},\"columns\":{},\"rows\":[",
        serde_json::Value::String(id.clone()),
        serde_json::Value::String(record.state.clone()),
        job.rows(),
        columns_json(&schema)?
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
