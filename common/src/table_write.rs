//! Writing a stage's output as files. Every task writes its own partition's rows straight
//! to the target storage, from the executor that runs it: Parquet with zstd, split into
//! hive-style `column=value` folders by the partition columns (DataFusion's `ParquetSink`
//! does the encoding and the splitting). The task answers with one row per file it wrote
//! (path, size, rows, partition values, statistics), which the coordinator turns into one
//! Delta commit once every task has succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, exec_datafusion_err};
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileOutputMode, FileSink, FileSinkConfig};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Map, Value, json};

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

#[derive(Default)]
struct WrittenFiles {
    paths: Vec<String>,
    sizes: Vec<i64>,
    rows: Vec<i64>,
    partition_values: Vec<String>,
    stats: Vec<String>,
}

impl WrittenFiles {
    fn push(
        &mut self,
        path: String,
        size: u64,
        rows: i64,
        values: BTreeMap<String, String>,
        stats: String,
    ) {
        self.paths.push(path);
        self.sizes.push(size as i64);
        self.rows.push(rows);
        self.partition_values
            .push(serde_json::to_string(&values).unwrap_or_else(|_| "{}".to_string()));
        self.stats.push(stats);
    }

    fn into_batch(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.paths)),
            Arc::new(Int64Array::from(self.sizes)),
            Arc::new(Int64Array::from(self.rows)),
            Arc::new(StringArray::from(self.partition_values)),
            Arc::new(StringArray::from(self.stats)),
        ];
        Ok(RecordBatch::try_new(written_files_schema(), columns)?)
    }
}

/// The number of rows the write tasks below it wrote, as one `count` row (what COPY and
/// INSERT answer). Runs where the tasks' answers are gathered.
#[derive(Debug)]
pub struct WrittenRowsExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

/// The one-row answer of a write.
pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl WrittenRowsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        WrittenRowsExec {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for WrittenRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WrittenRowsExec")
    }
}

impl ExecutionPlan for WrittenRowsExec {
    fn name(&self) -> &str {
        "WrittenRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<datafusion::physical_expr::Distribution> {
        vec![datafusion::physical_expr::Distribution::SinglePartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(exec_datafusion_err!("WrittenRowsExec has one input"));
        };
        Ok(Arc::new(WrittenRowsExec::new(Arc::clone(input))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(exec_datafusion_err!("WrittenRowsExec has one partition"));
        }
        let mut input = self.input.execute(0, context)?;
        let count = async move {
            let mut rows = 0u64;
            while let Some(batch) = input.next().await {
                for file in written_files(&batch?)? {
                    rows += file.rows.max(0) as u64;
                }
            }
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(arrow::array::UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(count),
        )))
    }
}

/// One written file, as the coordinator reads it back from a task's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFile {
    pub path: String,
    pub size: i64,
    pub rows: i64,
    pub partition_values: BTreeMap<String, String>,
    pub stats: String,
}

/// The files a batch of `written_files_schema()` rows names.
pub fn written_files(batch: &RecordBatch) -> Result<Vec<WrittenFile>> {
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| exec_datafusion_err!("malformed written-files batch"))
    };
    let number = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| exec_datafusion_err!("malformed written-files batch"))
    };
    let (paths, sizes, rows, values, stats) =
        (text(0)?, number(1)?, number(2)?, text(3)?, text(4)?);
    (0..batch.num_rows())
        .map(|i| {
            Ok(WrittenFile {
                path: paths.value(i).to_string(),
                size: sizes.value(i),
                rows: rows.value(i),
                partition_values: serde_json::from_str(values.value(i))
                    .map_err(|e| exec_datafusion_err!("malformed partition values: {e}"))?,
                stats: stats.value(i).to_string(),
            })
        })
        .collect()
}

/// Longest string kept as a minimum (a prefix is still a lower bound); longer maxima are
/// left out, since a cut maximum would not be an upper bound.
const MAX_STAT_STRING: usize = 32;

/// Delta's per-file statistics from the Parquet footer the writer produced. Written here
/// because deltalake-core keeps its own converter private; only top-level columns of
/// types whose JSON form is unambiguous get minima and maxima.
pub fn delta_stats(metadata: &ParquetMetaData, file_schema: &Schema) -> String {
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();
    let parquet_schema = metadata.file_metadata().schema_descr();
    for field in file_schema.fields() {
        let Ok(converter) = StatisticsConverter::try_new(field.name(), file_schema, parquet_schema)
        else {
            continue;
        };
        let groups = metadata.row_groups().iter();
        if let Ok(nulls) = converter.row_group_null_counts(groups.clone()) {
            let total: u64 = nulls.iter().map(|n| n.unwrap_or(0)).sum();
            null_count.insert(field.name().clone(), json!(total));
        }
        let (Ok(mins), Ok(maxes)) = (
            converter.row_group_mins(groups.clone()),
            converter.row_group_maxes(groups),
        ) else {
            continue;
        };
        if let Some(min) =
            extreme(&mins, std::cmp::Ordering::Less).and_then(|v| stat_json(&v, true))
        {
            min_values.insert(field.name().clone(), min);
        }
        if let Some(max) =
            extreme(&maxes, std::cmp::Ordering::Greater).and_then(|v| stat_json(&v, false))
        {
            max_values.insert(field.name().clone(), max);
        }
    }
    json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    })
    .to_string()
}

/// The smallest (`Less`) or largest (`Greater`) non-null value of per-row-group bounds;
/// None when a row group has no bound (then nothing is known for the file).
fn extreme(values: &ArrayRef, wanted: std::cmp::Ordering) -> Option<ScalarValue> {
    let mut best: Option<ScalarValue> = None;
    for i in 0..values.len() {
        if values.is_null(i) {
            return None;
        }
        let value = ScalarValue::try_from_array(values, i).ok()?;
        best = match best {
            Some(current) if current.partial_cmp(&value)? != wanted.reverse() => Some(current),
            _ => Some(value),
        };
    }
    best
}

fn stat_json(value: &ScalarValue, is_min: bool) -> Option<Value> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => json!(v),
        ScalarValue::Int16(Some(v)) => json!(v),
        ScalarValue::Int32(Some(v)) => json!(v),
        ScalarValue::Int64(Some(v)) => json!(v),
        ScalarValue::Float32(Some(v)) if v.is_finite() => json!(v),
        ScalarValue::Float64(Some(v)) if v.is_finite() => json!(v),
        ScalarValue::Date32(Some(_)) => json!(value.to_string()),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            if s.chars().count() <= MAX_STAT_STRING {
                json!(s)
            } else if is_min {
                json!(s.chars().take(MAX_STAT_STRING).collect::<String>())
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn file_bounds_come_from_every_row_group() {
        let mins: ArrayRef = Arc::new(Int64Array::from(vec![5, 2, 9]));
        assert_eq!(
            extreme(&mins, Ordering::Less),
            Some(ScalarValue::Int64(Some(2)))
        );
        assert_eq!(
            extreme(&mins, Ordering::Greater),
            Some(ScalarValue::Int64(Some(9)))
        );
        let unknown: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None]));
        assert_eq!(extreme(&unknown, Ordering::Less), None);
    }

    #[test]
    fn long_strings_keep_a_safe_bound_only() {
        let long = ScalarValue::Utf8(Some("x".repeat(40)));
        assert_eq!(
            stat_json(&long, true),
            Some(json!("x".repeat(MAX_STAT_STRING)))
        );
        assert_eq!(stat_json(&long, false), None);
        let day = ScalarValue::Date32(Some(19723));
        assert_eq!(stat_json(&day, true), Some(json!("2024-01-01")));
    }
}
