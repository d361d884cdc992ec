//! System tables: `sys.nodes` (executors), `sys.jobs` (query history), `sys.tasks`
//! (every task of recent jobs) and `sys.users`, `sys.roles`, `sys.privileges`
//! ([`access`]), built from the coordinator's state when a query reads them; with test
//! sources on, `sys.test_stall` (a scan that never yields). Reflections have
//! `sys.reflections`, `sys.materializations` and `sys.recommend_reflections`. Users who are not admins see
//! only their own jobs, tasks, user and privileges.

pub(crate) mod access;
mod recommendations;
mod reflections;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use quarry_common::stall::{StallExec, stall_schema};

use crate::access::Viewer;
use crate::access::{AccessControl, UserAccess};
use crate::cluster::Cluster;
use crate::jobs::Jobs;
use crate::scheduler::QueryProfile;

/// Jobs whose tasks `sys.tasks` shows.
const TASK_HISTORY_JOBS: usize = 200;

#[derive(Debug)]
pub(crate) struct SystemTables {
    cluster: Arc<Cluster>,
    jobs: Arc<Jobs>,
    access: Arc<AccessControl>,
    catalog: quarry_catalog::Catalog,
    reflections: Arc<crate::reflections::ReflectionState>,
    /// Also offer `sys.test_stall`, a source that never yields (for tests).
    test_sources: bool,
}

impl SystemTables {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        jobs: Arc<Jobs>,
        access: Arc<AccessControl>,
        catalog: quarry_catalog::Catalog,
        reflections: Arc<crate::reflections::ReflectionState>,
        test_sources: bool,
    ) -> Self {
        SystemTables {
            cluster,
            jobs,
            access,
            catalog,
            reflections,
            test_sources,
        }
    }
}

impl crate::datasets::SystemSchemas for SystemTables {
    /// The `sys` schema as `viewer` sees it.
    fn for_viewer(self: Arc<Self>, viewer: Viewer) -> Arc<dyn SchemaProvider> {
        Arc::new(SystemSchema {
            tables: self,
            viewer: viewer.filter(|v| !v.admin),
        })
    }
}

/// `sys` for one reader; `viewer` is None for admins and the coordinator itself.
#[derive(Debug)]
struct SystemSchema {
    tables: Arc<SystemTables>,
    viewer: Option<Arc<UserAccess>>,
}

impl SystemSchema {
    fn sees_job(&self, user: &str) -> bool {
        self.viewer.as_ref().is_none_or(|v| v.owns_job(user))
    }
}

const SYSTEM_TABLES: [&str; 9] = [
    "jobs",
    "materializations",
    "nodes",
    "privileges",
    "recommend_reflections",
    "reflections",
    "roles",
    "tasks",
    "users",
];

/// `sys.test_stall`: two partitions that never produce a row, scanned on executors.
#[derive(Debug)]
struct StallTable;

