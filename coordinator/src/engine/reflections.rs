//! Reflections in the engine: their statements, refresh jobs (a distributed write of the
//! materialization's query into a Delta table in the reflection store), and the rules
//! that let a query's plan use them (`crate::reflections::matching`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::common::TableReference;
use datafusion::datasource::provider_as_source;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use futures::{FutureExt, TryStreamExt};
use quarry_catalog::{
    CatalogError, DatasetDefinition, DatasetRecord, InputSnapshot, Materialization, Privilege,
    ReflectionKind, ReflectionRecord, Stored,
};
use quarry_common::{ErrorCode, QuarryError};

use super::catalog_ops::catalog_error;
use super::ddl::reference_of;
use super::session::{ReflectionOptions, quarry_options};
use super::{Engine, Session, message_batch};
use crate::cluster::now_ms;
use crate::datasets::delta::{self, DELTA_FORMAT, DeltaTable};
use crate::datasets::schema_codec::{decode_schema, encode_schema};
use crate::datasets::source_of;
use crate::reflections::matching::{AggregateRule, Candidate, RawRule, Report};
use crate::reflections::{self as reflection, DEFAULT_GRACE_MS, DEFAULT_REFRESH_MS};
use crate::sql::reflections::{ReflectionDefinition, ReflectionStatement};

tokio::task_local! {
    static PLANNING: PlanningReports;
}

/// The reflection reports of the statements a job plans, for its record.
#[derive(Clone, Default)]
pub(super) struct PlanningReports(Arc<std::sync::Mutex<Vec<Arc<Report>>>>);

impl PlanningReports {
    /// Run `planning` with its reports collected here.
    pub(super) async fn scope<F: std::future::Future>(self, planning: F) -> F::Output {
        PLANNING.scope(self, planning).await
    }

    fn note(report: &Arc<Report>) {
        let _ = PLANNING.try_with(|reports| {
            if let Ok(mut reports) = reports.0.lock() {
                reports.push(Arc::clone(report));
            }
        });
    }

    /// Every considered reflection as `name: verdict`, and when the oldest data used was
    /// read; None when no reflection was considered.
    pub(super) fn summary(
        &self,
        state: &crate::reflections::ReflectionState,
    ) -> Option<(Vec<String>, Option<u64>)> {
        let reports = self.0.lock().ok()?;
        if reports.is_empty() {
            return None;
        }
        let entries: Vec<_> = reports.iter().flat_map(|r| r.entries()).collect();
        state.count(&entries);
        let data_as_of = entries
            .iter()
            .filter(|c| c.chosen)
            .map(|c| c.data_as_of_ms)
            .min();
        let lines = entries
            .into_iter()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Some((lines, data_as_of))
    }
}

/// How long an old materialization stays after a new one replaced it, for queries
/// still reading it.
const OLD_MATERIALIZATION_KEPT: Duration = Duration::from_secs(120);

