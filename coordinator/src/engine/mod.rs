//! The query engine: turns a client's SQL into a job and runs it.
//!
//! ```text
//!  submit(session, sql)
//!    ├─ parse (Quarry's statements + DataFusion's dialect)
//!    ├─ catalog statements ─────────────► CatalogOps ──► sled      (result: a message row)
//!    ├─ SET / USE ──────────────────────► Session
//!    └─ queries ─► LogicalPlan ─► physical plan ─► StagePlan ─► Scheduler ─► executors
//!                                     (no file scan: runs on the coordinator)
//!  results of every statement ─► the job's ResultSpool ─► frontends page through them
//! ```

pub mod catalog_ops;
mod ddl;
mod execution;
mod insert;
mod reflections;
mod security;
mod writes;

pub(crate) use writes::managed_folder;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::{LogicalPlan, Statement as LogicalStatement};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use quarry_common::QuarryError;
use quarry_common::cpu_runtime::CpuRuntime;
use quarry_common::protocol::{ObjectStoreSpec, Setting};
use quarry_common::shuffle_reader::ExchangeAccess;

use crate::access::auth::Auth;
use crate::access::{AccessControl, UserAccess};
use crate::datasets::Datasets;
use crate::error::CoordinatorError;
use crate::jobs::admission::{Admission, Ticket};
use crate::jobs::{Job, Jobs};
use crate::planner::stages::{StagePlan, display_stages, plan_stages, scans_files};
use crate::scheduler::Scheduler;
use crate::sql::parser::{self, Statement};
pub use session::{
    PreparedStatement, QuarryOptions, Session, Sessions, parse_duration, quarry_options,
};

/// The most materialization data a query reads on the coordinator rather than on
/// executors.
const SMALL_MATERIALIZATIONS_BYTES: u64 = 64 * 1024 * 1024;

/// How a planned statement produces its rows.
enum Outcome {
    /// Already produced while planning (catalog statements, SET, EXPLAIN).
    Rows(SchemaRef, Vec<RecordBatch>),
    /// Runs on the coordinator (no file scans: VALUES, information_schema, DESCRIBE).
    Local(Arc<dyn ExecutionPlan>, Arc<TaskContext>),
    /// Runs on executors.
    Distributed(Box<DistributedQuery>),
    /// EXPLAIN ANALYZE: run the query, report what each stage did.
    Analyze(Box<Outcome>),
    /// CREATE TABLE ... AS SELECT: the insert, and the new table, dropped again when the
    /// insert fails, so a failed CTAS leaves no table.
    Created(Box<Outcome>, CreatedTable),
}

/// What a background job does after its run (see `Engine::start_then`).
type Then = Box<
    dyn FnOnce(
            Result<(), QuarryError>,
        ) -> futures::future::BoxFuture<'static, Result<(), QuarryError>>
        + Send,
>;

struct CreatedTable {
    actor: Arc<UserAccess>,
    schema: String,
    name: String,
}

impl Outcome {
    /// The part that runs on executors, if any.
    fn distributed_mut(&mut self) -> Option<&mut DistributedQuery> {
        match self {
            Outcome::Distributed(query) => Some(query),
            Outcome::Analyze(inner) | Outcome::Created(inner, _) => inner.distributed_mut(),
            _ => None,
        }
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Outcome::Rows(schema, _) => Arc::clone(schema),
            Outcome::Local(plan, _) => plan.schema(),
            Outcome::Distributed(query) => query.stages.root.schema(),
            Outcome::Analyze(_) => plan_text_schema(),
            Outcome::Created(inner, _) => inner.schema(),
        }
    }
}

struct DistributedQuery {
    stages: StagePlan,
    settings: Vec<Setting>,
    object_stores: Vec<ObjectStoreSpec>,
    options: QuarryOptions,
    /// The query's session, for running the root stage on the coordinator.
    state: SessionState,
    /// Its place in the admission queue, taken when it was submitted.
    ticket: Option<Ticket>,
}

