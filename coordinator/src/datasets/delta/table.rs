//! A managed table as DataFusion sees it: scans of one snapshot's files, and the plans
//! of INSERT, DELETE and OPTIMIZE (write tasks below a commit).

use super::commit::{CommitMode, ReplacedFile, WriteInFlight};
use super::stats::{FileStats, may_match};
use super::*;
use crate::planner::small_plans::KnownRows;

/// A managed table as DataFusion sees it.
#[derive(Debug)]
pub(crate) struct DeltaTable {
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
    /// The folder of the table's Delta log: every commit adds a file there.
    pub(crate) fn log_folder(&self) -> DfResult<(ObjectStoreUrl, Path)> {
        let store = ObjectStoreUrl::parse(&self.url[..url::Position::BeforePath])?;
        let log = Path::from_url_path(self.url.path())?.join("_delta_log");
        Ok((store, log))
    }

    /// The same table as of `version`.
    pub(crate) fn at_version(mut self, version: u64) -> Self {
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

    pub(crate) fn new(
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

    /// The files of the table's version that may hold rows passing `filters`: those in
    /// partitions the partition filters keep, whose statistics do not rule them out.
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
        let mut stats_of = Vec::new();
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
            let stats = FileStats::parse(file.stats().as_deref());
            if let Some(rows) = stats.rows() {
                // For where the plan runs; DataFusion's statistics are left alone.
                partitioned = partitioned.with_extension(KnownRows(rows));
            }
            if let Some(kept) =
                filter_partitioned_file(partitioned, &partition_filters, &partition_schema)?
            {
                files.push(SnapshotFile {
                    file: kept,
                    replaced: ReplacedFile {
                        path: raw,
                        partition_values: values,
                        size: file.size(),
                        records: stats.rows().and_then(|n| i64::try_from(n).ok()),
                    },
                });
                stats_of.push(stats);
            }
        }
        // Then the files whose logged bounds rule out every filter match.
        let keep = may_match(state, &self.schema, filters, &stats_of)?;
        Ok(files
            .into_iter()
            .zip(keep)
            .filter_map(|(file, keep)| keep.then_some(file))
            .collect())
    }

    /// OPTIMIZE: the small files of each partition that has several, written again as
    /// one file per partition (per task), committed as one version with no data change.
    pub(crate) async fn optimize_plan(
        &self,
        state: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.refuse_writes_to_old_versions()?;
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
            self.write_files(scan)?
        };
        let mode = CommitMode::Replace {
            files: replaced,
            predicate: None,
        };
        self.commit_plan(state, rewritten, mode).await
    }

    /// Write tasks for `input`'s rows (zstd Parquet in the table's folders), gathered.
    fn write_files(&self, input: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let write = FileWriteExec::new(
            input,
            WriteTarget::parquet(self.url.to_string(), self.partition_by.clone()),
            Arc::clone(&self.declared),
        )?;
        Ok(Arc::new(CoalescePartitionsExec::new(Arc::new(write))))
    }

    /// The commit of what `files` (the gathered write tasks) wrote, as `mode` says. The
    /// write is in flight from here on, so the sweep leaves its files alone.
    async fn commit_plan(
        &self,
        state: &dyn Session,
        files: Arc<dyn ExecutionPlan>,
        mode: CommitMode,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let log_store = log_store(state.runtime_env(), &self.url)?;
        let in_flight =
            Arc::new(WriteInFlight::begin(&self.commits, &self.url, Arc::clone(&log_store)).await);
        Ok(Arc::new(DeltaCommitExec::new(
            files,
            log_store,
            self.commits.table(&self.url),
            in_flight,
            mode,
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
                self.write_files(filtered)?
            }
            _ => Arc::new(EmptyExec::new(written_files_schema())),
        };
        let predicate = predicate
            .map(|p| p.to_string())
            .unwrap_or_else(|| "true".into());
        let mode = CommitMode::Replace {
            files: replaced,
            predicate: Some(predicate),
        };
        self.commit_plan(state, kept, mode).await
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
        let files = self.write_files(input)?;
        let mode = if insert_op == InsertOp::Overwrite {
            CommitMode::Overwrite
        } else {
            CommitMode::Append
        };
        self.commit_plan(state, files, mode).await
    }
}

/// A file of a snapshot, as a scan reads it and as a commit removes it.
struct SnapshotFile {
    file: PartitionedFile,
    replaced: ReplacedFile,
}

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
