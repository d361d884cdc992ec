//! Managed tables: Delta Lake tables Quarry writes, so Spark, DuckDB, Polars, Trino and the
//! `deltalake` package read them too. deltalake-core keeps the log (create, commit, replay
//! a version); it is given Quarry's own object stores, so a table in the warehouse or in a
//! writable S3 source uses the same clients, credentials and cluster file access as every
//! scan. The coordinator is the only committer of a table and serializes its commits
//! itself (one lock per table), so two writers in one Quarry never race; a second engine
//! committing to the same table is not supported.
//!
//! Reads build DataFusion's Parquet scan over the files of one snapshot (so they split
//! across executors like any scan); filters on partition columns prune whole files first.
//! Writes are `FileWriteExec` tasks on the executors (`quarry_common::table_write`); the
//! `DeltaCommitExec` above them, on the coordinator, commits the files they report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, ScalarValue, exec_datafusion_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{Distribution, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove, StructType};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::state::DeltaTableState;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use quarry_catalog::{DatasetDefinition, DatasetRecord};
use quarry_common::QuarryError;
use quarry_common::table_write::{
    FileWriteExec, WriteTarget, count_schema, written_files, written_files_schema,
};
use url::Url;

use crate::error::CoordinatorError;

mod commit;
mod stats;
mod table;

pub(crate) use commit::{Commits, DeltaCommitExec};
pub(crate) use table::DeltaTable;

/// The `format` of a managed table's catalog record.
pub(crate) const DELTA_FORMAT: &str = "delta";

/// The option that marks a Delta table as Quarry's own (written, and purged on DROP).
pub(crate) const MANAGED: &str = "managed";

/// The folder of a managed table's record, or None for tables over files (and Delta
/// tables Quarry only reads).
pub(crate) fn managed_folder(record: &DatasetRecord) -> Option<url::Url> {
    match &record.definition {
        DatasetDefinition::Table(table)
            if table.format == DELTA_FORMAT
                && table.options.get(MANAGED).is_some_and(|v| v == "true") =>
        {
            folder_url(&table.location).ok()
        }
        _ => None,
    }
}

fn delta_error(e: deltalake_core::DeltaTableError) -> QuarryError {
    CoordinatorError::from(e).into()
}

/// The types a Delta table stores, for a query's result schema: views of strings and
/// binaries become plain ones, timestamps microseconds, dictionaries their values.
pub(crate) fn storable_schema(schema: &Schema) -> Result<SchemaRef, QuarryError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = storable_type(f.data_type()).ok_or_else(|| {
                QuarryError::invalid(format!(
                    "column '{}' has type {}, which a table cannot store",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(Field::new(f.name(), data_type, f.is_nullable()))
        })
        .collect::<Result<Vec<_>, QuarryError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

fn storable_type(data_type: &DataType) -> Option<DataType> {
    use arrow::datatypes::TimeUnit;
    Some(match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, value) => storable_type(value)?,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Null => DataType::Utf8,
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Decimal128(_, _) => data_type.clone(),
        _ => return None,
    })
}

/// The log store of the table at `url` (a folder URL), over the store the runtime has
/// registered for it.
pub(crate) fn log_store(runtime: &RuntimeEnv, url: &Url) -> Result<LogStoreRef, QuarryError> {
    let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    let root = runtime.object_store(&store_url)?;
    let prefix = Path::from_url_path(url.path()).map_err(|e| {
        QuarryError::invalid(format!("table location {url} is not a valid path: {e}"))
    })?;
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(Arc::clone(&root), prefix));
    Ok(default_logstore(
        prefixed,
        root,
        url,
        &StorageConfig::default(),
    ))
}

/// A folder URL: with the trailing `/` DataFusion and the log store expect.
pub(crate) fn folder_url(location: &str) -> Result<Url, QuarryError> {
    let text = if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    };
    Url::parse(&text).map_err(|e| QuarryError::invalid(format!("bad table location {text}: {e}")))
}

