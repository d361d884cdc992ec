//! Committing what write tasks wrote: one lock per table, the latest snapshot kept
//! between commits, `DeltaCommitExec` on the coordinator, and the sweep of files no
//! version references.

use super::*;
use crate::tasks::Tasks;

/// One lock per table, so commits to it are serialized, and a count of the writes in
/// flight, so files of failed attempts are swept only when no write still adds files.
#[derive(Debug)]
pub struct Commits {
    tables: Mutex<HashMap<String, Arc<TableWrites>>>,
    /// Where the sweep after a table's last write runs.
    tasks: Tasks,
}

#[derive(Debug, Default)]
pub(super) struct TableWrites {
    /// Held while committing; keeps the latest snapshot, brought up to date from the
    /// log before each commit (only this process commits, so that reads a few files).
    commit: tokio::sync::Mutex<Option<DeltaTableState>>,
    /// Writes planned and not finished. A sweep holds this lock while it runs, so no
    /// write is planned (and writes files) during one.
    pub(super) in_flight: tokio::sync::Mutex<usize>,
}

impl Commits {
    pub fn new(tasks: Tasks) -> Self {
        Commits {
            tables: Mutex::default(),
            tasks,
        }
    }

    pub(super) fn table(&self, url: &Url) -> Arc<TableWrites> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tables.entry(url.to_string()).or_default())
    }
}

/// A planned write: while it lives, the table's unreferenced files may be its own.
pub(super) struct WriteInFlight {
    writes: Arc<TableWrites>,
    log_store: LogStoreRef,
    tasks: Tasks,
}

impl WriteInFlight {
    pub(super) async fn begin(commits: &Commits, url: &Url, log_store: LogStoreRef) -> Self {
        let writes = commits.table(url);
        *writes.in_flight.lock().await += 1;
        WriteInFlight {
            writes,
            log_store,
            tasks: commits.tasks.clone(),
        }
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
        self.tasks.spawn(async move {
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

#[derive(Debug, Clone)]
pub(super) struct ReplacedFile {
    /// Relative to the table, not encoded.
    pub(super) path: String,
    pub(super) partition_values: HashMap<String, Option<String>>,
    pub(super) size: i64,
    /// From the file's statistics, when it has them.
    pub(super) records: Option<i64>,
}

/// What a commit does besides adding the written files.
#[derive(Debug, Clone)]
pub(super) enum CommitMode {
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

/// On the coordinator, above the write tasks: commits the files they wrote as one Delta
/// version once all have succeeded, and answers the number of rows written.
pub(crate) struct DeltaCommitExec {
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
    pub(super) fn new(
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
            let now = quarry_catalog::now_ms() as i64;
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
#[tracing::instrument(name = "commit", level = "info", skip_all, fields(files = adds.len()))]
async fn commit_files(
    log_store: &LogStoreRef,
    adds: Vec<Action>,
    mode: &CommitMode,
    partition_by: Vec<String>,
    latest: &mut Option<DeltaTableState>,
) -> Result<u64, QuarryError> {
    let state = refreshed(log_store, latest).await?;
    let mut actions = adds;
    let now = quarry_catalog::now_ms() as i64;
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
