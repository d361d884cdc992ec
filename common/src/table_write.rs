//! Writing a stage's output as files. Every task writes its own partition's rows straight
//! to the target storage, from the executor that runs it: Parquet with zstd, split into
//! hive-style `column=value` folders by the partition columns (DataFusion's `ParquetSink`
//! does the encoding and the splitting). The task answers with one row per file it wrote
//! (path, size, rows, partition values, statistics), which the coordinator turns into one
//! Delta commit once every task has succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::exec_datafusion_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileOutputMode, FileSink, FileSinkConfig};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;

mod stats;
mod written;

pub use stats::delta_stats;
use written::WrittenFiles;
pub use written::{WrittenFile, WrittenRowsExec, count_schema, written_files};

/// Where a write goes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteTarget {
    /// The folder the files go under (a table's root), ending in `/`: `file:///...` or
    /// the `s3://` URL of a registered store.
    pub base_url: String,
    /// Hive-style folder columns, in folder order; they are not stored in the files.
    pub partition_by: Vec<String>,
    /// `parquet`, `csv` or `json`.
    pub format: String,
    /// Parquet compression: `zstd`, `snappy` or `none`.
    pub compression: String,
}

impl WriteTarget {
    /// Parquet with zstd: what tables are written as.
    pub fn parquet(base_url: String, partition_by: Vec<String>) -> Self {
        WriteTarget {
            base_url,
            partition_by,
            format: "parquet".to_string(),
            compression: "zstd".to_string(),
        }
    }

    fn extension(&self) -> String {
        match (self.format.as_str(), self.compression.as_str()) {
            ("parquet", "zstd") => "zstd.parquet".to_string(),
            ("parquet", "snappy") => "snappy.parquet".to_string(),
            (format, _) => format.to_string(),
        }
    }
}

/// The rows a write task answers with: one per file it wrote.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        // Relative to the target's base URL, not percent-encoded.
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        // A JSON object: partition column -> value as text.
        Field::new("partition_values", DataType::Utf8, false),
        // Delta statistics JSON: numRecords, minValues, maxValues, nullCount.
        Field::new("stats", DataType::Utf8, false),
    ]))
}