/// Limits a coordinator puts on the queries it runs.
pub struct EngineLimits {
    pub admission: Admission,
    /// What one request may ask (SQL size and shape, plan depth).
    pub request: crate::limits::Limits,
    /// Flight SQL results nobody starts reading this soon are abandoned.
    pub fetch_timeout: Duration,
}

pub struct Engine {
    pub(crate) datasets: Arc<Datasets>,
    pub(crate) access: Arc<AccessControl>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) sessions: Sessions,
    base_config: SessionConfig,
    limits: EngineLimits,
    /// Where root stages and local statements compute, apart from the runtime that
    /// serves clients, executors and heartbeats.
    cpu: CpuRuntime,
}

/// The settings every Quarry query starts from.
pub fn base_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(
            crate::datasets::CATALOG_NAME,
            quarry_catalog::DEFAULT_SCHEMA,
        )
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_option_extension(QuarryOptions::default());
    let options = config.options_mut();
    // Partitions of a scan run as separate tasks on separate executors: they must not
    // share a work queue in one process.
    options.execution.enable_file_stream_work_stealing = false;
    // Scalar subqueries and dynamic filters share state between operators at run time;
    // across stages and processes that state would not arrive.
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    // Broadcast a join's build side up to 64 MB / 4M rows (DataFusion's defaults, 1 MB /
    // 128K rows, suit one process). Across executors the other choice hashes both sides
    // through the exchange: at TPC-H SF10, Q9 shuffled all of lineitem (2.9 GB) to avoid
    // sending 35 MB of orders to each task, and took 12 s instead of 5 s.
    options.optimizer.hash_join_single_partition_threshold = 64 * 1024 * 1024;
    options.optimizer.hash_join_single_partition_threshold_rows = 4_000_000;
    if let Err(e) = options.set(
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
    ) {
        tracing::warn!("cannot turn off dynamic filters: {e}");
    }
    config
}

/// EXPLAIN's result shape: what each row describes, and the text.
fn plan_text_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]))
}

fn plan_text_batch(rows: Vec<(String, String)>) -> Result<RecordBatch, QuarryError> {
    let (types, plans): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    RecordBatch::try_new(
        plan_text_schema(),
        vec![
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(plans)),
        ],
    )
    .map_err(CoordinatorError::batch("a plan"))
    .map_err(QuarryError::from)
}

/// One text column, one row per message: the result of catalog statements.
pub fn message_batch(column: &str, messages: &[String]) -> Result<RecordBatch, QuarryError> {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let array: ArrayRef = Arc::new(StringArray::from(messages.to_vec()));
    RecordBatch::try_new(schema, vec![array])
        .map_err(CoordinatorError::batch("a result"))
        .map_err(QuarryError::from)
}

impl Engine {
    pub fn new(
        datasets: Arc<Datasets>,
        auth: Arc<Auth>,
        jobs: Arc<Jobs>,
        scheduler: Arc<Scheduler>,
        limits: EngineLimits,
    ) -> Result<Arc<Self>, QuarryError> {
        let base_config = datasets.base_config().clone();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpu = CpuRuntime::new(threads, "coordinator-query")
            .map_err(|e| CoordinatorError::Runtime {
                what: "query runtime",
                detail: e.to_string(),
            })
            .map_err(QuarryError::from)?;
        Ok(Arc::new(Engine {
            datasets,
            access: Arc::clone(auth.control()),
            auth,
            jobs,
            scheduler,
            sessions: Sessions::default(),
            base_config,
            limits,
            cpu,
        }))
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.limits.admission
    }

    pub(crate) fn fetch_timeout(&self) -> Duration {
        self.limits.fetch_timeout
    }

    /// What the user of `session` may do now.
    pub(crate) fn access_for(&self, session: &Session) -> Arc<UserAccess> {
        self.access.for_user(&session.user)
    }

