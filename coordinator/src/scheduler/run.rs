//! One query's run: its stages in dependency order, each stage's tasks in parallel, the
//! task outputs kept for the stages that read them, and lost outputs recomputed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use quarry_common::QuarryError;
use quarry_common::codec::{partitioning_to_bytes, plan_to_bytes};

use crate::cluster::ExecutorInfo;
use crate::error::CoordinatorError;
use crate::planner::decisions::DynamicFilter;
use crate::planner::dynamic_filters;
use crate::planner::stages::{Stage, StagePlan};
use quarry_common::column_bounds::{Range, merge};

use super::pieces::reader_stages;
use super::placement::{self, StageLayout};
use super::profile::{QueryProfile, StageProfile, TaskProfile};
use super::watchdog::InFlight;
use super::{QueryTasks, Scheduler, TaskEnd, TaskOutput};

/// The most output (in memory) a task of a stage the coordinator reads sends back with
/// its result. TPC-H's answers at SF1 take a few KB; 256 KB of a few tasks is nothing to
/// hold for a query's life.
const INLINE_OUTPUT_BYTES: u64 = 256 * 1024;

pub(super) struct RunState {
    /// Per stage, per task: where the output of its last successful attempt is.
    pub(super) outputs: BTreeMap<u32, Vec<Option<TaskOutput>>>,
    /// Per stage: its plan with scans laid out over executors, and task placements.
    pub(super) layouts: BTreeMap<u32, Arc<StageLayout>>,
    /// Next attempt number per (stage, task).
    pub(super) attempts: HashMap<(u32, u32), u32>,
    pub(super) profiles: BTreeMap<u32, StageProfile>,
    pub(super) done: usize,
    pub(super) total: usize,
    /// Tasks holding a slot now, by (stage, task).
    pub(super) in_flight: BTreeMap<(u32, u32), InFlight>,
    /// When a task last started or finished.
    pub(super) last_progress: std::time::Instant,
    /// Stages whose plan changed at run time (a join that became a broadcast join).
    pub(super) replaced: BTreeMap<u32, Stage>,
    /// What was decided for a stage before it was laid out, for EXPLAIN ANALYZE.
    pub(super) notes: BTreeMap<u32, Vec<String>>,
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
            replaced: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }
}

/// One query's stages running on the cluster.
pub struct QueryRun {
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) tasks: QueryTasks,
    pub(super) plan: StagePlan,
    pub(super) allowed: Option<BTreeSet<String>>,
    pub(super) state: Mutex<RunState>,
}

impl std::fmt::Debug for QueryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRun")
            .field("query", &self.tasks.query_id)
            .finish()
    }
}