/// Writes each input partition as files; answers with `written_files_schema()` rows.
#[derive(Debug)]
pub struct FileWriteExec {
    input: Arc<dyn ExecutionPlan>,
    target: WriteTarget,
    /// The rows as they are written (partition columns included): nullability is checked
    /// against it.
    sink_schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl FileWriteExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        target: WriteTarget,
        sink_schema: SchemaRef,
    ) -> Result<Self> {
        for column in &target.partition_by {
            sink_schema.field_with_name(column)?;
        }
        let given = input.schema();
        if given.fields().len() != sink_schema.fields().len() {
            return Err(DataFusionError::Plan(format!(
                "the query gives {} columns and the table has {}",
                given.fields().len(),
                sink_schema.fields().len()
            )));
        }
        for (from, to) in given.fields().iter().zip(sink_schema.fields()) {
            if !arrow::compute::can_cast_types(from.data_type(), to.data_type()) {
                return Err(DataFusionError::Plan(format!(
                    "column '{}' is of type {}, and the query gives {}",
                    to.name(),
                    to.data_type(),
                    from.data_type()
                )));
            }
        }
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(written_files_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(FileWriteExec {
            input,
            target,
            sink_schema,
            properties: Arc::new(properties),
        })
    }

    pub fn target(&self) -> &WriteTarget {
        &self.target
    }

    pub fn sink_schema(&self) -> &SchemaRef {
        &self.sink_schema
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    fn sink_config(&self, base: &ListingTableUrl) -> Result<FileSinkConfig> {
        let partition_cols = self
            .target
            .partition_by
            .iter()
            .map(|name| {
                let field = self.sink_schema.field_with_name(name)?;
                Ok((name.clone(), field.data_type().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileSinkConfig {
            original_url: self.target.base_url.clone(),
            object_store_url: base.object_store(),
            file_group: FileGroup::default(),
            table_paths: vec![base.clone()],
            output_schema: Arc::clone(&self.sink_schema),
            table_partition_cols: partition_cols,
            insert_op: InsertOp::Append,
            keep_partition_by_columns: false,
            file_extension: self.target.extension(),
            file_output_mode: FileOutputMode::Directory,
        })
    }
}

impl DisplayAs for FileWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FileWriteExec: base={}", self.target.base_url)?;
        if !self.target.partition_by.is_empty() {
            write!(
                f,
                ", partition_by=[{}]",
                self.target.partition_by.join(", ")
            )?;
        }
        Ok(())
    }
}

impl ExecutionPlan for FileWriteExec {
    fn name(&self) -> &str {
        "FileWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(exec_datafusion_err!("FileWriteExec has one input"));
        };
        Ok(Arc::new(FileWriteExec::new(
            Arc::clone(input),
            self.target.clone(),
            Arc::clone(&self.sink_schema),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let base = ListingTableUrl::parse(&self.target.base_url)?;
        let config = self.sink_config(&base)?;
        let input = self.input.execute(partition, Arc::clone(&context))?;
        // Rows are numbered per task: with one task, as the statement gave them.
        let task = (self.input.output_partitioning().partition_count() > 1).then_some(partition);
        let checked = check_rows(input, Arc::clone(&self.sink_schema), &self.target, task);
        if self.target.format != "parquet" {
            return plain_files(config, &self.target.format, checked, context);
        }
        let mut options = TableParquetOptions::default();
        options.global.compression = Some(
            match self.target.compression.as_str() {
                "snappy" => "snappy",
                "none" | "uncompressed" => "uncompressed",
                _ => "zstd(3)",
            }
            .to_string(),
        );
        let sink = ParquetSink::new(config, options);
        let partition_by = self.target.partition_by.clone();
        let file_schema = file_schema(&self.sink_schema, &partition_by);
        let write = async move {
            sink.write_all(checked, &context).await?;
            let store = context.runtime_env().object_store(base.object_store())?;
            let mut files = WrittenFiles::default();
            for (path, metadata) in sink.written() {
                let size = store.head(&path).await?.size;
                let relative = relative_path(&base, &path)?;
                let values = partition_values(&base, &path, &partition_by)?;
                files.push(
                    relative,
                    size,
                    metadata.file_metadata().num_rows(),
                    values,
                    delta_stats(&metadata, &file_schema),
                );
            }
            files.into_batch()
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            written_files_schema(),
            futures::stream::once(write),
        )))
    }
}

/// CSV or JSON files (COPY): one answer row with the rows written; nobody commits them.
fn plain_files(
    config: FileSinkConfig,
    format: &str,
    input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    use datafusion::common::config::{CsvOptions, JsonOptions};
    use datafusion::common::file_options::csv_writer::CsvWriterOptions;
    use datafusion::common::file_options::json_writer::JsonWriterOptions;
    use datafusion::datasource::file_format::csv::CsvSink;
    use datafusion::datasource::file_format::json::JsonSink;
    let sink: Arc<dyn FileSink> = match format {
        "csv" => {
            let options = CsvOptions {
                has_header: Some(true),
                ..CsvOptions::default()
            };
            Arc::new(CsvSink::new(config, CsvWriterOptions::try_from(&options)?))
        }
        "json" => Arc::new(JsonSink::new(
            config,
            JsonWriterOptions::try_from(&JsonOptions::default())?,
        )),
        other => return Err(exec_datafusion_err!("cannot write {other} files")),
    };
    let write = async move {
        let rows = FileSink::write_all(sink.as_ref(), input, &context).await?;
        let mut files = WrittenFiles::default();
        files.push(
            String::new(),
            0,
            rows as i64,
            BTreeMap::new(),
            "{}".to_string(),
        );
        files.into_batch()
    };
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        written_files_schema(),
        futures::stream::once(write),
    )))
}