    /// A job's SQL, results and cancellation belong to its user (and admins).
    pub(crate) fn require_job_owner(
        &self,
        session: &Session,
        owner: &str,
        id: &str,
    ) -> Result<(), QuarryError> {
        if self.access_for(session).owns_job(owner) {
            return Ok(());
        }
        Err(QuarryError::new(
            quarry_common::ErrorCode::PermissionDenied,
            format!("job {id} belongs to another user"),
        ))
    }

    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub(crate) fn datasets(&self) -> &Arc<Datasets> {
        &self.datasets
    }

    /// A session with the default schema, for callers without one.
    pub fn new_session(&self, user: &str) -> Arc<Session> {
        Session::new(
            uuid::Uuid::new_v4().to_string(),
            user,
            quarry_catalog::DEFAULT_SCHEMA,
        )
    }

    /// The DataFusion settings of a query in `session`.
    fn query_config(&self, session: &Session) -> Result<SessionConfig, QuarryError> {
        let mut config = session.apply(self.base_config.clone())?;
        if !session
            .settings()
            .contains_key("datafusion.execution.target_partitions")
        {
            // One partition per task slot the query may use.
            let options = quarry_options(&config);
            let mut slots: Vec<usize> = self
                .scheduler
                .cluster()
                .active()
                .iter()
                .map(|e| e.slots as usize)
                .collect();
            if options.max_executors > 0 {
                slots.truncate(options.max_executors);
            }
            config = config.with_target_partitions(slots.iter().sum::<usize>().max(1));
        }
        Ok(config.with_extension(Arc::new(ExchangeAccess {
            channels: Arc::clone(self.scheduler.channels()),
            local: None,
            recovery: None,
            activity: None,
        })))
    }

    /// A planning session that sees and reads only what the session's user may.
    fn query_state(&self, session: &Session) -> Result<SessionState, QuarryError> {
        Ok(self
            .datasets
            .session_state(self.query_config(session)?, Some(self.access_for(session))))
    }

