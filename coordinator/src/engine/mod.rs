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
//!
//! The engine owns sessions, planning, the jobs it starts and every background task
//! (`tasks::Tasks`), and implements the [`QueryService`](crate::service::QueryService)
//! frontends hold (`front_door.rs`). It changes the catalog only through its
//! [`CatalogOps`] (`catalog_ops/`: sources, schemas, datasets, users, roles, grants, and
//! what goes with a dropped object), which owns the catalog, access control and logins and
//! plans no query; the engine reads the catalog through [`Datasets`] and speaks no client
//! protocol.

pub(crate) mod catalog_ops;
mod ddl;
mod execution;
mod front_door;
mod input_roots;
mod outcome;
mod placement;
mod query_settings;
mod reflections;
mod result_batches;
mod results_cache;
mod results_shortcut;
mod writes;

pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{LogicalPlan, Statement as LogicalStatement};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use quarry_common::QuarryError;
use quarry_common::cpu_runtime::CpuRuntime;
use quarry_common::shuffle_reader::ExchangeAccess;

use crate::access::auth::Auth;
use crate::access::{AccessControl, UserAccess};
use crate::datasets::Datasets;
use crate::error::CoordinatorError;
use crate::jobs::admission::Admission;
use crate::jobs::{CancelOnDrop, Job, Jobs};
use crate::planner::stages::display_stages;
use crate::scheduler::Scheduler;
use crate::sql::parser::{self, Statement};
use crate::sql::pg_functions;
use crate::tasks::Tasks;
use catalog_ops::CatalogOps;
use outcome::{CreatedTable, DistributedQuery, Outcome, ReleaseOnDrop, Then};
pub(crate) use query_settings::base_config;
pub(crate) use result_batches::message_batch;
use result_batches::plan_text_batch;
pub use session::parse_duration;
pub(crate) use session::{PreparedStatement, QuarryOptions, Session, Sessions, quarry_options};

/// The most materialization data a query reads on the coordinator rather than on
/// executors.
pub(super) const SMALL_MATERIALIZATIONS_BYTES: u64 = 64 * 1024 * 1024;

/// Limits a coordinator puts on the queries it runs.
pub struct EngineLimits {
    pub admission: Admission,
    /// What one request may ask (SQL size and shape, plan depth).
    pub request: crate::limits::Limits,
    /// Flight SQL results nobody starts reading this soon are abandoned.
    pub fetch_timeout: Duration,
    /// Bytes of results the results cache keeps (0: none).
    pub results_cache_size: usize,
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
    /// Every piece of background work the engine starts.
    pub(crate) tasks: Tasks,
    /// Changes to the catalog (sources, schemas, datasets, users, roles, grants).
    pub(crate) catalog: CatalogOps,
    /// Results of repeated deterministic queries (see `results_cache.rs`).
    results: results_cache::ResultsCache,
    /// Statements whose repeats the results cache serves unplanned (`results_shortcut.rs`).
    shortcuts: results_shortcut::Shortcuts,
    /// Plans the executors ran last time (`placement.rs`).
    placement_hints: placement::PlacementHints,
}

impl Engine {
    pub fn new(
        datasets: Arc<Datasets>,
        auth: Arc<Auth>,
        jobs: Arc<Jobs>,
        scheduler: Arc<Scheduler>,
        limits: EngineLimits,
        tasks: Tasks,
    ) -> Result<Arc<Self>, QuarryError> {
        let base_config = datasets.base_config().clone();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpu = CpuRuntime::new(threads, "coordinator-query")
            .map_err(|e| CoordinatorError::Runtime {
                what: "query runtime",
                detail: e.to_string(),
            })
            .map_err(QuarryError::from)?;
        let catalog = CatalogOps::new(
            Arc::clone(&datasets),
            Arc::clone(&auth),
            tasks.clone(),
            limits.request.clone(),
        );
        let results = results_cache::ResultsCache::new(limits.results_cache_size);
        Ok(Arc::new(Engine {
            results,
            shortcuts: Default::default(),
            placement_hints: Default::default(),
            datasets,
            access: Arc::clone(auth.control()),
            auth,
            catalog,
            jobs,
            scheduler,
            sessions: Sessions::default(),
            base_config,
            limits,
            cpu,
            tasks,
        }))
    }

    /// Cancel the running jobs, tell every background loop to stop and wait up to `grace`
    /// for all of it to end.
    pub async fn shutdown(&self, grace: Duration) {
        // Listeners and loops first, so no new job starts while the running ones end.
        self.tasks.stopping().cancel();
        for job in self.jobs.running() {
            job.cancel("the coordinator is shutting down");
        }
        if !self.tasks.shutdown(grace).await {
            tracing::warn!(
                running = self.tasks.running(),
                "background work still running at shutdown"
            );
        }
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
        Ok(config
            .with_extension(Arc::new(ExchangeAccess {
                channels: Arc::clone(self.scheduler.channels()),
                local: None,
                recovery: None,
                activity: None,
            }))
            .with_extension(Arc::new(query_settings::InProcessSettings::unless_set(
                &session.settings(),
            ))))
    }

