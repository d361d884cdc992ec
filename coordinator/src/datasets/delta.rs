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
use quarry_common::QuarryError;
use quarry_common::table_write::{
    FileWriteExec, WriteTarget, count_schema, written_files, written_files_schema,
};
use url::Url;

use crate::error::CoordinatorError;

/// The `format` of a managed table's catalog record.
pub const DELTA_FORMAT: &str = "delta";

fn delta_error(e: deltalake_core::DeltaTableError) -> QuarryError {
    CoordinatorError::from(e).into()
}

/// The types a Delta table stores, for a query's result schema: views of strings and
/// binaries become plain ones, timestamps microseconds, dictionaries their values.
pub fn storable_schema(schema: &Schema) -> Result<SchemaRef, QuarryError> {
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
pub fn log_store(runtime: &RuntimeEnv, url: &Url) -> Result<LogStoreRef, QuarryError> {
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
pub fn folder_url(location: &str) -> Result<Url, QuarryError> {
    let text = if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    };
    Url::parse(&text).map_err(|e| QuarryError::invalid(format!("bad table location {text}: {e}")))
}

/// Create an empty table (version 0) with this schema and partitioning.
pub async fn create_table(
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
pub async fn existing_table(
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

/// Delete everything under a managed table's folder (DROP TABLE).
pub async fn purge(runtime: &RuntimeEnv, url: &Url) -> Result<usize, QuarryError> {
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

/// One lock per table, so commits to it are serialized, and a count of the writes in
/// flight, so files of failed attempts are swept only when no write still adds files.
#[derive(Debug, Default)]
pub struct Commits {
    tables: Mutex<HashMap<String, Arc<TableWrites>>>,
}

#[derive(Debug, Default)]
struct TableWrites {
    /// Held while committing; keeps the latest snapshot, brought up to date from the
    /// log before each commit (only this process commits, so that reads a few files).
    commit: tokio::sync::Mutex<Option<DeltaTableState>>,
    /// Writes planned and not finished. A sweep holds this lock while it runs, so no
    /// write is planned (and writes files) during one.
    in_flight: tokio::sync::Mutex<usize>,
}

impl Commits {
    fn table(&self, url: &Url) -> Arc<TableWrites> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tables.entry(url.to_string()).or_default())
    }
}

/// A planned write: while it lives, the table's unreferenced files may be its own.
struct WriteInFlight {
    writes: Arc<TableWrites>,
    log_store: LogStoreRef,
}

impl WriteInFlight {
    async fn begin(commits: &Commits, url: &Url, log_store: LogStoreRef) -> Self {
        let writes = commits.table(url);
        *writes.in_flight.lock().await += 1;
        WriteInFlight { writes, log_store }
    }
}

impl fmt::Debug for WriteInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteInFlight")
    }
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        let (writes, log_store) = (Arc::clone(&self.writes), Arc::clone(&self.log_store));
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            if let Ok(mut count) = writes.in_flight.try_lock() {
                *count = count.saturating_sub(1);
            }
            return;
        };
        handle.spawn(async move {
            let mut count = writes.in_flight.lock().await;
            *count = count.saturating_sub(1);
            if *count > 0 {
                return;
            }
            // The last write of the table ended: what no version references now is left
            // from failed attempts. New writes wait for the sweep (the lock is held).
            match sweep_unreferenced(&log_store, &writes).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed files no version references"),
                Err(e) => tracing::warn!("could not sweep a table's unreferenced files: {e}"),
            }
            drop(count);
        });
    }
}

/// The cached latest snapshot brought up to date, or read afresh.
async fn refreshed(
    log_store: &LogStoreRef,
    latest: &mut Option<DeltaTableState>,
) -> Result<DeltaTableState, QuarryError> {
    match latest.take() {
        Some(mut state) => {
            state
                .update(log_store.as_ref(), None)
                .await
                .map_err(delta_error)?;
            Ok(state)
        }
        None => DeltaTableState::try_new(log_store.as_ref(), None)
            .await
            .map_err(delta_error),
    }
}