/// The columns stored in the files: all but the folder columns.
fn file_schema(sink_schema: &Schema, partition_by: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        sink_schema
            .fields()
            .iter()
            .filter(|f| !partition_by.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Refuse rows the table cannot hold before they reach a file: a value that does not fit
/// its column's type (a string that is no number, an overflow), a NULL in a NOT NULL
/// column, or in a partition column (a folder cannot name a NULL). Values are cast here,
/// not by the query, so that a refusal can name the column and the row.
fn check_rows(
    input: SendableRecordBatchStream,
    sink_schema: SchemaRef,
    target: &WriteTarget,
    task: Option<usize>,
) -> SendableRecordBatchStream {
    let partition_by = target.partition_by.clone();
    let mut seen = 0usize;
    let schema = Arc::clone(&sink_schema);
    let stream = input.map(move |batch| {
        let batch = batch?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (column, field) in batch.columns().iter().zip(schema.fields()) {
            let column = conform(column, field, |row| row_name(seen + row, task))?;
            let is_partition = partition_by.contains(field.name());
            if (!field.is_nullable() || is_partition) && column.null_count() > 0 {
                let row = (0..column.len()).find(|r| column.is_null(*r)).unwrap_or(0);
                let what = if is_partition {
                    "partition column"
                } else {
                    "NOT NULL column"
                };
                return Err(DataFusionError::Execution(format!(
                    "{} has a NULL in {what} '{}'; nothing was written",
                    row_name(seen + row, task),
                    field.name()
                )));
            }
            columns.push(column);
        }
        seen += batch.num_rows();
        RecordBatch::try_new(Arc::clone(&schema), columns).map_err(DataFusionError::from)
    });
    Box::pin(RecordBatchStreamAdapter::new(sink_schema, stream))
}

/// "row 3", or "row 3 of write task 1" where several tasks write.
fn row_name(index: usize, task: Option<usize>) -> String {
    match task {
        None => format!("row {}", index + 1),
        Some(task) => format!("row {} of write task {task}", index + 1),
    }
}

/// `column` as `field`'s type; a value that does not fit is refused with its row, as
/// `row_name` names the batch's row.
fn conform(
    column: &ArrayRef,
    field: &Field,
    row_name: impl Fn(usize) -> String,
) -> Result<ArrayRef> {
    use arrow::compute::{CastOptions, cast_with_options};
    if column.data_type() == field.data_type() {
        return Ok(Arc::clone(column));
    }
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    match cast_with_options(column, field.data_type(), &strict) {
        Ok(cast) => Ok(cast),
        Err(e) => {
            // The lenient cast turns what does not fit into NULL: the first such row is
            // the one to name.
            let lenient = cast_with_options(column, field.data_type(), &CastOptions::default())?;
            let row = (0..column.len()).find(|r| column.is_valid(*r) && lenient.is_null(*r));
            let Some(row) = row else {
                return Err(DataFusionError::Execution(format!(
                    "column '{}': {e}; nothing was written",
                    field.name()
                )));
            };
            let value = arrow::util::display::array_value_to_string(column, row)
                .unwrap_or_else(|_| "the value".to_string());
            Err(DataFusionError::Execution(format!(
                "{}: {value} does not fit column '{}' of type {}; nothing was written",
                row_name(row),
                field.name(),
                field.data_type()
            )))
        }
    }
}

fn relative_path(base: &ListingTableUrl, path: &object_store::path::Path) -> Result<String> {
    let parts: Vec<String> = base
        .strip_prefix(path)
        .ok_or_else(|| exec_datafusion_err!("written file {path} is outside {base}"))?
        .map(decode)
        .collect();
    Ok(parts.join("/"))
}

fn partition_values(
    base: &ListingTableUrl,
    path: &object_store::path::Path,
    partition_by: &[String],
) -> Result<BTreeMap<String, String>> {
    if partition_by.is_empty() {
        return Ok(BTreeMap::new());
    }
    let values = datafusion::datasource::listing::helpers::parse_partitions_for_path(
        base,
        path,
        partition_by.iter().map(String::as_str),
    )
    .ok_or_else(|| exec_datafusion_err!("written file {path} is not in a partition folder"))?;
    Ok(partition_by
        .iter()
        .cloned()
        .zip(values.into_iter().map(|v| v.into_owned()))
        .collect())
}

fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}