    /// A planning session that sees and reads only what the session's user may.
    fn query_state(&self, session: &Session) -> Result<SessionState, QuarryError> {
        let mut state = self
            .datasets
            .session_state(self.query_config(session)?, Some(self.access_for(session)));
        // The functions PostgreSQL clients call, answered for this session.
        let facts = pg_functions::SessionFacts {
            user: session.user.clone(),
            schema: session.default_schema(),
            settings: session.settings(),
        };
        pg_functions::register(&mut state, &facts)?;
        Ok(state)
    }

    /// Start `sql` as a job. Planning errors are returned (and recorded on the job);
    /// execution errors show up in the job's state and at the end of its results.
    pub async fn submit(
        self: &Arc<Self>,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
        frontend: &str,
    ) -> Result<Arc<Job>, QuarryError> {
        let job = self.jobs.create(
            &crate::sql::prepass::prepare(sql).for_history,
            &session.user,
            frontend,
        );
        // Planning runs on the query runtime too: it reads and writes the catalog (sled,
        // fsync), lists files and infers schemas, none of which belongs on the runtime
        // that serves clients and executors.
        let (engine, planning_session, script, planned_job) = (
            Arc::clone(self),
            Arc::clone(session),
            sql.to_string(),
            Arc::clone(&job),
        );
        let reports = reflections::PlanningReports::default();
        let scoped = reports.clone();
        // A client that goes away while its statement is planned (dropping this future
        // aborts the planning) must not leave the job PLANNING for ever.
        let abandoned = CancelOnDrop::new(&job, "the client went away while it was planned");
        let planning = std::time::Instant::now();
        let plan_span = tracing::info_span!(parent: &job.span(), "plan");
        let planned = self
            .cpu
            .run(
                async move {
                    scoped
                        .scope(engine.plan_script(
                            &planning_session,
                            &script,
                            parameters,
                            &planned_job,
                        ))
                        .await
                }
                .instrument(plan_span),
            )
            .await
            .unwrap_or_else(|panic| Err(CoordinatorError::crashed("planning", panic).into()));
        abandoned.disarm();
        job.mark("plan");
        crate::metrics::planned(planning.elapsed());
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
        job: &Job,
    ) -> Result<Outcome, QuarryError> {
        let pending = match self
            .before_planning(session, sql, parameters.as_deref())
            .await
        {
            results_shortcut::Before::Hit(hit) => return Ok(Outcome::Cached(hit, None)),
            results_shortcut::Before::Plan(pending) => pending,
        };
        let mut statements = parser::parse(sql, &self.limits.request)?;
        job.mark("parse");
        let last = statements
            .pop()
            .ok_or_else(|| QuarryError::invalid("no SQL statement given"))?;
        if statements.is_empty() {
            let outcome = self.plan_statement(session, last, parameters).await?;
            if let Some(pending) = pending {
                self.after_planning(pending, &job.id, &outcome).await;
            }
            return Ok(outcome);
        }
        for statement in statements {
            let outcome = self.plan_statement(session, statement, None).await?;
            let sink = self.jobs.create("(script statement)", &session.user, "");
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
                let batch = self
                    .explain(session, &state, explain.plan.as_ref(), report)
                    .await?;
                Ok(Outcome::Rows(batch.schema(), vec![batch]))
            }
            query => {
                self.note_aggregates(session, &query);
                let (state, _) = self.with_reflections(session, state, &query).await?;
                let placed = self.place(&state, &query).await?;
                self.through_results_cache(session, &query, placed)
            }
        }
    }

    /// Plan a query for the coordinator or the executors.
    async fn plan_query(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<Outcome, QuarryError> {
        let placed = self.place(state, plan).await?;
        self.plan_placed(placed)
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

    /// EXPLAIN: the logical plan, the physical plan and the stage DAG.
    async fn explain(
        &self,
        session: &Session,
        state: &SessionState,
        plan: &LogicalPlan,
        reflections: Option<Arc<crate::reflections::candidates::Report>>,
    ) -> Result<RecordBatch, QuarryError> {
        let optimized = state.optimize(plan)?;
        let placed = self.place(state, plan).await?;
        let cache = self.explain_results_cache(session, plan, &placed);
        let placement::PlacedPlan {
            physical,
            placement,
            state: placed_state,
        } = placed;
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
        rows.push(("placement".to_string(), placement.reason.clone()));
        rows.push(("results_cache".to_string(), cache));
        if placement.local() {
            rows.push(("distributed_plan".to_string(), placement.reason));
        } else {
            let stages = placement::stages_of(placement.site, physical, &placed_state)?;
            rows.push(("distributed_plan".to_string(), display_stages(&stages)));
        }
        plan_text_batch(rows)
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
