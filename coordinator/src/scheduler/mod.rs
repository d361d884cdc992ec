//! The scheduler: runs a query's stages as tasks on executors, and keeps the query going
//! when executors die.
//!
//! A stage runs once the stages it reads have finished (independent stages at the same
//! time); the tasks of a stage run in parallel, each in a slot
//! of an executor chosen by [`placement`]. Every task output is kept on the executor
//! that produced it, under an attempt number, until the query ends.
//!
//! Failures, by kind:
//! - the task's executor goes away (the call breaks, or heartbeats stop): the task runs
//!   again elsewhere with the next attempt number, up to `quarry.task_max_attempts`;
//! - the task could not read an input piece (its producer's executor is gone): the lost
//!   producer tasks are recomputed from their own inputs (lineage), then the task runs
//!   again against the new pieces;
//! - the task fails on its data or plan: the query fails.
//!
//! Before a stage runs, and before the coordinator reads the last stage, every input
//! piece is checked to live on an active executor; lost ones are recomputed first.
//!
//! # Why tasks holding slots cannot wait on each other
//!
//! A cluster of multi-slot executors once hung for good (TPC-H SF1 Q7/Q9 on two
//! executors with two slots): every slot was held by a task waiting, without using any
//! CPU, for exchange data that never arrived, and every later query waited for a slot.
//! The cause was HTTP/2 flow control. All `do_get` streams from one executor to a peer
//! shared one connection, and so one connection window. DataFusion opens some inputs
//! long before it reads them: a broadcast join executes its build and probe inputs when
//! it starts, and a coalesce runs each of its inputs in a task that stops at a small
//! bounded channel. Those streams kept receiving data until their windows were full,
//! which filled the connection's window, and the one stream the task was actually
//! reading — on the same connection — stalled. With two tasks of one executor reading
//! from the same peer the connection filled twice as fast; with one slot it did not.
//!
//! The guarantee, by construction:
//! 1. A task waits only on finished data. A stage starts only after every stage it reads
//!    has finished, and its outputs are complete in the producers' exchange stores, so
//!    no task ever waits for another task to produce something (lost outputs are
//!    recomputed before the reading stage runs, without holding a slot).
//! 2. A task's reads cannot be held up by any other read. Every exchange stream has a
//!    connection of its own while it is open (`FlightChannels::data_client`), so a
//!    stream's unread data blocks only that stream, exactly like DataFusion's own bounded
//!    channels in one process, where the same plans never deadlock.
//! 3. Slots are handed out by [`slots`] from free slots only; a task never asks for a
//!    slot while holding one.
//!
//! Should a future change break this, the [`watchdog`] fails a query whose tasks all
//! stop making progress for `quarry.stall_timeout`, naming the stage and what each task
//! waits on, instead of letting it hold the cluster.

mod analyze;
mod pieces;
mod placement;
mod profile;
mod slots;
mod watchdog;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::Action;
use bytes::Bytes;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::action_service::call_action;
use quarry_common::codec::{partitioning_to_bytes, plan_to_bytes};
use quarry_common::flight_channels::FlightChannels;
use quarry_common::metrics::OperatorMetrics;
use quarry_common::protocol::{
    ACTION_RELEASE_QUERY, ACTION_RUN_TASK, ObjectStoreSpec, ReleaseQuery, Setting, TaskDefinition,
    TaskFailure, TaskResult,
};
use quarry_common::{ErrorCode, QuarryError};

use crate::cluster::{Cluster, ExecutorInfo};
use crate::error::CoordinatorError;
use crate::planner::stages::{Stage, StagePlan};
pub use analyze::report as analyze_report;
use pieces::reader_stages;
pub use placement::CLUSTER_FILES_URL;
use placement::{Placement, StageLayout};
pub use profile::{QueryProfile, StageProfile, TaskProfile};
use slots::{Eligible, SlotPool};
use watchdog::InFlight;

/// What a query's tasks share.
#[derive(Clone)]
pub struct QueryTasks {
    pub query_id: String,
    pub settings: Vec<Setting>,
    pub object_stores: Vec<ObjectStoreSpec>,
    pub max_attempts: u32,
    /// Use at most this many executors (0 = all).
    pub max_executors: usize,
    /// Called after every finished task with (done, total).
    pub progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
    /// Fail the query when its running tasks all make no progress this long (0 = never).
    pub stall_timeout: Duration,
}

