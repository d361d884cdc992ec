//! Quarry's answers in the PostgreSQL protocol's terms: errors with SQLSTATE codes, and
//! Arrow batches as data rows (arrow-pg does the per-type text and binary encoding).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use quarry_common::{ErrorCode, QuarryError};

/// A Quarry error as the client sees it: SQLSTATE and the engine's message.
pub(crate) fn pg_error(e: QuarryError) -> PgWireError {
    let code = sqlstate(&e);
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        e.message,
    )))
}

/// An error of this door's own (a protocol misuse), with its SQLSTATE.
pub(crate) fn protocol_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// A FATAL error: the connection ends after it.
pub(crate) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// The SQLSTATE of an error: by its code, refined by what the message says where one
/// code covers several PostgreSQL conditions.
fn sqlstate(e: &QuarryError) -> &'static str {
    let message = e.message.to_ascii_lowercase();
    let about_column = message.contains("no field named")
        || message.contains("column")
            && (message.contains("not found") || message.contains("does not exist"));
    let about_table = message.contains("table")
        && (message.contains("not found") || message.contains("does not exist"));
    match e.code {
        ErrorCode::InvalidArgument if about_column => "42703",
        ErrorCode::InvalidArgument if about_table => "42P01",
        ErrorCode::InvalidArgument
            if message.contains("sql parser error")
                || message.contains("syntax")
                || message.contains("expected:") =>
        {
            "42601"
        }
        ErrorCode::InvalidArgument => "42000",
        ErrorCode::NotFound if about_column => "42703",
        ErrorCode::NotFound if message.contains("schema") && !about_table => "3F000",
        ErrorCode::NotFound => "42P01",
        ErrorCode::AlreadyExists => "42P07",
        ErrorCode::Conflict => "40001",
        ErrorCode::Unauthenticated => "28000",
        ErrorCode::PermissionDenied => "42501",
        ErrorCode::Unavailable => "57P03",
        ErrorCode::Cancelled | ErrorCode::DeadlineExceeded => "57014",
        ErrorCode::ResourceExhausted => "53000",
        ErrorCode::Unimplemented => "0A000",
        ErrorCode::Internal => "XX000",
    }
}

/// The row description of a result schema, in the formats the client asked for.
pub(crate) fn fields(schema: &Schema, format: &Format) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    arrow_schema_to_pg_fields(schema, format, None).map(Arc::new)
}

/// Batches as data rows, one batch encoded at a time as the client reads.
pub(crate) fn rows(
    fields: Arc<Vec<FieldInfo>>,
    batches: BoxStream<'static, Result<RecordBatch, QuarryError>>,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> = match batch {
                Ok(batch) if batch.num_columns() == fields.len() => {
                    encode_recordbatch(Arc::clone(&fields), batch)
                }
                Ok(batch) => Box::new(std::iter::once(Err(pg_error(QuarryError::new(
                    ErrorCode::Internal,
                    format!(
                        "a batch of {} columns for a result of {}",
                        batch.num_columns(),
                        fields.len()
                    ),
                ))))),
                Err(e) => Box::new(std::iter::once(Err(pg_error(e)))),
            };
            stream::iter(rows)
        })
        .flatten()
}

/// A one-column text result (`SHOW name`).
pub(crate) fn text_result(column: &str, values: Vec<String>) -> PgWireResult<QueryResponse> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(values))],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let fields = fields(&schema, &Format::UnifiedText)?;
    let batches = stream::iter(vec![Ok(batch)]).boxed();
    Ok(QueryResponse::new(
        Arc::clone(&fields),
        rows(fields, batches),
    ))
}
