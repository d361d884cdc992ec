//! Refresh jobs: plan a materialization's write (full, or incremental over new files),
//! record what it made, the scheduler that refreshes by policy, and the sweep of
//! materializations nobody points at.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::TableReference;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::logical_expr::dml::InsertOp;
use futures::{FutureExt, TryStreamExt};
use quarry_catalog::{
    DatasetDefinition, DatasetRecord, InputSnapshot, Materialization, ReflectionKind,
    ReflectionRecord,
};
use quarry_common::{ErrorCode, QuarryError};

use crate::datasets::delta::{self, DELTA_FORMAT, DeltaTable};
use crate::datasets::schema_codec::{decode_schema, encode_schema};
use crate::engine::Engine;
use crate::error::catalog_error;
use crate::reflections::{self as reflection};
use quarry_catalog::now_ms;

/// How long an old materialization stays at least after a new one replaced it (for
/// queries planning with it right then); it stays longer while planned queries live.
const OLD_MATERIALIZATION_KEPT: Duration = Duration::from_secs(5);

impl Engine {
    /// Start a refresh of `name` as a job of `user`; the running one if there is one.
    pub(crate) fn start_refresh(
        self: &Arc<Self>,
        name: &str,
        user: &str,
    ) -> Result<String, QuarryError> {
        let job = {
            let mut running = self
                .datasets
                .reflection_state()
                .refreshing
                .lock()
                .map_err(|_| QuarryError::unavailable("the refresh registry is unavailable"))?;
            if let Some(id) = running.get(name) {
                return Ok(id.clone());
            }
            let job = self
                .jobs
                .create(&format!("REFRESH REFLECTION {name}"), user, "");
            running.insert(name.to_string(), job.id.clone());
            job
        };
        let id = job.id.clone();
        let engine = Arc::clone(self);
        let name = name.to_string();
        self.tasks.spawn(async move {
            match engine.plan_refresh(&name, &job.id).await {
                Ok(planned) => {
                    job.spool.set_schema(planned.outcome.schema());
                    let then = engine.after_refresh(
                        name,
                        planned.materialization,
                        planned.folder,
                        planned.appends,
                        planned.definition,
                    );
                    engine.start_then(job, planned.outcome, Some(then));
                }
                Err(e) => {
                    engine.refresh_failed(&name, &e);
                    job.fail(&e);
                }
            }
        });
        Ok(id)
    }

