//! Result rows as JSON, NDJSON and Arrow IPC streams, encoded batch by batch so a result
//! of any size streams without being held in memory.

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{LineDelimited, WriterBuilder};
use bytes::Bytes;
use quarry_common::QuarryError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::CoordinatorError;

pub(super) fn json_error(e: impl std::fmt::Display) -> QuarryError {
    CoordinatorError::encode("JSON", e).into()
}

fn arrow_error(e: impl std::fmt::Display) -> QuarryError {
    CoordinatorError::encode("Arrow IPC", e).into()
}

/// A column of a result or a table.
#[derive(Serialize, ToSchema)]
pub(super) struct Column {
    name: String,
    /// The Arrow type, as Arrow spells it (`Int64`, `Utf8`, `Timestamp(µs, None)`).
    #[serde(rename = "type")]
    data_type: String,
}

/// Column names and types, for JSON results.
pub(super) fn columns(schema: &Schema) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
        })
        .collect()
}

/// [`columns`] as JSON text, for the head of a streamed body.
pub(super) fn columns_json(schema: &Schema) -> Result<String, QuarryError> {
    serde_json::to_string(&columns(schema)).map_err(json_error)
}

/// One JSON object per row, newline-terminated.
pub(super) fn ndjson(batch: &RecordBatch) -> Result<Vec<u8>, QuarryError> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::new());
    writer
        .write(batch)
        .and_then(|_| writer.finish())
        .map_err(json_error)?;
    Ok(writer.into_inner())
}

/// How JSON results spell a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum RowFormat {
    /// `{"name": value, ...}`: handy, but of columns sharing a name only one survives.
    #[default]
    Objects,
    /// `[value, ...]` in the order of `columns`: every column, whatever its name.
    Arrays,
}

/// Rows as comma-separated JSON objects or arrays (the inside of a JSON array). `first`
/// says whether no row came before this batch.
pub(super) fn json_rows(
    batch: &RecordBatch,
    first: bool,
    format: RowFormat,
) -> Result<Vec<u8>, QuarryError> {
    if format == RowFormat::Arrays {
        return json_arrays(batch, first);
    }
    let lines = ndjson(batch)?;
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut need_comma = !first;
    // JSON escapes newlines inside strings, so every raw newline ends a row.
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if need_comma {
            out.push(b',');
        }
        out.extend_from_slice(line);
        need_comma = true;
    }
    Ok(out)
}

/// Rows as arrays of values. arrow-json writes objects only, so the batch is written
/// with its columns named by position and each object read back in that order.
fn json_arrays(batch: &RecordBatch, first: bool) -> Result<Vec<u8>, QuarryError> {
    let fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| f.as_ref().clone().with_name(i.to_string()))
        .collect();
    let positional = RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        batch.columns().to_vec(),
    )
    .map_err(json_error)?;
    let lines = ndjson(&positional)?;
    let width = batch.num_columns();
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut need_comma = !first;
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(json_error)?;
        let row: Vec<serde_json::Value> = (0..width)
            .map(|i| {
                object
                    .remove(&i.to_string())
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        if need_comma {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &row).map_err(json_error)?;
        need_comma = true;
    }
    Ok(out)
}

/// Arrow IPC stream encoding, one chunk per call.
pub(super) struct IpcEncoder {
    writer: StreamWriter<Vec<u8>>,
}

impl IpcEncoder {
    pub(super) fn new(schema: &Schema) -> Result<Self, QuarryError> {
        let writer = StreamWriter::try_new(Vec::new(), schema).map_err(arrow_error)?;
        Ok(IpcEncoder { writer })
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.get_mut()))
    }

    /// The schema message, then whatever the batch adds.
    pub(super) fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, QuarryError> {
        self.writer.write(batch).map_err(arrow_error)?;
        Ok(self.take())
    }

    pub(super) fn start(&mut self) -> Bytes {
        self.take()
    }

    pub(super) fn finish(&mut self) -> Result<Bytes, QuarryError> {
        self.writer.finish().map_err(arrow_error)?;
        Ok(self.take())
    }
}

/// CSV with a header line, one chunk per batch.
pub(super) struct CsvEncoder {
    header: bool,
}

impl CsvEncoder {
    pub(super) fn new() -> Self {
        CsvEncoder { header: true }
    }

    pub(super) fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, QuarryError> {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(self.header)
            .build(Vec::new());
        writer
            .write(batch)
            .map_err(|e| CoordinatorError::encode("CSV", e))?;
        self.header = false;
        Ok(Bytes::from(writer.into_inner()))
    }
}

/// A Parquet file written as it streams: each batch's bytes leave as soon as the writer
/// has them (a row group every [`ROW_GROUP_BYTES`]), the footer at the end.
pub(super) struct ParquetEncoder {
    writer: Option<parquet::arrow::ArrowWriter<Vec<u8>>>,
}

/// How large a row group grows before it is written out.
const ROW_GROUP_BYTES: usize = 32 << 20;

fn parquet_error(e: impl std::fmt::Display) -> QuarryError {
    CoordinatorError::encode("Parquet", e).into()
}

impl ParquetEncoder {
    pub(super) fn new(schema: &Schema) -> Result<Self, QuarryError> {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer = parquet::arrow::ArrowWriter::try_new(
            Vec::new(),
            std::sync::Arc::new(schema.clone()),
            Some(props),
        )
        .map_err(parquet_error)?;
        Ok(ParquetEncoder {
            writer: Some(writer),
        })
    }

    pub(super) fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, QuarryError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| parquet_error("the file is already finished"))?;
        writer.write(batch).map_err(parquet_error)?;
        if writer.in_progress_size() >= ROW_GROUP_BYTES {
            writer.flush().map_err(parquet_error)?;
        }
        // The writer counts what it wrote, not what its sink holds, so what reached the
        // sink may leave now; what it still buffers follows in order.
        Ok(Bytes::from(std::mem::take(writer.inner_mut())))
    }

    pub(super) fn finish(&mut self) -> Result<Bytes, QuarryError> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| parquet_error("the file is already finished"))?;
        Ok(Bytes::from(writer.into_inner().map_err(parquet_error)?))
    }
}
