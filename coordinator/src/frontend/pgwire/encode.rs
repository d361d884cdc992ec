//! Quarry's answers in the PostgreSQL protocol's terms: errors with SQLSTATE codes, and
//! Arrow batches as data rows (arrow-pg does the per-type text and binary encoding).

use std::sync::Arc;

use arrow::array::{
    Array, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    LargeStringArray, RecordBatch, StringArray, StringViewArray, UInt8Array, UInt16Array,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse};
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

/// Batches encoded ahead of the client: while it reads (or parses) one batch's rows, the
/// next ones are encoded, so a cursor's FETCH finds its rows ready instead of the server
/// and the client taking turns.
const ENCODED_AHEAD: usize = 2;

/// Batches as data rows, encoded by a task of their own up to [`ENCODED_AHEAD`] batches
/// ahead of the client. Dropping the stream stops the task, which drops `batches` (so a
/// job whose reader left is cancelled, as for every door).
pub(crate) fn rows(
    fields: Arc<Vec<FieldInfo>>,
    mut batches: BoxStream<'static, Result<RecordBatch, QuarryError>>,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Vec<PgWireResult<DataRow>>>(ENCODED_AHEAD);
    // Owned by the stream: dropping it drops the set, which aborts the task.
    let mut encoder = tokio::task::JoinSet::new();
    encoder.spawn(async move {
        while let Some(batch) = batches.next().await {
            let rows: Vec<PgWireResult<DataRow>> = match batch {
                Ok(batch) if batch.num_columns() == fields.len() => {
                    match text_columns(&batch, &fields) {
                        Some(columns) => encode_text(&columns, batch.num_rows()),
                        None => encode_recordbatch(Arc::clone(&fields), batch).collect(),
                    }
                }
                Ok(batch) => vec![Err(pg_error(QuarryError::new(
                    ErrorCode::Internal,
                    format!(
                        "a batch of {} columns for a result of {}",
                        batch.num_columns(),
                        fields.len()
                    ),
                )))],
                Err(e) => vec![Err(pg_error(e))],
            };
            let failed = rows.iter().any(Result::is_err);
            if sender.send(rows).await.is_err() || failed {
                break;
            }
        }
    });
    stream::unfold((receiver, encoder), |(mut receiver, owned)| async move {
        receiver
            .recv()
            .await
            .map(|rows| (stream::iter(rows), (receiver, owned)))
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

/// A column whose text form is written straight into the row.
enum TextColumn<'a> {
    Int8(&'a Int8Array),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    UInt8(&'a UInt8Array),
    UInt16(&'a UInt16Array),
    UInt32(&'a UInt32Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Boolean(&'a BooleanArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
}

/// The batch's columns for the fast text path: every column asked for in text and of a
/// type written here (numbers, booleans, strings). Anything else (dates, decimals, lists,
/// binary format) goes through arrow-pg, value by value.
fn text_columns<'a>(batch: &'a RecordBatch, fields: &[FieldInfo]) -> Option<Vec<TextColumn<'a>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{
        Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type,
    };
    if fields.iter().any(|f| f.format() != FieldFormat::Text) {
        return None;
    }
    batch
        .columns()
        .iter()
        .map(|column| {
            Some(match column.data_type() {
                DataType::Int8 => TextColumn::Int8(column.as_primitive::<Int8Type>()),
                DataType::Int16 => TextColumn::Int16(column.as_primitive::<Int16Type>()),
                DataType::Int32 => TextColumn::Int32(column.as_primitive::<Int32Type>()),
                DataType::Int64 => TextColumn::Int64(column.as_primitive::<Int64Type>()),
                DataType::UInt8 => TextColumn::UInt8(column.as_primitive::<UInt8Type>()),
                DataType::UInt16 => TextColumn::UInt16(column.as_primitive::<UInt16Type>()),
                DataType::UInt32 => TextColumn::UInt32(column.as_primitive::<UInt32Type>()),
                DataType::Float32 => TextColumn::Float32(column.as_primitive::<Float32Type>()),
                DataType::Float64 => TextColumn::Float64(column.as_primitive::<Float64Type>()),
                DataType::Boolean => TextColumn::Boolean(column.as_boolean()),
                DataType::Utf8 => TextColumn::Utf8(column.as_string::<i32>()),
                DataType::LargeUtf8 => TextColumn::LargeUtf8(column.as_string::<i64>()),
                DataType::Utf8View => TextColumn::Utf8View(column.as_string_view()),
                _ => return None,
            })
        })
        .collect()
}

/// PostgreSQL's text for a float: the shortest that reads back the same (`0.5`, `1`,
/// `1e20`), and its words for the values that are not numbers.
fn float_text<F: ryu::Float + Into<f64> + Copy>(value: F, buffer: &mut ryu::Buffer) -> &str {
    let wide: f64 = value.into();
    if wide.is_nan() {
        "NaN"
    } else if wide.is_infinite() {
        if wide > 0.0 { "Infinity" } else { "-Infinity" }
    } else {
        let text = buffer.format_finite(value);
        text.strip_suffix(".0").unwrap_or(text)
    }
}

/// Rows of text columns. Written here rather than through arrow-pg, which formats every
/// value through `fmt` and dispatches on its type per value: this is the door's hot loop
/// (a 10M-row result is 40M values).
fn encode_text(columns: &[TextColumn<'_>], rows: usize) -> Vec<PgWireResult<DataRow>> {
    use bytes::BufMut;
    let count = columns.len() as i16;
    let mut buffer = bytes::BytesMut::with_capacity(rows * (columns.len() * 12 + 8));
    let mut integers = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        for column in columns {
            let value: Option<&[u8]> = match column {
                TextColumn::Int8(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::Int16(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::Int32(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::Int64(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::UInt8(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::UInt16(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::UInt32(a) => a
                    .is_valid(row)
                    .then(|| integers.format(a.value(row)).as_bytes()),
                TextColumn::Float32(a) => a
                    .is_valid(row)
                    .then(|| float_text(a.value(row), &mut floats).as_bytes()),
                TextColumn::Float64(a) => a
                    .is_valid(row)
                    .then(|| float_text(a.value(row), &mut floats).as_bytes()),
                TextColumn::Boolean(a) => a
                    .is_valid(row)
                    .then(|| if a.value(row) { &b"t"[..] } else { &b"f"[..] }),
                TextColumn::Utf8(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
                TextColumn::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
                TextColumn::Utf8View(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
            };
            match value {
                Some(bytes) => {
                    buffer.put_i32(bytes.len() as i32);
                    buffer.put_slice(bytes);
                }
                None => buffer.put_i32(-1),
            }
        }
        out.push(Ok(DataRow::new(buffer.split(), count)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(row: &DataRow) -> Vec<Option<String>> {
        let mut data = &row.data[..];
        let mut out = Vec::new();
        for _ in 0..row.field_count {
            let length = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            data = &data[4..];
            if length < 0 {
                out.push(None);
            } else {
                let (value, rest) = data.split_at(length as usize);
                out.push(Some(String::from_utf8_lossy(value).to_string()));
                data = rest;
            }
        }
        out
    }

    #[test]
    fn text_rows_read_as_postgresql_writes_them() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(-42), None, Some(i64::MAX)])) as _,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(1.0),
                    Some(f64::NAN),
                ])) as _,
            ),
            (
                "g",
                Arc::new(Float32Array::from(vec![
                    Some(0.1f32),
                    Some(f32::INFINITY),
                    None,
                ])) as _,
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])) as _,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("é"), Some(""), None])) as _,
            ),
        ])
        .expect("batch");
        let fields = fields(&batch.schema(), &Format::UnifiedText).expect("fields");
        let columns = text_columns(&batch, &fields).expect("all text columns");
        let rows: Vec<Vec<Option<String>>> = encode_text(&columns, batch.num_rows())
            .iter()
            .map(|r| texts(r.as_ref().expect("row")))
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(rows[0], vec![s("-42"), s("0.5"), s("0.1"), s("t"), s("é")]);
        assert_eq!(rows[1], vec![None, s("1"), s("Infinity"), s("f"), s("")]);
        assert_eq!(
            rows[2],
            vec![s("9223372036854775807"), s("NaN"), None, None, None]
        );
        // Binary results and other types go through arrow-pg.
        let binary = super::fields(&batch.schema(), &Format::UnifiedBinary).expect("fields");
        assert!(text_columns(&batch, &binary).is_none());
    }
}