    /// Start `sql` as a job. Planning errors are returned (and recorded on the job);
    /// execution errors show up in the job's state and at the end of its results.
    pub async fn submit(
        self: &Arc<Self>,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Arc<Job>, QuarryError> {
        let job = self
            .jobs
            .create(&crate::sql::security::redact_secrets(sql), &session.user);
        // Planning runs on the query runtime too: it reads and writes the catalog (sled,
        // fsync), lists files and infers schemas, none of which belongs on the runtime
        // that serves clients and executors.
        let (engine, planning_session, script) =
            (Arc::clone(self), Arc::clone(session), sql.to_string());
        let reports = reflections::PlanningReports::default();
        let scoped = reports.clone();
        let planned = self
            .cpu
            .run(async move {
                scoped
                    .scope(engine.plan_script(&planning_session, &script, parameters))
                    .await
            })
            .await
            .unwrap_or_else(|panic| Err(CoordinatorError::crashed("planning", panic).into()));
        let summary = reports.summary(self.datasets.reflection_state());
        let aggregates = reports.aggregates();
        if summary.is_some() || !aggregates.is_empty() {
            let (considered, data_as_of) = summary.unwrap_or_default();
            job.set_reflections(considered, data_as_of, aggregates);
        }
        // A query for the executors takes its place in line now, so a full queue is
        // refused before the client waits for anything.
        let planned = planned.and_then(|mut outcome| {
            if let Some(query) = outcome.distributed_mut() {
                query.ticket = Some(self.limits.admission.enqueue()?);
            }
            Ok(outcome)
        });
        match planned {
            Ok(outcome) => {
                // Clients ask for the schema as soon as submit returns.
                job.spool.set_schema(outcome.schema());
                self.start(Arc::clone(&job), outcome);
                Ok(job)
            }
            Err(e) => {
                job.fail(&e);
                Err(e)
            }
        }
    }

    /// Plan every statement; all but the last run to completion here.
    async fn plan_script(
        self: &Arc<Self>,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Outcome, QuarryError> {
        let mut statements = parser::parse(sql, &self.limits.request)?;
        let last = statements
            .pop()
            .ok_or_else(|| QuarryError::invalid("no SQL statement given"))?;
        for statement in statements {
            let outcome = self.plan_statement(session, statement, None).await?;
            let sink = self.jobs.create("(script statement)", &session.user);
            self.run(&sink, outcome).await?;
            sink.complete();
        }
        self.plan_statement(session, last, parameters).await
    }

    async fn plan_statement(
        self: &Arc<Self>,
        session: &Arc<Session>,
        statement: Statement,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Outcome, QuarryError> {
        let (statement, spec) = match statement {
            Statement::DataFusion(statement) => match *statement {
                // Prepared inserts keep DataFusion's plan, which types their parameters.
                DFStatement::Statement(sql) if parameters.is_none() => match *sql {
                    SqlStatement::Insert(insert) => {
                        return self.plan_insert(session, insert).await;
                    }
                    other => (DFStatement::Statement(Box::new(other)), Default::default()),
                },
                statement => (statement, Default::default()),
            },
            Statement::ManagedTable { statement, spec } => (*statement, spec),
            Statement::Copy(copy) => return self.plan_copy(session, copy).await,
            Statement::Optimize { name } => return self.plan_optimize(session, &name).await,
            Statement::Reflection(statement) => {
                let batch = self.run_reflection(session, statement).await?;
                return Ok(Outcome::Rows(batch.schema(), vec![batch]));
            }
            Statement::ExplainReflections(statement) => {
                let batch = self.explain_reflections(session, *statement).await?;
                return Ok(Outcome::Rows(batch.schema(), vec![batch]));
            }
            ours => {
                let batch = self.run_extension(session, ours).await?;
                return Ok(Outcome::Rows(batch.schema(), vec![batch]));
            }
        };
        let state = self.query_state(session)?;
        let mut plan = state.statement_to_plan(statement).await?;
        if let Some(values) = parameters {
            plan = plan.with_param_values(values)?;
        }
        match plan {
            LogicalPlan::Ddl(datafusion::logical_expr::DdlStatement::CreateMemoryTable(create)) => {
                self.create_managed(session, &state, create, spec).await
            }
            LogicalPlan::Dml(dml) if writes::is_write(&dml) => {
                self.require_write(session, &dml)?;
                self.plan_query(&state, &LogicalPlan::Dml(dml)).await
            }
            LogicalPlan::Ddl(ddl) => {
                let batch = self.run_ddl(session, ddl).await?;
                Ok(Outcome::Rows(batch.schema(), vec![batch]))
            }
            LogicalPlan::Statement(LogicalStatement::SetVariable(set)) => {
                session.set(&self.base_config, &set.variable, &set.value)?;
                let batch =
                    message_batch("result", &[format!("{} = {}", set.variable, set.value)])?;
                Ok(Outcome::Rows(batch.schema(), vec![batch]))
            }
            LogicalPlan::Statement(LogicalStatement::ResetVariable(reset)) => {
                session.reset(&reset.variable);
                let batch = message_batch("result", &[format!("{} reset", reset.variable)])?;
                Ok(Outcome::Rows(batch.schema(), vec![batch]))
            }
            LogicalPlan::Statement(other) => Err(QuarryError::new(
                quarry_common::ErrorCode::Unimplemented,
                format!("{} is not supported", other.name()),
            )),
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => Err(QuarryError::new(
                quarry_common::ErrorCode::Unimplemented,
                "UPDATE is not supported yet; INSERT and DELETE on managed tables are",
            )),
            LogicalPlan::Analyze(analyze) => {
                self.note_aggregates(session, analyze.input.as_ref());
                let (state, _) = self
                    .with_reflections(session, state, analyze.input.as_ref())
                    .await?;
                let inner = self.plan_query(&state, analyze.input.as_ref()).await?;
                Ok(Outcome::Analyze(Box::new(inner)))
            }
            LogicalPlan::Explain(explain) => {
                let (state, report) = self
                    .with_reflections(session, state, explain.plan.as_ref())
                    .await?;
                let batch = self.explain(&state, explain.plan.as_ref(), report).await?;
                Ok(Outcome::Rows(batch.schema(), vec![batch]))
            }
            query => {
                self.note_aggregates(session, &query);
                let (state, _) = self.with_reflections(session, state, &query).await?;
                self.plan_query(&state, &query).await
            }
        }
    }

    /// Plan a query for the coordinator or the executors.
    async fn plan_query(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<Outcome, QuarryError> {
        let physical = self.physical_plan(state, plan).await?;
        self.plan_physical(state, physical)
    }

    /// The physical plan of a query, refused when deeper than the limit allows.
    pub(crate) async fn physical_plan(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
        let physical = state.create_physical_plan(plan).await?;
        self.limits.request.check_plan_depth(&physical)?;
        let iterations = quarry_options(state.config()).max_recursive_iterations;
        Ok(crate::planner::recursion_bound::bound_recursion(
            physical, iterations,
        )?)
    }

    /// The limits requests are held to.
    pub(crate) fn request_limits(&self) -> &crate::limits::Limits {
        &self.limits.request
    }

    /// Plans without file scans run on the coordinator, and so do those that read only
    /// small materializations (a dashboard query answered from a reflection): a few
    /// megabytes of Parquet are read faster here than a stage on executors is scheduled.
    fn runs_on_coordinator(&self, physical: &Arc<dyn ExecutionPlan>) -> bool {
        !scans_files(physical)
            || self.datasets.reflection_store().is_some_and(|store| {
                crate::planner::stages::reads_only_small_files_under(
                    physical,
                    store,
                    SMALL_MATERIALIZATIONS_BYTES,
                )
            })
    }

    /// Run a physical plan on the coordinator, or on the executors when it scans files.
    fn plan_physical(
        &self,
        state: &SessionState,
        physical: Arc<dyn ExecutionPlan>,
    ) -> Result<Outcome, QuarryError> {
        if self.runs_on_coordinator(&physical) {
            return Ok(Outcome::Local(physical, state.task_ctx()));
        }
        let options = quarry_options(state.config());
        // Refuse bad durations before the query takes any resources.
        options.query_timeout()?;
        options.stall_timeout()?;
        let object_stores = object_stores_of(&physical, &self.datasets);
        let stages = plan_stages(physical)?;
        Ok(Outcome::Distributed(Box::new(DistributedQuery {
            stages,
            settings: settings_to_ship(state.config_options()),
            object_stores,
            options,
            state: state.clone(),
            ticket: None,
        })))
    }

    /// EXPLAIN: the logical plan, the physical plan and the stage DAG.
    async fn explain(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        reflections: Option<Arc<crate::reflections::matching::Report>>,
    ) -> Result<RecordBatch, QuarryError> {
        let optimized = state.optimize(plan)?;
        let physical = self.physical_plan(state, plan).await?;
        let mut rows = Vec::new();
        if let Some(report) = reflections {
            let lines: Vec<String> = report
                .entries()
                .into_iter()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            rows.push(("reflections".to_string(), lines.join("\n")));
        }
        rows.extend([
            (
                "logical_plan".to_string(),
                format!("{}", optimized.display_indent()),
            ),
            (
                "physical_plan".to_string(),
                displayable(physical.as_ref()).indent(false).to_string(),
            ),
        ]);
        if !scans_files(&physical) {
            rows.push((
                "distributed_plan".to_string(),
                "runs on the coordinator (no file scans)".to_string(),
            ));
        } else if self.runs_on_coordinator(&physical) {
            rows.push((
                "distributed_plan".to_string(),
                "runs on the coordinator (it reads only small materializations)".to_string(),
            ));
        } else {
            let stages = plan_stages(physical)?;
            rows.push(("distributed_plan".to_string(), display_stages(&stages)));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan_type", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
        ]));
        let (types, plans): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(types)),
                Arc::new(StringArray::from(plans)),
            ],
        )
        .map_err(CoordinatorError::batch("a plan"))
        .map_err(QuarryError::from)
    }

    /// The result and parameter schemas of a statement, without running it; planned on
    /// the query runtime, like every statement.
    pub(crate) async fn describe(
        self: &Arc<Self>,
        session: &Arc<Session>,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError> {
        let (engine, session, sql) = (Arc::clone(self), Arc::clone(session), sql.to_string());
        self.cpu
            .run(async move { engine.describe_here(&session, &sql).await })
            .await
            .unwrap_or_else(|panic| Err(CoordinatorError::crashed("planning", panic).into()))
    }

    async fn describe_here(
        &self,
        session: &Arc<Session>,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError> {
        let mut statements = parser::parse(sql, &self.limits.request)?;
        if statements.len() != 1 {
            return Err(QuarryError::invalid(
                "a prepared statement must be one statement",
            ));
        }
        let message = message_batch("result", &[])?.schema();
        let no_parameters = Arc::new(Schema::empty());
        let Some(Statement::DataFusion(statement)) = statements.pop() else {
            return Ok((message, no_parameters));
        };
        let state = self.query_state(session)?;
        let plan = state.statement_to_plan(*statement).await?;
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            return Ok((message, no_parameters));
        }
        let mut parameters: Vec<(usize, String, DataType)> = plan
            .get_parameter_types()?
            .into_iter()
            .map(|(name, ty)| {
                let index = name
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .unwrap_or(usize::MAX);
                (index, name, ty.unwrap_or(DataType::Null))
            })
            .collect();
        parameters.sort();
        let parameter_schema = Arc::new(Schema::new(
            parameters
                .into_iter()
                .map(|(_, name, ty)| Field::new(name, ty, true))
                .collect::<Vec<_>>(),
        ));
        let schema = if matches!(plan, LogicalPlan::Explain(_)) {
            message_batch("plan", &[])?.schema()
        } else {
            Arc::new(plan.schema().as_arrow().clone())
        };
        Ok((schema, parameter_schema))
    }
}