/// Create an empty table (version 0) with this schema and partitioning.
pub(crate) async fn create_table(
    runtime: &RuntimeEnv,
    url: &Url,
    name: &str,
    schema: &Schema,
    partition_by: &[String],
) -> Result<(), QuarryError> {
    for column in partition_by {
        if schema.field_with_name(column).is_err() {
            return Err(QuarryError::invalid(format!(
                "PARTITION BY names '{column}', which is not a column of the table"
            )));
        }
    }
    if !partition_by.is_empty() && partition_by.len() == schema.fields().len() {
        return Err(QuarryError::invalid(
            "a table needs at least one column that is not a partition column",
        ));
    }
    let kernel: StructType = schema
        .try_into_kernel()
        .map_err(|e| QuarryError::invalid(format!("the table's columns: {e}")))?;
    CreateBuilder::new()
        .with_log_store(log_store(runtime, url)?)
        .with_table_name(name)
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(partition_by.iter().cloned())
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(delta_error)?;
    Ok(())
}

/// The columns and partition columns of an existing Delta table (one Quarry registers
/// but does not manage).
pub(crate) async fn existing_table(
    runtime: &RuntimeEnv,
    url: &Url,
) -> Result<(SchemaRef, Vec<String>), QuarryError> {
    let state = DeltaTableState::try_new(log_store(runtime, url)?.as_ref(), None)
        .await
        .map_err(|e| {
            QuarryError::from(CoordinatorError::from(e))
                .context(format!("{url} is not a readable Delta table"))
        })?;
    let protocol = state.protocol();
    let readable = protocol
        .reader_features()
        .map(|features| features.is_empty())
        .unwrap_or(true);
    if !readable || protocol.min_reader_version() > 1 {
        return Err(QuarryError::new(
            quarry_common::ErrorCode::Unimplemented,
            format!(
                "{url} needs Delta reader features Quarry does not read yet (reader version {}, features {:?})",
                protocol.min_reader_version(),
                protocol.reader_features()
            ),
        ));
    }
    let schema = storable_schema(state.snapshot().arrow_schema().as_ref())?;
    Ok((schema, state.metadata().partition_columns().to_vec()))
}

/// What a table's latest version holds: (version, files, bytes, rows).
pub(crate) async fn totals(
    runtime: &RuntimeEnv,
    url: &Url,
) -> Result<(u64, u64, u64, u64), QuarryError> {
    let state = DeltaTableState::try_new(log_store(runtime, url)?.as_ref(), None)
        .await
        .map_err(delta_error)?;
    let (mut files, mut bytes, mut rows) = (0u64, 0u64, 0u64);
    for file in state.log_data().iter() {
        files += 1;
        bytes += u64::try_from(file.size()).unwrap_or(0);
        rows += file
            .stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s.get("numRecords").and_then(|n| n.as_u64()))
            .unwrap_or(0);
    }
    Ok((state.version(), files, bytes, rows))
}

/// Delete everything under a managed table's folder (DROP TABLE).
pub(crate) async fn purge(runtime: &RuntimeEnv, url: &Url) -> Result<usize, QuarryError> {
    let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    let store = runtime.object_store(&store_url)?;
    let prefix = Path::from_url_path(url.path())
        .map_err(|e| QuarryError::invalid(format!("bad table location {url}: {e}")))?;
    let files: Vec<Path> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| QuarryError::from(DataFusionError::from(e)))?;
    for file in &files {
        store
            .delete(file)
            .await
            .map_err(|e| QuarryError::from(DataFusionError::from(e)))?;
    }
    Ok(files.len())
}

/// Files below this are compacted by OPTIMIZE.
const OPTIMIZE_TARGET_BYTES: i64 = 128 * 1024 * 1024;

/// VACUUM: delete files the latest version does not reference and that were removed (or
/// written and never committed) longer than `retain` ago. Writes wait while it runs.
pub(crate) async fn vacuum(
    runtime: &RuntimeEnv,
    commits: &Commits,
    url: &Url,
    retain: std::time::Duration,
) -> Result<usize, QuarryError> {
    use deltalake_core::operations::vacuum::VacuumMode;
    let writes = commits.table(url);
    let in_flight = writes.in_flight.lock().await;
    let mut table = deltalake_core::DeltaTable::new(log_store(runtime, url)?);
    table.load().await.map_err(delta_error)?;
    let retain = chrono::Duration::from_std(retain)
        .map_err(|e| QuarryError::invalid(format!("retention: {e}")))?;
    // Files of a write under way are not yet in the log: only tombstones then.
    let mode = if *in_flight == 0 {
        VacuumMode::Full
    } else {
        VacuumMode::Lite
    };
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retain)
        .with_enforce_retention_duration(false)
        .with_mode(mode)
        .await
        .map_err(delta_error)?;
    drop(in_flight);
    Ok(metrics.files_deleted.len())
}