/// A finished task: where its output is.
#[derive(Debug, Clone)]
struct TaskOutput {
    executor_id: String,
    incarnation: u64,
    endpoint: String,
    attempt: u32,
}

/// Why a task call failed.
enum CallError {
    /// The executor could not be reached or went away: try elsewhere.
    Lost(String),
    /// The task could not read a piece produced on `executor`.
    FetchFailed { executor: String, message: String },
    /// The task itself failed (bad data, bad plan): the query fails.
    Failed(QuarryError),
}

/// How one task ended, as far as its stage is concerned.
enum TaskEnd {
    Done(u32, TaskOutput, TaskProfile),
    /// An input piece is gone: recompute inputs, then run it again.
    NeedsInputs(u32),
}

pub struct Scheduler {
    cluster: Arc<Cluster>,
    channels: Arc<FlightChannels>,
    slots: SlotPool,
}

impl Scheduler {
    pub fn new(cluster: Arc<Cluster>, channels: Arc<FlightChannels>) -> Self {
        Scheduler {
            slots: SlotPool::new(Arc::clone(&cluster)),
            cluster,
            channels,
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn channels(&self) -> &Arc<FlightChannels> {
        &self.channels
    }

    /// Prepare a query's run.
    pub fn query(self: &Arc<Self>, tasks: QueryTasks, plan: StagePlan) -> Arc<QueryRun> {
        let allowed = match tasks.max_executors {
            0 => None,
            n => Some(
                self.cluster
                    .active()
                    .into_iter()
                    .take(n)
                    .map(|e| e.executor_id)
                    .collect(),
            ),
        };
        Arc::new(QueryRun {
            scheduler: Arc::clone(self),
            tasks,
            plan,
            allowed,
            state: Mutex::new(RunState::default()),
        })
    }

    /// Tell executors to drop a query's outputs; waits briefly, never fails.
    pub async fn release(&self, query_id: &str, endpoints: &BTreeSet<String>) {
        let body = ReleaseQuery {
            query_id: query_id.to_string(),
        }
        .encode_to_vec();
        let calls = endpoints.iter().map(|endpoint| {
            let body = body.clone();
            async move {
                let Ok(mut client) = self.channels.client(endpoint) else {
                    return;
                };
                let call = call_action(&mut client, ACTION_RELEASE_QUERY, body);
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), call).await {
                    tracing::debug!(%endpoint, "releasing query outputs failed: {e}");
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Run a task on an executor; give up on it as soon as the executor is declared lost.
    async fn call_task(
        &self,
        executor: &ExecutorInfo,
        task: TaskDefinition,
    ) -> Result<TaskResult, CallError> {
        let call = async {
            let mut client = self
                .channels
                .client(&executor.endpoint)
                .map_err(|e| CallError::Lost(e.message))?;
            let mut results = client
                .do_action(Action::new(ACTION_RUN_TASK, task.encode_to_vec()))
                .await
                .map_err(classify_call_error)?;
            let body = match results.next().await {
                Some(Ok(body)) => body,
                Some(Err(e)) => return Err(classify_call_error(e)),
                None => {
                    return Err(CallError::Lost(
                        "the executor returned no task result".into(),
                    ));
                }
            };
            TaskResult::decode(body)
                .map_err(|e| CallError::Failed(CoordinatorError::TaskResult(e.to_string()).into()))
        };
        let lost = async {
            loop {
                if !self
                    .cluster
                    .is_current(&executor.executor_id, executor.incarnation)
                {
                    return CallError::Lost(format!(
                        "executor {} stopped heartbeating",
                        executor.executor_id
                    ));
                }
                self.cluster.changed(Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            result = call => result,
            lost = lost => Err(lost),
        }
    }
}

struct RunState {
    /// Per stage, per task: where the output of its last successful attempt is.
    outputs: BTreeMap<u32, Vec<Option<TaskOutput>>>,
    /// Per stage: its plan with scans laid out over executors, and task placements.
    layouts: BTreeMap<u32, Arc<StageLayout>>,
    /// Next attempt number per (stage, task).
    attempts: HashMap<(u32, u32), u32>,
    profiles: BTreeMap<u32, StageProfile>,
    done: usize,
    total: usize,
    /// Tasks holding a slot now, by (stage, task).
    in_flight: BTreeMap<(u32, u32), InFlight>,
    /// When a task last started or finished.
    last_progress: std::time::Instant,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            outputs: BTreeMap::new(),
            layouts: BTreeMap::new(),
            attempts: HashMap::new(),
            profiles: BTreeMap::new(),
            done: 0,
            total: 0,
            in_flight: BTreeMap::new(),
            last_progress: std::time::Instant::now(),
        }
    }
}

/// One query's stages running on the cluster.
pub struct QueryRun {
    scheduler: Arc<Scheduler>,
    tasks: QueryTasks,
    plan: StagePlan,
    allowed: Option<BTreeSet<String>>,
    state: Mutex<RunState>,
}

impl std::fmt::Debug for QueryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRun")
            .field("query", &self.tasks.query_id)
            .finish()
    }
}

impl QueryRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn stage(&self, id: u32) -> Result<&Stage, QuarryError> {
        self.plan.stage(id).ok_or_else(|| {
            CoordinatorError::invariant(format!("stage {id} is not in the plan")).into()
        })
    }

    /// Where each stage ran, task by task, so far.
    pub fn profile(&self) -> QueryProfile {
        QueryProfile {
            stages: self.lock().profiles.values().cloned().collect(),
            root: Vec::new(),
        }
    }

    /// Run every stage; return the root plan reading the last stage's outputs.
    pub async fn run_stages(&self) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
        {
            let mut state = self.lock();
            state.total = self.plan.task_count();
        }
        // A stage starts as soon as every stage it reads has finished, so independent
        // branches (the two sides of a join) run at the same time.
        let waiting: Vec<(u32, Vec<u32>)> = self
            .plan
            .stages
            .iter()
            .map(|s| (s.id, s.inputs()))
            .collect();
        let stages = self.run_dag(waiting);
        // The watchdog fails the query if its tasks stop making progress; dropping the
        // stages drops every task call, which stops the tasks and frees their slots.
        tokio::select! {
            result = stages => result?,
            stalled = self.watch() => return Err(stalled),
        }
        self.ensure_available(reader_stages(&self.plan.root))
            .await?;
        self.resolve(&self.plan.root)
    }

    /// Run stages as soon as the stages they read have finished.
    async fn run_dag(&self, mut waiting: Vec<(u32, Vec<u32>)>) -> Result<(), QuarryError> {
        let mut finished: BTreeSet<u32> = BTreeSet::new();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            let (ready, still): (Vec<_>, Vec<_>) = waiting
                .into_iter()
                .partition(|(_, inputs)| inputs.iter().all(|i| finished.contains(i)));
            waiting = still;
            for (id, _) in ready {
                running.push(async move {
                    self.run_stage(id, None)
                        .await
                        .map_err(|e| e.context(format!("stage {id}")))
                        .map(|()| id)
                });
            }
            match running.next().await {
                Some(done) => {
                    finished.insert(done?);
                }
                None => break,
            }
        }
        if !waiting.is_empty() {
            return Err(CoordinatorError::invariant(
                "the stage plan has stages whose inputs never run",
            )
            .into());
        }
        Ok(())
    }