    async fn plan_refresh(&self, name: &str, job_id: &str) -> Result<PlannedRefresh, QuarryError> {
        let record = self
            .datasets
            .catalog()
            .get_reflection(name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?
            .record;
        let dataset = self
            .datasets
            .catalog()
            .get_dataset(&record.schema, &record.dataset)
            .map_err(catalog_error)?
            .ok_or_else(|| {
                QuarryError::not_found(format!(
                    "{}.{} no longer exists",
                    record.schema, record.dataset
                ))
            })?
            .record;
        let provider = self.datasets.provider_of(dataset.clone()).await?;
        let columns = provider.schema();
        if encode_schema(&columns)? != record.dataset_columns {
            return Err(QuarryError::invalid(format!(
                "the columns of {}.{} changed since reflection {name} was defined",
                record.schema, record.dataset
            )));
        }
        let started = now_ms();
        let inputs = self.input_snapshot(&dataset).await?.unwrap_or_default();
        // The refresh reads the base data as it is: all of it, and no reflections.
        let state = self.datasets.session_state(self.base_config.clone(), None);
        let query = reflection::materialization_sql(&record, &columns);
        let plan = state.create_logical_plan(&query).await?;
        let runtime = Arc::clone(self.datasets.runtime());
        let (method, previous) = refresh_method(&record, &dataset, &inputs);
        let incremental = previous.is_some();
        // Only new files are read. A raw reflection appends their rows to the current
        // table as a new version; an aggregation reflection groups their partial
        // aggregates with the current rows into a new table.
        let appends = incremental && matches!(record.kind, ReflectionKind::Raw { .. });
        let (folder, table_schema, plan) = match previous {
            Some(previous) if appends => (
                delta::folder_url(&previous.location)?,
                decode_schema(&previous.columns)?,
                plan,
            ),
            _ => {
                let table_schema = delta::storable_schema(plan.schema().as_arrow())?;
                let folder = self.datasets.materialization_folder(name)?;
                delta::create_table(&runtime, &folder, name, &table_schema, &record.partition_by)
                    .await?;
                let plan = match previous {
                    Some(previous) => {
                        let current = DeltaTable::new(
                            delta::folder_url(&previous.location)?,
                            decode_schema(&previous.columns)?,
                            record.partition_by.clone(),
                            Arc::clone(self.datasets.commits()),
                        );
                        let rows = LogicalPlanBuilder::scan(
                            TableReference::bare(format!("__current_{name}")),
                            provider_as_source(Arc::new(current)),
                            None,
                        )?
                        .build()?;
                        reflection::merge::regrouped(&record, rows, plan)?
                    }
                    None => plan,
                };
                (folder, table_schema, plan)
            }
        };
        let table = DeltaTable::new(
            folder.clone(),
            Arc::clone(&table_schema),
            record.partition_by.clone(),
            Arc::clone(self.datasets.commits()),
        );
        let insert = LogicalPlanBuilder::insert_into(
            plan,
            TableReference::bare(format!("__reflection_{name}")),
            provider_as_source(Arc::new(table)),
            InsertOp::Append,
        )?
        .build()?;
        let planned = async {
            let mut physical = state.create_physical_plan(&insert).await?;
            if let Some(previous) = &record.materialization
                && incremental
            {
                let old: HashSet<&str> = previous.inputs.iter().map(|i| i.path.as_str()).collect();
                physical = only_files(physical, |path| !old.contains(path))?;
            }
            if !record.localsort_by.is_empty() {
                physical = sorted_files(physical, &record.localsort_by)?;
            }
            self.plan_physical(&state, physical)
        };
        let outcome = match planned.await {
            Ok(outcome) => outcome,
            Err(e) => {
                if !appends {
                    let _ = delta::purge(&runtime, &folder).await;
                }
                return Err(e);
            }
        };
        Ok(PlannedRefresh {
            outcome,
            folder: folder.clone(),
            appends,
            definition: definition_of(&record),
            materialization: Materialization {
                location: folder.to_string(),
                job_id: job_id.to_string(),
                data_as_of_ms: started,
                finished_ms: 0,
                duration_ms: 0,
                rows: 0,
                bytes: 0,
                files: 0,
                method: if incremental { "INCREMENTAL" } else { "FULL" }.to_string(),
                reason: if incremental && !appends {
                    format!("{method}; grouped again with the current rows")
                } else {
                    method
                },
                inputs,
                columns: encode_schema(&table_schema)?,
            },
        })
    }

    /// What a refresh does when its write ends: record the new materialization (the
    /// old one is removed a while later), or the failure (the old one stays).
    fn after_refresh(
        self: &Arc<Self>,
        name: String,
        mut materialization: Materialization,
        folder: url::Url,
        appends: bool,
        definition: Definition,
    ) -> crate::engine::Then {
        let engine = Arc::clone(self);
        Box::new(move |result: Result<(), QuarryError>| {
            async move {
                let runtime = Arc::clone(engine.datasets.runtime());
                let recorded = match result {
                    Ok(()) => {
                        match delta::totals(&runtime, &folder).await {
                            Ok((_, files, bytes, rows)) => {
                                materialization.files = files;
                                materialization.bytes = bytes;
                                materialization.rows = rows;
                            }
                            Err(e) => tracing::warn!(%name, "cannot count a materialization: {e}"),
                        }
                        let finished = now_ms();
                        materialization.finished_ms = finished;
                        materialization.duration_ms =
                            finished.saturating_sub(materialization.data_as_of_ms);
                        let (mut old, mut redefined) = (None, false);
                        let updated = engine.catalog.update_reflection(&name, |r| {
                            // Redefined while it refreshed: this data is of the old
                            // definition and never serves.
                            redefined = definition_of(r) != definition;
                            if !redefined {
                                old = r.materialization.clone();
                                r.materialization = Some(materialization.clone());
                                r.last_error = None;
                            }
                        });
                        match updated {
                            Ok(Some(_)) if redefined => {
                                if !appends {
                                    let _ = delta::purge(&runtime, &folder).await;
                                }
                                Ok(())
                            }
                            Ok(Some(_)) => {
                                engine.datasets.reflection_state().succeeded(&name);
                                crate::metrics::refresh_ended(true, materialization.duration_ms);
                                // An append keeps its table; a new table replaces the old.
                                if let Some(old) =
                                    old.and_then(|m| delta::folder_url(&m.location).ok())
                                    && old != folder
                                {
                                    engine.purge_later(old);
                                }
                                Ok(())
                            }
                            // Dropped while it refreshed.
                            Ok(None) => {
                                let _ = delta::purge(&runtime, &folder).await;
                                Ok(())
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = &recorded {
                    if e.code != ErrorCode::Cancelled {
                        engine.refresh_failed(&name, e);
                    }
                    // A failed append leaves no committed file; its own files are swept.
                    if !appends {
                        let _ = delta::purge(&runtime, &folder).await;
                    }
                }
                if let Ok(mut running) = engine.datasets.reflection_state().refreshing.lock() {
                    running.remove(&name);
                }
                recorded
            }
            .boxed()
        })
    }

    fn refresh_failed(&self, name: &str, error: &QuarryError) {
        tracing::warn!(reflection = name, "refresh failed: {}", error.message);
        crate::metrics::refresh_ended(false, 0);
        self.datasets.reflection_state().failed(name, now_ms());
        if let Ok(mut running) = self.datasets.reflection_state().refreshing.lock() {
            running.remove(name);
        }
        let message = error.message.clone();
        if let Err(e) = self
            .catalog
            .update_reflection(name, |r| r.last_error = Some(message.clone()))
        {
            tracing::warn!(reflection = name, "cannot record a failed refresh: {e}");
        }
    }

    /// Refresh reflections when their policy says so, retry failed ones with backoff,
    /// and build those that have no materialization (a coordinator that stopped mid-way
    /// leaves them so), until `stop`.
    pub fn spawn_refresh_scheduler(self: &Arc<Self>, every: Duration) {
        let engine = Arc::clone(self);
        let stop = self.tasks.stopping();
        self.tasks.spawn(async move {
            // Refreshes that a stopped coordinator left half-written are removed first.
            engine.sweep_materializations().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                engine.refresh_due();
            }
        })
    }

    /// Remove every materialization folder no reflection record points at.
    async fn sweep_materializations(&self) {
        let Ok(records) = self.datasets.catalog().list_reflections() else {
            return;
        };
        let runtime = Arc::clone(self.datasets.runtime());
        for record in records.into_iter().map(|s| s.record) {
            let Ok(folder) = self.datasets.materialization_folder(&record.name) else {
                continue;
            };
            let Ok(parent) = folder.join("..") else {
                continue;
            };
            let current = record.materialization.as_ref().map(|m| m.location.clone());
            let Ok(store_url) = datafusion::execution::object_store::ObjectStoreUrl::parse(
                &parent[..url::Position::BeforePath],
            ) else {
                continue;
            };
            let Ok(store) = runtime.object_store(&store_url) else {
                continue;
            };
            let Ok(prefix) = object_store::path::Path::from_url_path(parent.path()) else {
                continue;
            };
            let Ok(listing) = store.list_with_delimiter(Some(&prefix)).await else {
                continue;
            };
            for folder in listing.common_prefixes {
                let Ok(url) = parent.join(&format!("{}/", folder.filename().unwrap_or_default()))
                else {
                    continue;
                };
                if current.as_deref() != Some(url.as_str())
                    && !self.datasets.reflection_state().is_refreshing(&record.name)
                {
                    tracing::info!(%url, "removing an unfinished materialization");
                    if let Err(e) = delta::purge(&runtime, &url).await {
                        tracing::warn!(%url, "cannot remove an unfinished materialization: {e}");
                    }
                }
            }
        }
    }

    fn refresh_due(self: &Arc<Self>) {
        let Ok(records) = self.datasets.catalog().list_reflections() else {
            return;
        };
        let state = self.datasets.reflection_state();
        let now = now_ms();
        for record in records.into_iter().map(|s| s.record) {
            if !record.enabled || state.is_refreshing(&record.name) {
                continue;
            }
            let due = match (&record.last_error, &record.materialization) {
                (Some(_), _) => state.retry_at(&record.name).is_none_or(|at| now >= at),
                (None, None) => true,
                (None, Some(m)) => record
                    .refresh_every_ms
                    .is_some_and(|every| now >= m.data_as_of_ms.saturating_add(every)),
            };
            if due && let Err(e) = self.start_refresh(&record.name, "quarry") {
                tracing::warn!(reflection = %record.name, "cannot start a refresh: {e}");
            }
        }
    }

    pub(crate) fn purge_later(&self, folder: url::Url) {
        let runtime = Arc::clone(self.datasets.runtime());
        let state = Arc::clone(self.datasets.reflection_state());
        let stop = self.tasks.stopping();
        self.tasks.spawn(async move {
            // A coordinator that stops first leaves the folder to the next start's sweep.
            let kept = async {
                tokio::time::sleep(OLD_MATERIALIZATION_KEPT).await;
                while state.is_read(folder.as_str()) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = kept => {}
            }
            if let Err(e) = delta::purge(&runtime, &folder).await {
                tracing::warn!(%folder, "cannot remove an old materialization: {e}");
            }
        });
    }

    /// The files (with sizes and modification times) of a table over files, or the
    /// version of a managed table; None for a view.
    pub(super) async fn input_snapshot(
        &self,
        dataset: &DatasetRecord,
    ) -> Result<Option<Vec<InputSnapshot>>, QuarryError> {
        let DatasetDefinition::Table(table) = &dataset.definition else {
            return Ok(None);
        };
        let runtime = self.datasets.runtime();
        if table.format == DELTA_FORMAT {
            let url = delta::folder_url(&table.location)?;
            let (version, files, bytes, _) = delta::totals(runtime, &url).await?;
            return Ok(Some(vec![InputSnapshot {
                path: format!("{}@v{version}", table.location),
                size: bytes.max(files),
                stamp: version,
            }]));
        }
        let url = url::Url::parse(&table.location)
            .map_err(|e| QuarryError::invalid(format!("{}: {e}", table.location)))?;
        let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            &url[..url::Position::BeforePath],
        )?;
        let store = runtime.object_store(&store_url)?;
        let prefix = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| QuarryError::invalid(format!("{}: {e}", table.location)))?;
        let mut files: Vec<InputSnapshot> = store
            .list(Some(&prefix))
            .map_ok(|meta| InputSnapshot {
                path: meta.location.to_string(),
                size: meta.size,
                stamp: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
            })
            .try_collect()
            .await
            .map_err(|e| QuarryError::from(datafusion::error::DataFusionError::from(e)))?;
        files.sort();
        Ok(Some(files))
    }
}

/// A refresh ready to run: its write, where it writes, and the record it makes.
struct PlannedRefresh {
    outcome: crate::engine::Outcome,
    folder: url::Url,
    /// Appending to the current materialization (whose folder must survive a failure).
    appends: bool,
    materialization: Materialization,
    /// The definition it materializes.
    definition: Definition,
}

/// How to refresh, and why: the current materialization to append to when the dataset
/// only gained files since it was computed; None (a full refresh) otherwise.
fn refresh_method<'r>(
    record: &'r ReflectionRecord,
    dataset: &DatasetRecord,
    inputs: &[InputSnapshot],
) -> (String, Option<&'r Materialization>) {
    let full = |why: &str| (format!("full: {why}"), None);
    let Some(previous) = &record.materialization else {
        return full("no materialization yet");
    };
    if record.last_error.is_some() {
        return full("the last refresh failed");
    }
    match &dataset.definition {
        DatasetDefinition::View(_) => return full("the dataset is a view"),
        DatasetDefinition::Table(t) if t.format == DELTA_FORMAT => {
            return full("the dataset is a managed table");
        }
        DatasetDefinition::Table(_) => {}
    }
    if previous.inputs.is_empty() {
        return full("the last materialization recorded no inputs");
    }
    let now: HashSet<&InputSnapshot> = inputs.iter().collect();
    if let Some(changed) = previous.inputs.iter().find(|i| !now.contains(i)) {
        return full(&format!("{} changed or was removed", changed.path));
    }
    let added = inputs.len() - previous.inputs.len();
    if added == 0 {
        return full("no file was added");
    }
    (
        format!("incremental: {added} files added, none changed or removed"),
        Some(previous),
    )
}

/// `plan` with each write task sorting its rows by `columns` first (LOCALSORT BY): every
/// file it writes is in that order, which keeps row groups' bounds narrow for pruning.
fn sorted_files(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    columns: &[String],
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, QuarryError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_plan::sorts::sort::SortExec;
    use quarry_common::table_write::FileWriteExec;
    let rewritten = plan.transform_up(|node| {
        let Some(write) = node.downcast_ref::<FileWriteExec>() else {
            return Ok(Transformed::no(node));
        };
        let input = Arc::clone(write.input());
        let schema = input.schema();
        let keys = columns
            .iter()
            .map(|c| {
                let column = datafusion::physical_expr::expressions::col(c, &schema)?;
                Ok(PhysicalSortExpr::new_default(column))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let Some(ordering) = LexOrdering::new(keys) else {
            return Ok(Transformed::no(node));
        };
        let sorted = SortExec::new(ordering, input).with_preserve_partitioning(true);
        let write = FileWriteExec::new(
            Arc::new(sorted),
            write.target().clone(),
            Arc::clone(write.sink_schema()),
        )?;
        Ok(Transformed::yes(
            Arc::new(write) as Arc<dyn datafusion::physical_plan::ExecutionPlan>
        ))
    })?;
    Ok(rewritten.data)
}

/// `plan` with its file scans reading only the files `keep` accepts.
fn only_files(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    keep: impl Fn(&str) -> bool,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, QuarryError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
    use datafusion::datasource::source::DataSourceExec;
    let rewritten = plan.transform_up(|node| {
        let Some(source) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let groups: Vec<FileGroup> = scan
            .file_groups
            .iter()
            .map(|group| {
                FileGroup::new(
                    group
                        .files()
                        .iter()
                        .filter(|f| keep(f.object_meta.location.as_ref()))
                        .cloned()
                        .collect(),
                )
            })
            .filter(|group| !group.is_empty())
            .collect();
        let config = FileScanConfigBuilder::from(scan.clone())
            .with_file_groups(groups)
            .build();
        Ok(Transformed::yes(DataSourceExec::from_data_source(config)
            as Arc<dyn datafusion::physical_plan::ExecutionPlan>))
    })?;
    Ok(rewritten.data)
}

/// What a materialization is of: the reflection's kind, partitioning and sort.
type Definition = (ReflectionKind, Vec<String>, Vec<String>);

fn definition_of(record: &ReflectionRecord) -> Definition {
    (
        record.kind.clone(),
        record.partition_by.clone(),
        record.localsort_by.clone(),
    )
}