impl Engine {
    pub(crate) async fn run_reflection(
        self: &Arc<Self>,
        session: &Arc<Session>,
        statement: ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError> {
        match statement {
            ReflectionStatement::Create {
                dataset,
                definition,
            } => {
                let (schema, name) = self.altered_dataset(session, &dataset)?;
                let created = self.create_reflection(&schema, &name, definition).await?;
                let job = self.start_refresh(&created, &session.user)?;
                message_batch(
                    "result",
                    &[format!(
                        "Reflection {created} created on {schema}.{name}; refresh job {job}"
                    )],
                )
            }
            ReflectionStatement::Drop { dataset, name } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let stored = self.reflection_on(&name, &schema, &table)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, Some(stored.version))
                    .map_err(catalog_error)?;
                self.purge_materializations(&stored.record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
            ReflectionStatement::Refresh { dataset } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let mut lines = Vec::new();
                for stored in self.reflections_of(&schema, &table)? {
                    let job = self.start_refresh(&stored.record.name, &session.user)?;
                    lines.push(format!("{}: refresh job {job}", stored.record.name));
                }
                if lines.is_empty() {
                    lines.push(format!("{schema}.{table} has no reflections"));
                }
                message_batch("result", &lines)
            }
            ReflectionStatement::Acceleration {
                dataset,
                raw,
                enable,
            } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let mut changed = 0;
                for stored in self.reflections_of(&schema, &table)? {
                    if matches!(stored.record.kind, ReflectionKind::Raw { .. }) == raw {
                        self.update_reflection(&stored.record.name, |r| r.enabled = enable)?;
                        changed += 1;
                    }
                }
                let kind = if raw { "raw" } else { "aggregate" };
                let state = if enable { "enabled" } else { "disabled" };
                message_batch(
                    "result",
                    &[format!(
                        "{kind} acceleration {state} on {schema}.{table} ({changed} reflections)"
                    )],
                )
            }
            ReflectionStatement::Policy {
                dataset,
                every,
                grace,
            } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let every = every
                    .map(|e| super::parse_duration("REFRESH EVERY", &e))
                    .transpose()?
                    .map(|d| d.as_millis() as u64);
                let grace = grace
                    .map(|g| super::parse_duration("GRACE", &g))
                    .transpose()?
                    .map(|d| d.as_millis() as u64);
                for stored in self.reflections_of(&schema, &table)? {
                    self.update_reflection(&stored.record.name, |r| {
                        r.refresh_every_ms = every;
                        if let Some(grace) = grace {
                            r.grace_ms = grace;
                        }
                    })?;
                }
                message_batch(
                    "result",
                    &[format!("Reflection policy of {schema}.{table} set")],
                )
            }
            ReflectionStatement::Wait {
                name,
                timeout_seconds,
            } => self.wait_for_reflection(&name, timeout_seconds).await,
            ReflectionStatement::RefreshOne { name } => {
                let record = self.named_reflection(session, &name)?;
                let job = self.start_refresh(&record.name, &session.user)?;
                message_batch("result", &[format!("{name}: refresh job {job}")])
            }
            ReflectionStatement::DropByName { name } => {
                let record = self.named_reflection(session, &name)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, None)
                    .map_err(catalog_error)?;
                self.purge_materializations(&record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
        }
    }

    /// The dataset of an `ALTER TABLE|VIEW` on reflections, for a user with ALTER on it.
    fn altered_dataset(
        &self,
        session: &Session,
        parts: &[String],
    ) -> Result<(String, String), QuarryError> {
        let (schema, name) = self.dataset_name(session, &reference_of(parts)?)?;
        let record = self
            .datasets
            .catalog()
            .get_dataset(&schema, &name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
        self.access_for(session).require_dataset(
            Privilege::Alter,
            &schema,
            &name,
            source_of(&record.record),
        )?;
        Ok((schema, name))
    }

    /// A reflection by name, for a user with ALTER on its dataset.
    fn named_reflection(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<ReflectionRecord, QuarryError> {
        let record = self
            .datasets
            .catalog()
            .get_reflection(name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?
            .record;
        self.altered_dataset(session, &[record.schema.clone(), record.dataset.clone()])?;
        Ok(record)
    }

    async fn create_reflection(
        &self,
        schema: &str,
        dataset: &str,
        definition: ReflectionDefinition,
    ) -> Result<String, QuarryError> {
        let provider = self
            .datasets
            .provider(schema, dataset)
            .await?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{dataset} does not exist")))?;
        let columns = provider.schema();
        reflection::validate(
            &definition.kind,
            &definition.partition_by,
            &definition.localsort_by,
            &columns,
        )?;
        let record = ReflectionRecord {
            name: definition.name.clone(),
            schema: schema.to_string(),
            dataset: dataset.to_string(),
            kind: definition.kind,
            partition_by: definition.partition_by,
            localsort_by: definition.localsort_by,
            enabled: true,
            dataset_columns: encode_schema(&columns)?,
            refresh_every_ms: Some(DEFAULT_REFRESH_MS),
            grace_ms: DEFAULT_GRACE_MS,
            materialization: None,
            last_error: None,
        };
        match self.datasets.catalog().create_reflection(record) {
            Ok(_) => Ok(definition.name),
            Err(CatalogError::AlreadyExists { .. }) => Err(QuarryError::new(
                ErrorCode::AlreadyExists,
                format!("a reflection named {} already exists", definition.name),
            )),
            Err(e) => Err(catalog_error(e)),
        }
    }

    fn reflections_of(
        &self,
        schema: &str,
        dataset: &str,
    ) -> Result<Vec<Stored<ReflectionRecord>>, QuarryError> {
        Ok(self
            .datasets
            .catalog()
            .list_reflections()
            .map_err(catalog_error)?
            .into_iter()
            .filter(|r| r.record.schema == schema && r.record.dataset == dataset)
            .collect())
    }

    fn reflection_on(
        &self,
        name: &str,
        schema: &str,
        dataset: &str,
    ) -> Result<Stored<ReflectionRecord>, QuarryError> {
        self.datasets
            .catalog()
            .get_reflection(name)
            .map_err(catalog_error)?
            .filter(|r| r.record.schema == schema && r.record.dataset == dataset)
            .ok_or_else(|| {
                QuarryError::not_found(format!("{schema}.{dataset} has no reflection {name}"))
            })
    }

    /// Change a reflection's record, retrying when another change won.
    fn update_reflection(
        &self,
        name: &str,
        mut change: impl FnMut(&mut ReflectionRecord),
    ) -> Result<Option<ReflectionRecord>, QuarryError> {
        let catalog = self.datasets.catalog();
        loop {
            let Some(stored) = catalog.get_reflection(name).map_err(catalog_error)? else {
                return Ok(None);
            };
            let mut record = stored.record.clone();
            change(&mut record);
            match catalog.update_reflection(record.clone(), stored.version) {
                Ok(_) => return Ok(Some(record)),
                Err(CatalogError::Conflict { .. }) => continue,
                Err(CatalogError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(catalog_error(e)),
            }
        }
    }

    /// Drop a dataset's reflections with it.
    pub(crate) fn drop_reflections_of(&self, schema: &str, dataset: &str) {
        let Ok(reflections) = self.reflections_of(schema, dataset) else {
            return;
        };
        for stored in reflections {
            if self
                .datasets
                .catalog()
                .delete_reflection(&stored.record.name, None)
                .is_ok()
            {
                self.purge_materializations(&stored.record);
            }
        }
    }

    /// Remove every materialization folder of a reflection (in the background).
    fn purge_materializations(&self, record: &ReflectionRecord) {
        if let Ok(folder) = self.datasets.materialization_folder(&record.name)
            && let Ok(parent) = folder.join("..")
        {
            self.purge_in_background(vec![parent]);
        }
    }

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
                .create(&format!("REFRESH REFLECTION {name}"), user);
            running.insert(name.to_string(), job.id.clone());
            job
        };
        let id = job.id.clone();
        let engine = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            match engine.plan_refresh(&name, &job.id).await {
                Ok(planned) => {
                    job.spool.set_schema(planned.outcome.schema());
                    let then = engine.after_refresh(
                        name,
                        planned.materialization,
                        planned.folder,
                        planned.incremental,
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
        let (folder, table_schema) = match previous {
            // Only new files are read; their rows (or partial aggregates, which queries
            // over the reflection group again) are appended as a new version.
            Some(previous) => (
                delta::folder_url(&previous.location)?,
                decode_schema(&previous.columns)?,
            ),
            None => {
                let table_schema = delta::storable_schema(plan.schema().as_arrow())?;
                let folder = self.datasets.materialization_folder(name)?;
                delta::create_table(&runtime, &folder, name, &table_schema, &record.partition_by)
                    .await?;
                (folder, table_schema)
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
                if !incremental {
                    let _ = delta::purge(&runtime, &folder).await;
                }
                return Err(e);
            }
        };
        Ok(PlannedRefresh {
            outcome,
            folder: folder.clone(),
            incremental,
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
                reason: method,
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
        incremental: bool,
    ) -> super::Then {
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
                        let mut old = None;
                        let updated = engine.update_reflection(&name, |r| {
                            old = r.materialization.clone();
                            r.materialization = Some(materialization.clone());
                            r.last_error = None;
                        });
                        match updated {
                            Ok(Some(_)) => {
                                engine.datasets.reflection_state().succeeded(&name);
                                if let Some(old) =
                                    old.and_then(|m| delta::folder_url(&m.location).ok())
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
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = &recorded {
                    if e.code != ErrorCode::Cancelled {
                        engine.refresh_failed(&name, e);
                    }
                    // A failed append leaves no committed file; its own files are swept.
                    if !incremental {
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
        self.datasets.reflection_state().failed(name, now_ms());
        if let Ok(mut running) = self.datasets.reflection_state().refreshing.lock() {
            running.remove(name);
        }
        let message = error.message.clone();
        if let Err(e) = self.update_reflection(name, |r| r.last_error = Some(message.clone())) {
            tracing::warn!(reflection = name, "cannot record a failed refresh: {e}");
        }
    }

    /// Refresh reflections when their policy says so, retry failed ones with backoff,
    /// and build those that have no materialization (a coordinator that stopped mid-way
    /// leaves them so), until `stop`.
    pub fn spawn_refresh_scheduler(
        self: &Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
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

    fn purge_later(&self, folder: url::Url) {
        let runtime = Arc::clone(self.datasets.runtime());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep(OLD_MATERIALIZATION_KEPT).await;
                if let Err(e) = delta::purge(&runtime, &folder).await {
                    tracing::warn!(%folder, "cannot remove an old materialization: {e}");
                }
            });
        }
    }

    /// The files (with sizes and modification times) of a table over files, or the
    /// version of a managed table; None for a view.
    async fn input_snapshot(
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

    async fn wait_for_reflection(
        &self,
        name: &str,
        timeout_seconds: Option<f64>,
    ) -> Result<RecordBatch, QuarryError> {
        let timeout = Duration::from_secs_f64(timeout_seconds.unwrap_or(600.0));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stored = self
                .datasets
                .catalog()
                .get_reflection(name)
                .map_err(catalog_error)?
                .ok_or_else(|| {
                    QuarryError::not_found(format!("reflection {name} does not exist"))
                })?;
            let record = stored.record;
            let refreshing = self
                .datasets
                .reflection_state()
                .refreshing
                .lock()
                .map(|r| r.contains_key(name))
                .unwrap_or(false);
            let (status, reason) = reflection::status(&record, None, refreshing, now_ms());
            match status {
                "CAN_ACCELERATE" => {
                    let rows = record.materialization.as_ref().map_or(0, |m| m.rows);
                    return message_batch(
                        "result",
                        &[format!("Reflection {name} can accelerate ({rows} rows)")],
                    );
                }
                "FAILED" | "DISABLED" | "INVALID" if !refreshing => {
                    return Err(QuarryError::invalid(format!(
                        "reflection {name} cannot accelerate: {}",
                        reason.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QuarryError::new(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "reflection {name} could not accelerate within {} ({status})",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `EXPLAIN REFLECTIONS query`: one row per considered reflection, with what became
    /// of it (`chosen`, `matched, not chosen: ...`, `not matched: <reason>`).
    pub(super) async fn explain_reflections(
        &self,
        session: &Session,
        statement: datafusion::sql::parser::Statement,
    ) -> Result<RecordBatch, QuarryError> {
        let state = self.query_state(session)?;
        let plan = state.statement_to_plan(statement).await?;
        let (state, report) = self.with_reflections(session, state, &plan).await?;
        state.optimize(&plan)?;
        let entries = report.map(|r| r.entries()).unwrap_or_default();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("reflection", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("outcome", arrow::datatypes::DataType::Utf8, false),
        ]));
        let names: Vec<String> = entries.iter().map(|c| c.name.clone()).collect();
        let outcomes: Vec<String> = entries.into_iter().map(|c| c.detail).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::StringArray::from(names)),
                Arc::new(arrow::array::StringArray::from(outcomes)),
            ],
        )
        .map_err(|e| QuarryError::invalid(e.to_string()))
    }

    /// `state` with the reflection rules installed for what `plan` reads, and the report
    /// they fill; `state` as it is when no reflection is on those datasets.
    pub(super) async fn with_reflections(
        &self,
        session: &Session,
        state: SessionState,
        plan: &LogicalPlan,
    ) -> Result<(SessionState, Option<Arc<Report>>), QuarryError> {
        let options = quarry_options(state.config()).reflections;
        if !options.enabled {
            return Ok((state, None));
        }
        let mut scanned: HashSet<(String, String)> = HashSet::new();
        let default_schema = session.default_schema();
        let _ = plan.apply_with_subqueries(|node| {
            let name = match node {
                LogicalPlan::TableScan(scan) => Some(&scan.table_name),
                // Views are inlined under an alias named after them.
                LogicalPlan::SubqueryAlias(alias) => Some(&alias.alias),
                _ => None,
            };
            if let Some(name) = name {
                let (schema, name) = match name {
                    TableReference::Bare { table } => (default_schema.clone(), table.to_string()),
                    TableReference::Partial { schema, table }
                    | TableReference::Full { schema, table, .. } => {
                        (schema.to_string(), table.to_string())
                    }
                };
                scanned.insert((schema, name));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let records: Vec<ReflectionRecord> = self
            .datasets
            .catalog()
            .list_reflections()
            .map_err(catalog_error)?
            .into_iter()
            .map(|s| s.record)
            .filter(|r| scanned.contains(&(r.schema.clone(), r.dataset.clone())))
            .collect();
        if records.is_empty() {
            return Ok((state, None));
        }
        let candidates = self.candidates(records, &options).await?;
        let candidates = Arc::new(candidates);
        let report = Arc::new(Report::default());
        let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
            vec![Arc::new(AggregateRule {
                candidates: Arc::clone(&candidates),
                default_schema: default_schema.clone(),
                report: Arc::clone(&report),
            })];
        rules.extend(state.optimizer().rules.iter().cloned());
        rules.push(Arc::new(RawRule {
            candidates,
            default_schema,
            report: Arc::clone(&report),
        }));
        let state = SessionStateBuilder::new_from_existing(state)
            .with_optimizer_rules(rules)
            .build();
        PlanningReports::note(&report);
        Ok((state, Some(report)))
    }

    async fn candidates(
        &self,
        records: Vec<ReflectionRecord>,
        options: &ReflectionOptions,
    ) -> Result<Vec<Candidate>, QuarryError> {
        let excluded = ReflectionOptions::names(&options.exclude);
        let chosen = ReflectionOptions::names(&options.choose);
        let max_staleness = options.max_staleness()?;
        let now = now_ms();
        let mut candidates = Vec::new();
        for record in records {
            let dataset = self
                .datasets
                .catalog()
                .get_dataset(&record.schema, &record.dataset)
                .map_err(catalog_error)?
                .map(|s| s.record);
            let current_columns = match &dataset {
                Some(d) => match self.datasets.provider_of(d.clone()).await {
                    Ok(p) => encode_schema(&p.schema()).ok(),
                    Err(_) => None,
                },
                None => None,
            };
            let refreshing = self
                .datasets
                .reflection_state()
                .refreshing
                .lock()
                .map(|r| r.contains_key(&record.name))
                .unwrap_or(false);
            let (_, mut unusable) =
                reflection::status(&record, current_columns.as_deref(), refreshing, now);
            let data_as_of_ms = record
                .materialization
                .as_ref()
                .map_or(0, |m| m.data_as_of_ms);
            if unusable.is_none() && excluded.contains(&record.name) {
                unusable = Some("excluded by quarry.reflections.exclude".to_string());
            }
            if unusable.is_none() && !chosen.is_empty() && !chosen.contains(&record.name) {
                unusable = Some("not in quarry.reflections.choose".to_string());
            }
            if unusable.is_none()
                && let Some(limit) = max_staleness
                && let Some(m) = &record.materialization
            {
                let age = Duration::from_millis(now.saturating_sub(m.data_as_of_ms));
                if age > limit {
                    // Data older than asked is still good when its inputs are unchanged.
                    let current = match &dataset {
                        Some(d) => self.input_snapshot(d).await.ok().flatten(),
                        None => None,
                    };
                    if current.as_ref() != Some(&m.inputs) || m.inputs.is_empty() {
                        unusable = Some(format!(
                            "stale: its data is {} old, more than quarry.reflections.max_staleness ({}), and its inputs changed",
                            humantime::format_duration(Duration::from_secs(age.as_secs())),
                            humantime::format_duration(limit)
                        ));
                    }
                }
            }
            let table = match &record.materialization {
                Some(m) if unusable.is_none() => {
                    let url = delta::folder_url(&m.location)?;
                    let schema = decode_schema(&m.columns)?;
                    Some(Arc::new(DeltaTable::new(
                        url,
                        schema,
                        record.partition_by.clone(),
                        Arc::clone(self.datasets.commits()),
                    ))
                        as Arc<dyn datafusion::catalog::TableProvider>)
                }
                _ => None,
            };
            candidates.push(Candidate {
                name: record.name.clone(),
                schema: record.schema.clone(),
                dataset: record.dataset.clone(),
                kind: record.kind.clone(),
                view: matches!(
                    dataset.as_ref().map(|d| &d.definition),
                    Some(DatasetDefinition::View(_))
                ),
                table,
                rows: record.materialization.as_ref().map_or(0, |m| m.rows),
                data_as_of_ms,
                unusable,
            });
        }
        Ok(candidates)
    }
}

/// A refresh ready to run: its write, where it writes, and the record it makes.
struct PlannedRefresh {
    outcome: super::Outcome,
    folder: url::Url,
    /// Appending to the current materialization (whose folder must survive a failure).
    incremental: bool,
    materialization: Materialization,
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