impl QueryRun {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Stage `id` as it runs: as planned, or as changed at run time.
    pub(super) fn stage(&self, id: u32) -> Result<Stage, QuarryError> {
        if let Some(stage) = self.lock().replaced.get(&id) {
            return Ok(stage.clone());
        }
        self.plan.stage(id).cloned().ok_or_else(|| {
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
        // branches (the two sides of a join) run at the same time; a stage whose scans a
        // dynamic filter narrows also waits for the stage that filter comes from.
        let waiting: Vec<(u32, Vec<u32>)> = self
            .plan
            .stages
            .iter()
            .map(|s| {
                let mut inputs = s.inputs();
                inputs.extend(self.plan.waits_for(s.id));
                (s.id, inputs)
            })
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
    pub(super) async fn run_dag(
        &self,
        mut waiting: Vec<(u32, Vec<u32>)>,
    ) -> Result<(), QuarryError> {
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
                    let done = done?;
                    finished.insert(done);
                    self.choose_joins(done, &mut waiting)?;
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
    pub(super) fn layout(&self, stage: &Stage) -> Result<Arc<StageLayout>, QuarryError> {
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
        let (narrowed, applied) = self.narrowed(stage)?;
        let mut layout = placement::lay_out(&narrowed, &executors)?;
        layout.notes = self.lock().notes.remove(&stage.id).unwrap_or_default();
        layout.notes.extend(applied);
        let layout = Arc::new(layout);
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

    /// The stage with its scans narrowed by the dynamic filters whose build stages have
    /// finished, and those filters as EXPLAIN ANALYZE shows them. A filter whose range is
    /// unknown (a task could not measure it) is left out: it only changes speed.
    pub(super) fn narrowed(&self, stage: &Stage) -> Result<(Stage, Vec<String>), QuarryError> {
        let mut stage = stage.clone();
        let mut applied = Vec::new();
        for filter in self
            .plan
            .dynamic_filters
            .iter()
            .filter(|f| f.probe_stage == stage.id)
        {
            let ranges: Option<Vec<Range>> = {
                let state = self.lock();
                let Some(outputs) = state
                    .outputs
                    .get(&filter.build_stage)
                    .and_then(|o| o.iter().map(Option::as_ref).collect::<Option<Vec<_>>>())
                else {
                    continue;
                };
                filter
                    .build_columns
                    .iter()
                    .map(|&c| merge(outputs.iter().map(|o| o.bounds.as_slice()), c))
                    .collect::<Result<Option<Vec<Range>>, QuarryError>>()?
            };
            let Some(ranges) = ranges else {
                continue;
            };
            let plan = dynamic_filters::narrow(&stage.plan, filter, &ranges)?;
            if !Arc::ptr_eq(&plan, &stage.plan) {
                stage.plan = plan;
                applied.push(describe_ranges(filter, &ranges));
            }
        }
        Ok((stage, applied))
    }

    /// Bytes of output a task of `stage_id` sends back with its result: the stages the
    /// coordinator reads itself send small outputs that way, so their last hop is no
    /// fetch.
    pub(super) fn inline_output_limit(&self, stage_id: u32) -> u64 {
        if reader_stages(&self.plan.root).contains(&stage_id) {
            INLINE_OUTPUT_BYTES
        } else {
            0
        }
    }

    /// The output columns of `stage_id` whose ranges dynamic filters need.
    pub(super) fn bound_columns(&self, stage_id: u32) -> Vec<u32> {
        let mut columns: Vec<u32> = self
            .plan
            .dynamic_filters
            .iter()
            .filter(|f| f.build_stage == stage_id)
            .flat_map(|f| f.build_columns.iter().copied())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    pub(super) fn eligible(&self, executor: &ExecutorInfo) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.contains(&executor.executor_id))
    }

    /// Run the given tasks of a stage (all when None), recomputing lost inputs as needed.
    pub(super) fn run_stage<'a>(
        &'a self,
        stage_id: u32,
        only: Option<Vec<u32>>,
    ) -> BoxFuture<'a, Result<(), QuarryError>> {
        // Its span, whether it runs first or again to recompute lost outputs.
        let span = tracing::info_span!("stage", stage = stage_id);
        Box::pin(async move {
            let stage = &self.stage(stage_id)?;
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
                        let span = tracing::info_span!("task", stage = stage_id, partition);
                        self.run_task(
                            stage,
                            partition,
                            placement,
                            plan_bytes.clone(),
                            output_bytes.clone(),
                        )
                        .instrument(span)
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
        }.instrument(span))
    }

    /// Recompute the outputs of `stages` that live on executors no longer active.
    pub(super) fn ensure_available(
        &self,
        stages: Vec<u32>,
    ) -> BoxFuture<'_, Result<(), QuarryError>> {
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
                                    o.as_ref().is_none_or(|o| o.lost(&self.scheduler.cluster))
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

    pub(super) fn record(
        &self,
        stage: &Stage,
        partition: u32,
        output: TaskOutput,
        task: TaskProfile,
    ) {
        let (done, total) = {
            let mut state = self.lock();
            if let Some(slot) = state
                .outputs
                .get_mut(&stage.id)
                .and_then(|o| o.get_mut(partition as usize))
            {
                *slot = Some(output);
            }
            let layout = state.layouts.get(&stage.id).cloned();
            let profile = state.profiles.entry(stage.id).or_insert_with(|| {
                StageProfile::new(
                    stage,
                    layout.as_ref().map(|l| &l.plan).unwrap_or(&stage.plan),
                    layout.as_ref().map(|l| l.notes.clone()).unwrap_or_default(),
                )
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
    pub(super) fn forget_outputs_on(&self, executor_id: &str) {
        let mut incarnations = BTreeSet::new();
        {
            let mut state = self.lock();
            for outputs in state.outputs.values_mut() {
                for slot in outputs.iter_mut() {
                    if slot.as_ref().is_some_and(|o| o.held_on(executor_id))
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

    pub(super) fn next_attempt(&self, stage_id: u32, partition: u32) -> u32 {
        let mut state = self.lock();
        let attempt = state.attempts.entry((stage_id, partition)).or_insert(0);
        let this = *attempt;
        *attempt += 1;
        this
    }
}

/// "k between 500 and 520 (from stage 1)".
fn describe_ranges(filter: &DynamicFilter, ranges: &[Range]) -> String {
    let conditions: Vec<String> = filter
        .names
        .iter()
        .zip(ranges)
        .map(|(name, range)| match range {
            Range::Within(min, max) => format!("{name} between {min} and {max}"),
            Range::Empty => format!("{name} matches nothing"),
        })
        .collect();
    format!(
        "dynamic filter: {} (from stage {})",
        conditions.join(" and "),
        filter.build_stage
    )
}