/// The version `as_of` names: checked to exist, or the latest committed at or before a
/// timestamp.
pub(crate) async fn resolve_version(
    runtime: &RuntimeEnv,
    url: &Url,
    as_of: crate::sql::time_travel::AsOf,
) -> Result<u64, QuarryError> {
    use crate::sql::time_travel::AsOf;
    let mut table = deltalake_core::DeltaTable::new(log_store(runtime, url)?);
    match as_of {
        AsOf::Version(version) => {
            table.load_version(version).await.map_err(|e| {
                QuarryError::not_found(format!("the table has no version {version}: {e}"))
            })?;
            Ok(version)
        }
        AsOf::Timestamp(text) => {
            let at = parse_timestamp(&text)?;
            table.load_with_datetime(at).await.map_err(|e| {
                QuarryError::not_found(format!("the table has no version at {text}: {e}"))
            })?;
            table.version().ok_or_else(|| {
                QuarryError::not_found(format!("the table has no version at {text}"))
            })
        }
    }
}

/// `2026-12-01 10:00:00[.fff][+02:00|Z]` or a date; without a zone it is UTC.
fn parse_timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>, QuarryError> {
    let value = ScalarValue::try_from_string(
        text.to_string(),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(|e| QuarryError::invalid(format!("'{text}' is not a timestamp: {e}")))?;
    match value {
        ScalarValue::TimestampMicrosecond(Some(micros), _) => {
            chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| QuarryError::invalid(format!("'{text}' is out of range")))
        }
        _ => Err(QuarryError::invalid(format!("'{text}' is not a timestamp"))),
    }
}

/// The table's versions, oldest first: when, what operation, files and rows added and
/// files removed (`DESCRIBE HISTORY`).
pub(crate) async fn history(runtime: &RuntimeEnv, url: &Url) -> Result<RecordBatch, QuarryError> {
    use arrow::array::{StringArray, TimestampMillisecondArray};
    let log_store = log_store(runtime, url)?;
    let latest = log_store.get_latest_version(0).await.map_err(delta_error)?;
    let (mut versions, mut times, mut operations) = (Vec::new(), Vec::new(), Vec::new());
    let (mut added, mut removed, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for version in 0..=latest {
        // Versions before a checkpoint may have been cleaned up; they are not listed.
        let Some(bytes) = log_store
            .read_commit_entry(version)
            .await
            .map_err(delta_error)?
        else {
            continue;
        };
        let (mut time, mut operation) = (None, None);
        let (mut files_added, mut files_removed, mut rows_added) = (0u64, 0u64, 0i64);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(info) = action.get("commitInfo") {
                time = info.get("timestamp").and_then(|t| t.as_i64());
                operation = info
                    .get("operation")
                    .and_then(|o| o.as_str())
                    .map(str::to_string);
            } else if let Some(add) = action.get("add") {
                files_added += 1;
                rows_added += add
                    .get("stats")
                    .and_then(|s| s.as_str())
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .and_then(|s| s.get("numRecords").and_then(|n| n.as_i64()))
                    .unwrap_or(0);
            } else if action.get("remove").is_some() {
                files_removed += 1;
            }
        }
        versions.push(version);
        times.push(time);
        operations.push(operation);
        added.push(files_added);
        removed.push(files_removed);
        rows.push(rows_added);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("files_added", DataType::UInt64, false),
        Field::new("files_removed", DataType::UInt64, false),
        Field::new("rows_added", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from(versions)),
            Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")),
            Arc::new(StringArray::from(operations)),
            Arc::new(UInt64Array::from(added)),
            Arc::new(UInt64Array::from(removed)),
            Arc::new(arrow::array::Int64Array::from(rows)),
        ],
    )
    .map_err(CoordinatorError::batch("a table history"))
    .map_err(QuarryError::from)
}