/// Remove data files no version of the table references (left by failed, retried or
/// cancelled write attempts). Removed-but-retained files (time travel) stay.
async fn sweep_unreferenced(
    log_store: &LogStoreRef,
    writes: &TableWrites,
) -> Result<usize, QuarryError> {
    let mut latest = writes.commit.lock().await;
    let state = refreshed(log_store, &mut latest).await?;
    let state = &*latest.insert(state);
    let mut referenced: HashSet<String> = state
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    let tombstones: Vec<String> = state
        .all_tombstones(log_store.as_ref())
        .map_ok(|t| t.path().into_owned())
        .try_collect()
        .await
        .map_err(delta_error)?;
    referenced.extend(tombstones);
    let store = log_store.object_store(None);
    let files: Vec<Path> = store
        .list(None)
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| QuarryError::from(DataFusionError::from(e)))?;
    let mut removed = 0;
    for file in files {
        let text = decode_path(&file);
        if text.starts_with("_delta_log/") || referenced.contains(&text) {
            continue;
        }
        if store.delete(&file).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn decode_path(path: &Path) -> String {
    path.parts()
        .map(|p| {
            percent_encoding::percent_decode_str(p.as_ref())
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A managed table as DataFusion sees it.
#[derive(Debug)]
pub struct DeltaTable {
    url: Url,
    /// What DataFusion is told: every column nullable, so a NULL bound for a NOT NULL
    /// column reaches the write's own check, which names the column and the row.
    schema: SchemaRef,
    /// The columns as declared, NOT NULL included: what a write checks.
    declared: SchemaRef,
    partition_by: Vec<String>,
    commits: Arc<Commits>,
    /// Read this version instead of the latest (time travel); such a table is read-only.
    version: Option<u64>,
}

impl DeltaTable {
    /// The same table as of `version`.
    pub fn at_version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    fn refuse_writes_to_old_versions(&self) -> DfResult<()> {
        match self.version {
            Some(v) => Err(DataFusionError::Plan(format!(
                "version {v} of a table is read-only; write to the table itself"
            ))),
            None => Ok(()),
        }
    }

    pub fn new(
        url: Url,
        schema: SchemaRef,
        partition_by: Vec<String>,
        commits: Arc<Commits>,
    ) -> Self {
        let relaxed = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        DeltaTable {
            url,
            schema: relaxed,
            declared: schema,
            partition_by,
            commits,
            version: None,
        }
    }

    fn partition_fields(&self) -> DfResult<Vec<Field>> {
        self.partition_by
            .iter()
            .map(|name| Ok(self.schema.field_with_name(name)?.clone()))
            .collect()
    }

    fn file_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .filter(|f| !self.partition_by.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ))
    }

    /// The latest version's files that pass the partition filters among `filters`.
    async fn files(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<SnapshotFile>> {
        let log_store = log_store(state.runtime_env(), &self.url)?;
        let snapshot = DeltaTableState::try_new(log_store.as_ref(), self.version)
            .await
            .map_err(|e| DataFusionError::from(delta_error(e)))?;
        let partition_fields = self.partition_fields()?;
        let names: Vec<&str> = self.partition_by.iter().map(String::as_str).collect();
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let partition_schema = DFSchema::try_from(Schema::new(partition_fields.clone()))?;
        let table_prefix = Path::from_url_path(self.url.path())?;
        let mut files = Vec::new();
        for file in snapshot.log_data().iter() {
            let raw = file.path().into_owned();
            let location = Path::parse(format!("{table_prefix}/{raw}"))
                .unwrap_or_else(|_| Path::from(format!("{table_prefix}/{raw}")));
            let mut partitioned = PartitionedFile::new(location.to_string(), file.size() as u64);
            partitioned.object_meta.location = location;
            let values = file.partition_values_map();
            partitioned.partition_values = partition_fields
                .iter()
                .map(|field| match values.get(field.name()).cloned().flatten() {
                    Some(text) => ScalarValue::try_from_string(text, field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<DfResult<Vec<_>>>()?;
            let records = file
                .stats()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_i64()));
            if let Some(kept) =
                filter_partitioned_file(partitioned, &partition_filters, &partition_schema)?
            {
                files.push(SnapshotFile {
                    file: kept,
                    replaced: ReplacedFile {
                        path: raw,
                        partition_values: values,
                        size: file.size(),
                        records,
                    },
                });
            }
        }
        Ok(files)
    }

    /// OPTIMIZE: the small files of each partition that has several, written again as
    /// one file per partition (per task), committed as one version with no data change.
    pub async fn optimize_plan(&self, state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.refuse_writes_to_old_versions()?;
        let log_store = log_store(state.runtime_env(), &self.url)?;
        let mut by_partition: BTreeMap<String, Vec<SnapshotFile>> = BTreeMap::new();
        for file in self.files(state, &[]).await? {
            if file.replaced.size >= OPTIMIZE_TARGET_BYTES {
                continue;
            }
            let key = format!("{:?}", file.file.partition_values);
            by_partition.entry(key).or_default().push(file);
        }
        let small: Vec<SnapshotFile> = by_partition
            .into_values()
            .filter(|files| files.len() > 1)
            .flatten()
            .collect();
        let replaced: Vec<ReplacedFile> = small.iter().map(|f| f.replaced.clone()).collect();
        let rewritten: Arc<dyn ExecutionPlan> = if small.is_empty() {
            Arc::new(EmptyExec::new(written_files_schema()))
        } else {
            let all: Vec<usize> = (0..self.schema.fields().len()).collect();
            let files = small.into_iter().map(|f| f.file).collect();
            let groups = partition_groups(files, state.config().target_partitions());
            let scan = self.scan_groups(groups, &all, None)?;
            let write = FileWriteExec::new(
                scan,
                WriteTarget::parquet(self.url.to_string(), self.partition_by.clone()),
                Arc::clone(&self.declared),
            )?;
            Arc::new(CoalescePartitionsExec::new(Arc::new(write)))
        };
        let in_flight =
            Arc::new(WriteInFlight::begin(&self.commits, &self.url, Arc::clone(&log_store)).await);
        Ok(Arc::new(DeltaCommitExec::new(
            rewritten,
            log_store,
            self.commits.table(&self.url),
            in_flight,
            CommitMode::Replace {
                files: replaced,
                predicate: None,
            },
            self.partition_by.clone(),
        )))
    }

    /// A Parquet scan of `files`, split across `target_partitions` groups.
    fn scan_plan(
        &self,
        state: &dyn Session,
        files: Vec<PartitionedFile>,
        columns: &[usize],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if files.is_empty() {
            let projected = Arc::new(self.schema.project(columns)?);
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let groups = balanced_groups(files, state.config().target_partitions());
        self.scan_groups(groups, columns, limit)
    }

    fn scan_groups(
        &self,
        groups: Vec<FileGroup>,
        columns: &[usize],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table_schema = TableSchema::builder(self.file_schema())
            .with_table_partition_cols(
                self.partition_fields()?
                    .into_iter()
                    .map(Arc::new)
                    .collect::<Vec<_>>(),
            )
            .build();
        let source = Arc::new(ParquetSource::new(table_schema));
        let store_url = ObjectStoreUrl::parse(&self.url[..url::Position::BeforePath])?;
        let config = FileScanConfigBuilder::new(store_url, source)
            .with_file_groups(groups)
            .with_projection_indices(Some(columns.iter().map(|c| self.scan_index(*c)).collect()))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    /// Index of each table column in the scan's order: file columns, then partitions.
    fn scan_index(&self, column: usize) -> usize {
        let name = self.schema.field(column).name();
        let files = self.file_schema();
        match self.partition_by.iter().position(|p| p == name) {
            Some(k) => files.fields().len() + k,
            None => files.index_of(name).unwrap_or(0),
        }
    }
}

#[async_trait]
impl TableProvider for DeltaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let names: Vec<&str> = self.partition_by.iter().map(String::as_str).collect();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.files(state, filters).await?;
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        self.scan_plan(
            state,
            files.into_iter().map(|f| f.file).collect(),
            &columns,
            limit,
        )
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.refuse_writes_to_old_versions()?;
        let log_store = log_store(state.runtime_env(), &self.url)?;
        // Files that may hold matching rows: those the partition filters keep.
        let candidates = self.files(state, &filters).await?;
        let names: Vec<&str> = self.partition_by.iter().map(String::as_str).collect();
        let whole_files = filters
            .iter()
            .all(|f| !names.is_empty() && expr_applicable_for_cols(&names, f));
        let predicate = datafusion::logical_expr::utils::conjunction(filters.clone());
        let replaced: Vec<ReplacedFile> = candidates.iter().map(|f| f.replaced.clone()).collect();
        // Rows of candidate files that do not match are written again; when every filter
        // is on partition columns, every row of a candidate matches and nothing is.
        let kept: Arc<dyn ExecutionPlan> = match (&predicate, whole_files) {
            (Some(predicate), false) if !candidates.is_empty() => {
                let all: Vec<usize> = (0..self.schema.fields().len()).collect();
                let scan = self.scan_plan(
                    state,
                    candidates.into_iter().map(|f| f.file).collect(),
                    &all,
                    None,
                )?;
                let keep = Expr::IsNotTrue(Box::new(predicate.clone()));
                let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                let keep = state.create_physical_expr(keep, &df_schema)?;
                let filtered = Arc::new(FilterExec::try_new(keep, scan)?);
                let write = FileWriteExec::new(
                    filtered,
                    WriteTarget::parquet(self.url.to_string(), self.partition_by.clone()),
                    Arc::clone(&self.declared),
                )?;
                Arc::new(CoalescePartitionsExec::new(Arc::new(write)))
            }
            _ => Arc::new(EmptyExec::new(written_files_schema())),
        };
        let in_flight =
            Arc::new(WriteInFlight::begin(&self.commits, &self.url, Arc::clone(&log_store)).await);
        let predicate = predicate
            .map(|p| p.to_string())
            .unwrap_or_else(|| "true".into());
        Ok(Arc::new(DeltaCommitExec::new(
            kept,
            log_store,
            self.commits.table(&self.url),
            in_flight,
            CommitMode::Replace {
                files: replaced,
                predicate: Some(predicate),
            },
            self.partition_by.clone(),
        )))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.refuse_writes_to_old_versions()?;
        if insert_op == InsertOp::Replace {
            return Err(DataFusionError::NotImplemented(
                "INSERT OR REPLACE is not supported; use INSERT OVERWRITE".to_string(),
            ));
        }
        let log_store = log_store(state.runtime_env(), &self.url)?;
        let write = FileWriteExec::new(
            input,
            WriteTarget::parquet(self.url.to_string(), self.partition_by.clone()),
            Arc::clone(&self.declared),
        )?;
        let files = Arc::new(CoalescePartitionsExec::new(Arc::new(write)));
        let in_flight =
            Arc::new(WriteInFlight::begin(&self.commits, &self.url, Arc::clone(&log_store)).await);
        Ok(Arc::new(DeltaCommitExec::new(
            files,
            log_store,
            Arc::clone(&self.commits.table(&self.url)),
            in_flight,
            if insert_op == InsertOp::Overwrite {
                CommitMode::Overwrite
            } else {
                CommitMode::Append
            },
            self.partition_by.clone(),
        )))
    }
}

/// A file of a snapshot, as a scan reads it and as a commit removes it.
struct SnapshotFile {
    file: PartitionedFile,
    replaced: ReplacedFile,
}

#[derive(Debug, Clone)]
struct ReplacedFile {
    /// Relative to the table, not encoded.
    path: String,
    partition_values: HashMap<String, Option<String>>,
    size: i64,
    /// From the file's statistics, when it has them.
    records: Option<i64>,
}

/// What a commit does besides adding the written files.
#[derive(Debug, Clone)]
enum CommitMode {
    Append,
    /// Remove every file of the latest version (INSERT OVERWRITE).
    Overwrite,
    /// Remove these files, which must still be in the latest version: DELETE (with its
    /// predicate), or OPTIMIZE (None: the same rows in fewer files, no data change).
    Replace {
        files: Vec<ReplacedFile>,
        predicate: Option<String>,
    },
}

/// Files below this are compacted by OPTIMIZE.
const OPTIMIZE_TARGET_BYTES: i64 = 128 * 1024 * 1024;

/// Whole partitions onto `n` groups, largest first onto the lightest, so each task
/// writes each of its partitions as one file.
fn partition_groups(files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let mut partitions: BTreeMap<String, (u64, Vec<PartitionedFile>)> = BTreeMap::new();
    for file in files {
        let entry = partitions
            .entry(format!("{:?}", file.partition_values))
            .or_default();
        entry.0 += file.object_meta.size;
        entry.1.push(file);
    }
    let mut partitions: Vec<(u64, Vec<PartitionedFile>)> = partitions.into_values().collect();
    partitions.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let n = n.max(1).min(partitions.len().max(1));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for (size, files) in partitions {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(total, _)| *total) {
            lightest.0 += size;
            lightest.1.extend(files);
        }
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// VACUUM: delete files the latest version does not reference and that were removed (or
/// written and never committed) longer than `retain` ago. Writes wait while it runs.
pub async fn vacuum(
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

/// Spread files over `n` groups, largest first onto the lightest group.
fn balanced_groups(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let n = n.max(1).min(files.len().max(1));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for file in files {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(size, _)| *size) {
            lightest.0 += file.object_meta.size;
            lightest.1.push(file);
        }
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// On the coordinator, above the write tasks: commits the files they wrote as one Delta
/// version once all have succeeded, and answers the number of rows written.
pub struct DeltaCommitExec {
    input: Arc<dyn ExecutionPlan>,
    log_store: LogStoreRef,
    writes: Arc<TableWrites>,
    in_flight: Arc<WriteInFlight>,
    mode: CommitMode,
    partition_by: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DeltaCommitExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaCommitExec")
            .field("mode", &self.mode)
            .finish()
    }
}

impl DeltaCommitExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        log_store: LogStoreRef,
        writes: Arc<TableWrites>,
        in_flight: Arc<WriteInFlight>,
        mode: CommitMode,
        partition_by: Vec<String>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DeltaCommitExec {
            input,
            log_store,
            writes,
            in_flight,
            mode,
            partition_by,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for DeltaCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = match &self.mode {
            CommitMode::Append => "append",
            CommitMode::Overwrite => "overwrite",
            CommitMode::Replace {
                predicate: Some(_), ..
            } => "delete",
            CommitMode::Replace {
                predicate: None, ..
            } => "optimize",
        };
        write!(
            f,
            "DeltaCommitExec: {mode}, table={}",
            self.log_store.root_url()
        )
    }
}

impl ExecutionPlan for DeltaCommitExec {
    fn name(&self) -> &str {
        "DeltaCommitExec"
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(exec_datafusion_err!("DeltaCommitExec has one input"));
        };
        Ok(Arc::new(DeltaCommitExec::new(
            Arc::clone(input),
            Arc::clone(&self.log_store),
            Arc::clone(&self.writes),
            Arc::clone(&self.in_flight),
            self.mode.clone(),
            self.partition_by.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(exec_datafusion_err!("DeltaCommitExec has one partition"));
        }
        let input = self.input.execute(0, context)?;
        let log_store = Arc::clone(&self.log_store);
        let writes = Arc::clone(&self.writes);
        // The write stays in flight (its files safe from the sweep) until it commits.
        let in_flight = Arc::clone(&self.in_flight);
        let mode = self.mode.clone();
        let data_change = !matches!(
            mode,
            CommitMode::Replace {
                predicate: None,
                ..
            }
        );
        let partition_by = self.partition_by.clone();
        let commit = async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let mut adds = Vec::new();
            let mut rows = 0u64;
            let now = chrono_millis();
            for batch in &batches {
                for file in written_files(batch)? {
                    rows += file.rows.max(0) as u64;
                    adds.push(add_action(file, now, data_change));
                }
            }
            // A DELETE answers the rows it removed: those of the files it replaced, less
            // the ones it wrote again.
            match &mode {
                CommitMode::Replace {
                    files,
                    predicate: Some(_),
                } => {
                    let removed: i64 = files.iter().map(|f| f.records.unwrap_or(0)).sum();
                    rows = (removed.max(0) as u64).saturating_sub(rows);
                }
                // OPTIMIZE answers the files it compacted.
                CommitMode::Replace {
                    files,
                    predicate: None,
                } => rows = files.len() as u64,
                _ => {}
            }
            let mut latest = writes.commit.lock().await;
            commit_files(&log_store, adds, &mode, partition_by, &mut latest)
                .await
                .map_err(DataFusionError::from)?;
            drop(latest);
            drop(in_flight);
            let batch = RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?;
            Ok(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(commit),
        )))
    }
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn add_action(
    file: quarry_common::table_write::WrittenFile,
    now: i64,
    data_change: bool,
) -> Action {
    let partition_values: HashMap<String, Option<String>> = file
        .partition_values
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    Action::Add(Add {
        path: file.path,
        partition_values,
        size: file.size,
        modification_time: now,
        data_change,
        stats: Some(file.stats),
        ..Add::default()
    })
}

fn remove_action(file: ReplacedFile, now: i64, data_change: bool) -> Action {
    Action::Remove(Remove {
        path: file.path,
        data_change,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        partition_values: Some(file.partition_values),
        size: Some(file.size),
        ..Remove::default()
    })
}

/// Commit one version: the new files, and the removals `mode` asks for. Callers hold
/// the table's commit lock.
async fn commit_files(
    log_store: &LogStoreRef,
    adds: Vec<Action>,
    mode: &CommitMode,
    partition_by: Vec<String>,
    latest: &mut Option<DeltaTableState>,
) -> Result<u64, QuarryError> {
    let state = refreshed(log_store, latest).await?;
    let mut actions = adds;
    let now = chrono_millis();
    let partition_by = (!partition_by.is_empty()).then_some(partition_by);
    let operation = match mode {
        CommitMode::Append => DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by,
            predicate: None,
        },
        CommitMode::Overwrite => {
            for file in state.log_data().iter() {
                let replaced = ReplacedFile {
                    path: file.path().into_owned(),
                    partition_values: file.partition_values_map(),
                    size: file.size(),
                    records: None,
                };
                actions.push(remove_action(replaced, now, true));
            }
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by,
                predicate: None,
            }
        }
        CommitMode::Replace { files, predicate } => {
            let active: HashSet<String> = state
                .log_data()
                .iter()
                .map(|f| f.path().into_owned())
                .collect();
            if let Some(gone) = files.iter().find(|f| !active.contains(&f.path)) {
                return Err(QuarryError::new(
                    quarry_common::ErrorCode::Conflict,
                    format!(
                        "the table changed while the statement ran (file {} was removed); run it again",
                        gone.path
                    ),
                ));
            }
            let data_change = predicate.is_some();
            actions.extend(
                files
                    .iter()
                    .cloned()
                    .map(|f| remove_action(f, now, data_change)),
            );
            match predicate {
                Some(predicate) => DeltaOperation::Delete {
                    predicate: Some(predicate.clone()),
                },
                None => DeltaOperation::Optimize {
                    predicate: None,
                    target_size: OPTIMIZE_TARGET_BYTES,
                },
            }
        }
    };
    if actions.is_empty() {
        let version = state.version();
        *latest = Some(state);
        return Ok(version);
    }
    // A checkpoint every 100 versions (Delta's default interval) keeps reading the latest
    // version cheap after many small commits; the log itself is kept for time travel.
    let properties = CommitProperties::default()
        .with_create_checkpoint(true)
        .with_cleanup_expired_logs(Some(false));
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(&state), Arc::clone(log_store), operation)
        .await
        .map_err(delta_error)?;
    *latest = Some(finalized.snapshot());
    Ok(finalized.version())
}

/// The version `as_of` names: checked to exist, or the latest committed at or before a
/// timestamp.
pub async fn resolve_version(
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
pub async fn history(runtime: &RuntimeEnv, url: &Url) -> Result<RecordBatch, QuarryError> {
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

/// The files of the latest version and their partition values (for tests and tools).
pub async fn active_files(
    runtime: &RuntimeEnv,
    url: &Url,
) -> Result<Vec<(String, BTreeMap<String, Option<String>>)>, QuarryError> {
    let log_store = log_store(runtime, url)?;
    let state = DeltaTableState::try_new(log_store.as_ref(), None)
        .await
        .map_err(delta_error)?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| {
            (
                f.path().into_owned(),
                f.partition_values_map().into_iter().collect(),
            )
        })
        .collect())
}