#[async_trait]
impl TableProvider for StallTable {
    fn schema(&self) -> SchemaRef {
        stall_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let with_column = projection.is_none_or(|p| !p.is_empty());
        Ok(Arc::new(StallExec::new(2, with_column)))
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn ms(values: Vec<Option<u64>>) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from(
            values
                .into_iter()
                .map(|v| v.map(|v| v as i64))
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    )
}

pub(super) fn table(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

impl SystemTables {
    fn nodes(&self) -> Result<Arc<dyn TableProvider>> {
        let nodes = self.cluster.all();
        let schema = Arc::new(Schema::new(vec![
            Field::new("executor_id", DataType::Utf8, false),
            Field::new("endpoint", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("slots", DataType::UInt32, false),
            Field::new("running_tasks", DataType::UInt32, false),
            Field::new("exchange_outputs", DataType::UInt32, false),
            Field::new("exchange_bytes", DataType::UInt64, false),
            Field::new("memory_used_bytes", DataType::UInt64, false),
            Field::new("spill_files", DataType::UInt32, false),
            Field::new("local_files", DataType::UInt64, false),
            Field::new("registered", timestamp(), true),
            Field::new("last_heartbeat", timestamp(), true),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    nodes.iter().map(|n| n.executor_id.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    nodes.iter().map(|n| n.endpoint.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    nodes.iter().map(|n| n.state.as_str()),
                )),
                Arc::new(UInt32Array::from_iter_values(nodes.iter().map(|n| n.slots))),
                Arc::new(UInt32Array::from_iter_values(
                    nodes.iter().map(|n| n.running_tasks),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    nodes.iter().map(|n| n.exchange_outputs),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    nodes.iter().map(|n| n.exchange_bytes),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    nodes.iter().map(|n| n.memory_used_bytes),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    nodes.iter().map(|n| n.spill_files),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    nodes.iter().map(|n| n.local_files.len() as u64),
                )),
                ms(nodes.iter().map(|n| Some(n.registered_at_ms)).collect()),
                ms(nodes.iter().map(|n| Some(n.last_heartbeat_ms)).collect()),
            ],
        )
    }

    fn jobs(&self, sees: impl Fn(&str) -> bool) -> Result<Arc<dyn TableProvider>> {
        let mut jobs = self
            .jobs
            .list(None, usize::MAX)
            .map_err(DataFusionError::from)?;
        jobs.retain(|j| sees(&j.user));
        let schema = Arc::new(Schema::new(vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("user", DataType::Utf8, false),
            Field::new("sql", DataType::Utf8, false),
            Field::new("submitted", timestamp(), true),
            Field::new("started", timestamp(), true),
            Field::new("finished", timestamp(), true),
            Field::new("duration_ms", DataType::UInt64, true),
            Field::new("row_count", DataType::UInt64, false),
            Field::new("tasks_done", DataType::UInt64, false),
            Field::new("tasks_total", DataType::UInt64, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("frontend", DataType::Utf8, false),
            Field::new("results_cache", DataType::Boolean, false),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.id.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.state.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.user.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.sql.as_str()),
                )),
                ms(jobs.iter().map(|j| Some(j.submitted_ms)).collect()),
                ms(jobs.iter().map(|j| j.started_ms).collect()),
                ms(jobs.iter().map(|j| j.finished_ms).collect()),
                Arc::new(UInt64Array::from(
                    jobs.iter()
                        .map(|j| j.finished_ms.map(|f| f.saturating_sub(j.submitted_ms)))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    jobs.iter().map(|j| j.row_count),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    jobs.iter().map(|j| j.tasks_done),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    jobs.iter().map(|j| j.tasks_total),
                )),
                Arc::new(StringArray::from(
                    jobs.iter()
                        .map(|j| j.error.as_ref().map(|e| e.message.clone()))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.frontend.as_str()),
                )),
                Arc::new(arrow::array::BooleanArray::from(
                    jobs.iter()
                        .map(|j| j.results_cache.is_some())
                        .collect::<Vec<_>>(),
                )),
            ],
        )
    }

    fn tasks(&self, sees: impl Fn(&str) -> bool) -> Result<Arc<dyn TableProvider>> {
        let mut jobs = self
            .jobs
            .list(None, TASK_HISTORY_JOBS)
            .map_err(DataFusionError::from)?;
        jobs.retain(|j| sees(&j.user));
        let mut job_ids = Vec::new();
        let mut stage_ids = Vec::new();
        let mut partitions = Vec::new();
        let mut attempts = Vec::new();
        let mut executors = Vec::new();
        let mut rows = Vec::new();
        let mut bytes = Vec::new();
        let mut elapsed = Vec::new();
        let mut failures = Vec::new();
        for job in &jobs {
            let Ok(profile) = serde_json::from_value::<QueryProfile>(job.profile.clone()) else {
                continue;
            };
            for stage in &profile.stages {
                for task in &stage.tasks {
                    job_ids.push(job.id.clone());
                    stage_ids.push(stage.stage_id);
                    partitions.push(task.partition);
                    attempts.push(task.attempt);
                    executors.push(task.executor_id.clone());
                    rows.push(task.output_rows);
                    bytes.push(task.output_bytes);
                    elapsed.push(task.elapsed_ms);
                    failures.push(task.failed_attempts.len() as u32);
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("stage_id", DataType::UInt32, false),
            Field::new("partition", DataType::UInt32, false),
            Field::new("attempt", DataType::UInt32, false),
            Field::new("executor_id", DataType::Utf8, false),
            Field::new("output_rows", DataType::UInt64, false),
            Field::new("output_bytes", DataType::UInt64, false),
            Field::new("elapsed_ms", DataType::UInt64, false),
            Field::new("failed_attempts", DataType::UInt32, false),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from(job_ids)),
                Arc::new(UInt32Array::from(stage_ids)),
                Arc::new(UInt32Array::from(partitions)),
                Arc::new(UInt32Array::from(attempts)),
                Arc::new(StringArray::from(executors)),
                Arc::new(UInt64Array::from(rows)),
                Arc::new(UInt64Array::from(bytes)),
                Arc::new(UInt64Array::from(elapsed)),
                Arc::new(UInt32Array::from(failures)),
            ],
        )
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = SYSTEM_TABLES.iter().map(|n| n.to_string()).collect();
        if self.tables.test_sources {
            names.push("test_stall".to_string());
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let tables = &self.tables;
        let viewer = self.viewer.as_deref();
        match name {
            "nodes" => tables.nodes().map(Some),
            "jobs" => tables.jobs(|user| self.sees_job(user)).map(Some),
            "tasks" => tables.tasks(|user| self.sees_job(user)).map(Some),
            "users" => access::users(&tables.access, viewer).map(Some),
            "roles" => access::roles(&tables.access, viewer).map(Some),
            "privileges" => access::privileges(&tables.access, viewer).map(Some),
            "reflections" => {
                reflections::reflections(&tables.catalog, &tables.reflections, &self.viewer)
                    .map(Some)
            }
            "recommend_reflections" => recommendations::recommendations(
                &tables.catalog,
                &tables.jobs,
                |user| self.sees_job(user),
                &self.viewer,
            )
            .map(Some),
            "materializations" => {
                reflections::materializations(&tables.catalog, &self.viewer).map(Some)
            }
            "test_stall" if tables.test_sources => Ok(Some(Arc::new(StallTable))),
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name) || (self.tables.test_sources && name == "test_stall")
    }
}