    /// The stage's plan with its scans laid out over the executors (fixed at first run).
    fn layout(&self, stage: &Stage) -> Result<Arc<StageLayout>, QuarryError> {
        if let Some(layout) = self.lock().layouts.get(&stage.id) {
            return Ok(Arc::clone(layout));
        }
        let executors: Vec<ExecutorInfo> = self
            .scheduler
            .cluster
            .active()
            .into_iter()
            .filter(|e| self.eligible(e))
            .collect();
        let layout = Arc::new(placement::lay_out(stage, &executors)?);
        let mut state = self.lock();
        let layout = Arc::clone(state.layouts.entry(stage.id).or_insert(layout));
        let count = layout.task_count();
        state
            .outputs
            .entry(stage.id)
            .or_insert_with(|| vec![None; count]);
        let original = stage.task_count();
        // A layout may change how many tasks the stage has.
        state.total = (state.total + count).saturating_sub(original);
        Ok(layout)
    }

    fn eligible(&self, executor: &ExecutorInfo) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.contains(&executor.executor_id))
    }

    /// Run the given tasks of a stage (all when None), recomputing lost inputs as needed.
    fn run_stage<'a>(
        &'a self,
        stage_id: u32,
        only: Option<Vec<u32>>,
    ) -> BoxFuture<'a, Result<(), QuarryError>> {
        Box::pin(async move {
            let stage = self.stage(stage_id)?;
            let layout = self.layout(stage)?;
            let mut pending: Vec<u32> =
                only.unwrap_or_else(|| (0..layout.task_count() as u32).collect());
            let output_bytes = partitioning_to_bytes(stage.output.as_ref())?;
            let inputs = stage.inputs();
            let mut rounds = 0u32;
            while !pending.is_empty() {
                rounds += 1;
                if rounds > self.tasks.max_attempts.max(1) + 1 {
                    return Err(QuarryError::unavailable(format!(
                        "the inputs of stage {stage_id} kept disappearing; giving up after {} rounds",
                        rounds - 1
                    )));
                }
                self.ensure_available(inputs.clone()).await?;
                let resolved = self.resolve(&layout.plan)?;
                let plan_bytes = plan_to_bytes(resolved)?;
                let concurrency = self.scheduler.cluster.total_slots().max(1);
                let ends: Vec<TaskEnd> = futures::stream::iter(pending.drain(..))
                    .map(|partition| {
                        let placement = layout.placement(partition as usize);
                        self.run_task(
                            stage,
                            partition,
                            placement,
                            plan_bytes.clone(),
                            output_bytes.clone(),
                        )
                    })
                    .buffer_unordered(concurrency)
                    .try_collect()
                    .await?;
                for end in ends {
                    match end {
                        TaskEnd::Done(partition, output, profile) => {
                            self.record(stage, partition, output, profile)
                        }
                        TaskEnd::NeedsInputs(partition) => pending.push(partition),
                    }
                }
            }
            Ok(())
        })
    }

    /// Recompute the outputs of `stages` that live on executors no longer active.
    fn ensure_available(&self, stages: Vec<u32>) -> BoxFuture<'_, Result<(), QuarryError>> {
        Box::pin(async move {
            for stage_id in stages {
                let lost: Vec<u32> = {
                    let state = self.lock();
                    state
                        .outputs
                        .get(&stage_id)
                        .map(|outputs| {
                            outputs
                                .iter()
                                .enumerate()
                                .filter(|(_, o)| {
                                    o.as_ref().is_none_or(|o| {
                                        !self
                                            .scheduler
                                            .cluster
                                            .is_current(&o.executor_id, o.incarnation)
                                    })
                                })
                                .map(|(p, _)| p as u32)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                if !lost.is_empty() {
                    tracing::warn!(
                        query = %self.tasks.query_id,
                        stage = stage_id,
                        tasks = ?lost,
                        "recomputing outputs lost with their executor"
                    );
                    {
                        let mut state = self.lock();
                        state.total += lost.len();
                    }
                    self.run_stage(stage_id, Some(lost)).await?;
                }
            }
            Ok(())
        })
    }

    fn record(&self, stage: &Stage, partition: u32, output: TaskOutput, task: TaskProfile) {
        let (done, total) = {
            let mut state = self.lock();
            if let Some(slot) = state
                .outputs
                .get_mut(&stage.id)
                .and_then(|o| o.get_mut(partition as usize))
            {
                *slot = Some(output);
            }
            let layout_plan = state.layouts.get(&stage.id).map(|l| Arc::clone(&l.plan));
            let profile = state.profiles.entry(stage.id).or_insert_with(|| {
                StageProfile::new(stage, layout_plan.as_ref().unwrap_or(&stage.plan))
            });
            profile.tasks.retain(|t| t.partition != partition);
            profile.tasks.push(task);
            profile.tasks.sort_by_key(|t| t.partition);
            state.done += 1;
            (state.done, state.total.max(state.done))
        };
        (self.tasks.progress)(done, total);
    }

    /// An executor could not serve an output it made: every output of this query held
    /// there is gone (the executor died, or restarted and lost them).
    fn forget_outputs_on(&self, executor_id: &str) {
        let mut incarnations = BTreeSet::new();
        {
            let mut state = self.lock();
            for outputs in state.outputs.values_mut() {
                for slot in outputs.iter_mut() {
                    if slot.as_ref().is_some_and(|o| o.executor_id == executor_id)
                        && let Some(o) = slot.take()
                    {
                        incarnations.insert(o.incarnation);
                    }
                }
            }
        }
        for incarnation in incarnations {
            self.scheduler.cluster.mark_lost(executor_id, incarnation);
        }
    }

    fn next_attempt(&self, stage_id: u32, partition: u32) -> u32 {
        let mut state = self.lock();
        let attempt = state.attempts.entry((stage_id, partition)).or_insert(0);
        let this = *attempt;
        *attempt += 1;
        this
    }

    async fn run_task(
        &self,
        stage: &Stage,
        partition: u32,
        placement: Placement,
        plan: Bytes,
        output_partitioning: Vec<u8>,
    ) -> Result<TaskEnd, QuarryError> {
        let mut failures: Vec<String> = Vec::new();
        loop {
            let attempt = self.next_attempt(stage.id, partition);
            let eligible: Eligible = {
                let allowed = self.allowed.clone();
                let placement = placement.clone();
                Arc::new(move |e: &ExecutorInfo| {
                    allowed.as_ref().is_none_or(|a| a.contains(&e.executor_id))
                        && placement.allows(&e.executor_id)
                })
            };
            let (executor, lease) = self
                .scheduler
                .slots
                .acquire(&self.tasks.query_id, eligible, placement.preferred())
                .await
                .map_err(|e| match &placement {
                    Placement::Only(holders) => QuarryError::unavailable(format!(
                        "task {partition} of stage {} reads files held only by {} and none of them is available",
                        stage.id,
                        holders.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    _ => e,
                })?;
            let task = TaskDefinition {
                query_id: self.tasks.query_id.clone(),
                stage_id: stage.id,
                partition,
                attempt,
                plan: plan.to_vec(),
                output_partitioning: output_partitioning.clone(),
                settings: self.tasks.settings.clone(),
                object_stores: self.tasks.object_stores.clone(),
            };
            let in_flight = self.in_flight(stage.id, partition, &executor.executor_id, attempt);
            let outcome = self.scheduler.call_task(&executor, task).await;
            drop(in_flight);
            drop(lease);
            let reason = match outcome {
                Ok(result) => {
                    let output = TaskOutput {
                        executor_id: executor.executor_id.clone(),
                        incarnation: executor.incarnation,
                        endpoint: executor.endpoint.clone(),
                        attempt,
                    };
                    let operators: Vec<OperatorMetrics> =
                        serde_json::from_str(&result.metrics_json).unwrap_or_default();
                    let profile = TaskProfile {
                        partition,
                        attempt,
                        executor_id: executor.executor_id,
                        output_rows: result.output_rows.iter().sum(),
                        output_bytes: result.output_bytes.iter().sum(),
                        elapsed_ms: result.elapsed_ms,
                        failed_attempts: failures,
                        operators,
                    };
                    return Ok(TaskEnd::Done(partition, output, profile));
                }
                Err(CallError::Failed(e)) => return Err(e),
                Err(CallError::FetchFailed {
                    executor: lost,
                    message,
                }) => {
                    tracing::warn!(
                        query = %self.tasks.query_id,
                        stage = stage.id,
                        partition,
                        "task lost an input on {lost}: {message}"
                    );
                    self.forget_outputs_on(&lost);
                    return Ok(TaskEnd::NeedsInputs(partition));
                }
                Err(CallError::Lost(reason)) => reason,
            };
            tracing::warn!(
                query = %self.tasks.query_id,
                stage = stage.id,
                partition,
                attempt,
                executor = %executor.executor_id,
                "task lost its executor: {reason}"
            );
            self.scheduler
                .cluster
                .mark_lost(&executor.executor_id, executor.incarnation);
            self.scheduler.channels.forget(&executor.endpoint);
            failures.push(format!(
                "attempt {attempt} on {}: {reason}",
                executor.executor_id
            ));
            if failures.len() as u32 >= self.tasks.max_attempts.max(1) {
                return Err(QuarryError::unavailable(format!(
                    "task {partition} failed {} times; giving up ({})",
                    failures.len(),
                    failures.join("; ")
                )));
            }
        }
    }
}

fn classify_call_error(e: arrow_flight::error::FlightError) -> CallError {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => {
            if !status.details().is_empty()
                && let Ok(failure) = TaskFailure::decode(status.details())
            {
                if let Some(fetch) = failure.fetch_failed {
                    return CallError::FetchFailed {
                        executor: fetch.executor_id,
                        message: failure.message,
                    };
                }
                return CallError::Failed(QuarryError::new(
                    ErrorCode::parse(&failure.code),
                    failure.message,
                ));
            }
            // Executors describe every task failure in the details; a status without
            // them comes from the transport (a reset connection, a stopping server).
            match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::Unimplemented => {
                    CallError::Failed(QuarryError::from_status(&status))
                }
                _ => CallError::Lost(status.message().to_string()),
            }
        }
        other => CallError::Lost(other.to_string()),
    }
}