/// Frees a query's exchange outputs on every executor however the query ends.
struct ReleaseOnDrop {
    scheduler: Arc<Scheduler>,
    query_id: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let scheduler = Arc::clone(&self.scheduler);
        let query_id = std::mem::take(&mut self.query_id);
        let endpoints = scheduler
            .cluster()
            .active()
            .into_iter()
            .map(|e| e.endpoint)
            .collect();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { scheduler.release(&query_id, &endpoints).await });
        }
    }
}

/// The DataFusion settings that differ from the defaults, for the executors.
fn settings_to_ship(options: &ConfigOptions) -> Vec<Setting> {
    let defaults: BTreeMap<String, Option<String>> = ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    options
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .filter(|e| defaults.get(&e.key) != Some(&e.value))
        .filter_map(|e| e.value.map(|value| Setting { key: e.key, value }))
        .collect()
}

/// Object stores (beyond the local filesystem) the plan's scans read.
fn object_stores_of(plan: &Arc<dyn ExecutionPlan>, datasets: &Datasets) -> Vec<ObjectStoreSpec> {
    let mut specs: Vec<ObjectStoreSpec> = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        let store_url = if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
        {
            Some(scan.object_store_url.as_str().to_string())
        } else {
            node.downcast_ref::<quarry_common::table_write::FileWriteExec>()
                .and_then(|write| url::Url::parse(&write.target().base_url).ok())
                .map(|url| url[..url::Position::BeforePath].to_string())
        };
        if let Some(spec) = store_url.and_then(|url| datasets.store_spec(&url)) {
            // Credentials stay here: executors fetch them by reference.
            let reference = quarry_common::object_stores::reference(&spec);
            if !specs.contains(&reference) {
                specs.push(reference);
            }
        }
        stack.extend(node.children().into_iter().cloned());
    }
    specs
}
