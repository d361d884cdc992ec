//! Running one task: decode its plan, execute its partition, split the output into the
//! exchange store, and report what happened.

use std::sync::Arc;
use std::time::Instant;

use arrow::compute::BatchCoalescer;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use prost::Message;
use quarry_common::action_service::call_action;
use quarry_common::codec::{partitioning_from_bytes, plan_from_bytes};
use quarry_common::column_bounds::BoundsCollector;
use quarry_common::flight_channels::FlightChannels;
use quarry_common::inline_pieces::InlinePieces;
use quarry_common::metrics::collect_operator_metrics;
use quarry_common::object_stores::ObjectStoreRegistrar;
use quarry_common::protocol::{
    ACTION_OBJECT_STORE, ObjectStoreRequest, ObjectStoreSpec, TaskDefinition, TaskResult,
};
use quarry_common::shuffle_reader::ExchangeAccess;

use crate::exchange::{ExchangeStore, OutputWriter};
use crate::running::RunningTask;

/// The most output a task sends back with its result, whatever it is asked for: more is
/// fetched from the exchange store.
const MAX_INLINE_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// What every task on this executor shares.
#[derive(Debug)]
pub struct TaskEnvironment {
    pub executor_id: String,
    pub cpu: quarry_common::cpu_runtime::CpuRuntime,
    pub runtime: Arc<RuntimeEnv>,
    pub exchange: Arc<ExchangeStore>,
    pub channels: Arc<FlightChannels>,
    pub object_stores: ObjectStoreRegistrar,
    /// The coordinator's internal endpoint, where object store specs come from.
    pub coordinator: String,
    /// Where operators spill.
    pub spill_dir: std::path::PathBuf,
    /// Task outcomes are counted here.
    pub(crate) metrics: Arc<crate::metrics::ExecutorMetrics>,
    /// Plans the tasks of one stage attempt share (see `shared_plans.rs`).
    pub(crate) plans: Arc<crate::shared_plans::SharedPlans>,
    /// DataFusion's functions, registered once (see `task_context`).
    pub(crate) template: std::sync::OnceLock<Result<Arc<TaskContext>, String>>,
}

impl TaskEnvironment {
    /// A task's DataFusion context: the functions of one session registered at the first
    /// task, with the task's settings. A task only decodes and runs a plan, so it needs no
    /// session of its own: copying one (its rules, catalogs and formats too) took 0.3-0.5
    /// ms of every task.
    fn task_context(&self, config: SessionConfig) -> Result<Arc<TaskContext>> {
        let template = self.template.get_or_init(|| {
            let mut state = SessionStateBuilder::new()
                .with_default_features()
                .with_runtime_env(Arc::clone(&self.runtime))
                .build();
            quarry_common::sketches::register(&mut state).map_err(|e| e.to_string())?;
            Ok(state.task_ctx())
        });
        let template = template
            .as_ref()
            .map_err(|e| DataFusionError::Internal(e.clone()))?;
        Ok(Arc::new(TaskContext::new(
            None,
            template.session_id(),
            config,
            template.scalar_functions().clone(),
            template.higher_order_functions().clone(),
            template.aggregate_functions().clone(),
            template.window_functions().clone(),
            template.runtime_env(),
        )))
    }

    /// Files on disk now: operator spills and exchange pieces.
    pub fn spill_files(&self) -> u32 {
        fn count(dir: &std::path::Path) -> u32 {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| {
                            let path = e.path();
                            if path.is_dir() { count(&path) } else { 1 }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.spill_dir) + self.exchange.files()
    }
}

/// The full spec of a store a task names, from the coordinator (credentials travel only
/// over the authenticated internal channel and stay in this process's memory).
async fn fetch_store(
    env: &TaskEnvironment,
    reference: &ObjectStoreSpec,
) -> Result<ObjectStoreSpec> {
    let mut client = env.channels.client(&env.coordinator)?;
    let request = ObjectStoreRequest {
        url: reference.url.clone(),
    };
    let bytes = call_action(&mut client, ACTION_OBJECT_STORE, request.encode_to_vec()).await?;
    let spec: ObjectStoreSpec = quarry_common::protocol::decode(&bytes, "object store spec")?;
    if quarry_common::object_stores::referenced_fingerprint(reference)
        != Some(quarry_common::object_stores::fingerprint(&spec).as_str())
    {
        return Err(DataFusionError::from(
            quarry_common::QuarryError::unavailable(format!(
                "the object store {} changed while the query ran; run it again",
                reference.url
            )),
        ));
    }
    Ok(spec)
}

pub async fn run_task(
    env: &TaskEnvironment,
    task: TaskDefinition,
    running: &RunningTask,
) -> Result<TaskResult> {
    let started = Instant::now();
    let mut config = SessionConfig::new();
    for setting in &task.settings {
        quarry_common::settings::check(&setting.key, &setting.value)?;
        config.options_mut().set(&setting.key, &setting.value)?;
    }
    let batch_size = config.batch_size();
    let config = config.with_extension(Arc::new(ExchangeAccess {
        channels: Arc::clone(&env.channels),
        local: Some(Arc::clone(&env.exchange) as _),
        recovery: None,
        activity: Some(Arc::clone(&running.activity)),
    }));
    for reference in &task.object_stores {
        if !env.object_stores.holds(reference) {
            let spec = fetch_store(env, reference).await?;
            env.object_stores
                .register(&env.runtime, &spec)
                .map_err(DataFusionError::from)?;
        }
    }
    let task_ctx = env.task_context(config)?;
    let lease = env.plans.acquire(
        (&task.query_id, task.stage_id, task.attempt),
        &task.plan,
        || cooperative(plan_from_bytes(&task.plan, &task_ctx)?),
    )?;
    let plan = Arc::clone(&lease.plan);
    let _ = running.plan.set(Arc::clone(&plan));
    let partitioning =
        partitioning_from_bytes(&task.output_partitioning, &plan.schema(), &task_ctx)?;
    let output_count = partitioning
        .as_ref()
        .map(|p| p.partition_count())
        .unwrap_or(1);
    let input_partitions = plan.output_partitioning().partition_count();
    let partition = task.partition as usize;
    if partition >= input_partitions {
        return Err(DataFusionError::Internal(format!(
            "task for partition {partition} of a plan with {input_partitions} partitions"
        )));
    }

    let mut partitioner = partitioning
        .map(|p| BatchPartitioner::try_new(p, Time::new(), partition, input_partitions))
        .transpose()?;
    let mut coalescers: Vec<BatchCoalescer> = (0..output_count)
        .map(|_| BatchCoalescer::new(plan.schema(), batch_size))
        .collect();
    let mut output = env.exchange.writer(plan.schema(), output_count);
    let mut inline = InlinePieces::new(
        output_count,
        task.inline_output_limit.min(MAX_INLINE_OUTPUT_BYTES),
    );

    let mut bounds = BoundsCollector::new(&plan.schema(), &task.bound_columns);
    let mut stream = plan.execute(partition, Arc::clone(&task_ctx))?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if !bounds.is_empty() {
            bounds.update(&batch);
        }
        match partitioner.as_mut() {
            Some(partitioner) => partitioner.partition(batch, |i, piece| {
                push(&mut coalescers[i], &mut output, &mut inline, i, piece)
            })?,
            None => push(&mut coalescers[0], &mut output, &mut inline, 0, batch)?,
        }
    }
    for (i, coalescer) in coalescers.iter_mut().enumerate() {
        coalescer.finish_buffered_batch()?;
        while let Some(batch) = coalescer.next_completed_batch() {
            inline.push(i, &batch);
            output.push(i, batch)?;
        }
    }
    let inline_pieces = inline.finish(&plan.schema())?;
    let (output_rows, output_bytes) = output.stats();
    // An output sent back with the result is read from there: dropping the writer frees
    // its memory (or files) instead of keeping a copy nobody fetches until the query ends.
    if inline_pieces.is_empty() {
        output.finish(&task.query_id, task.stage_id, task.partition, task.attempt)?;
    }
    drop(stream);
    // A shared plan's metrics hold every partition run on it: the last task reports them.
    let metrics = if lease.finish() {
        collect_operator_metrics(&plan)
    } else {
        Vec::new()
    };
    env.metrics.task_io(
        metrics.iter().map(|m| m.spilled_bytes).sum(),
        metrics.iter().map(|m| m.fetched_bytes).sum(),
    );
    Ok(TaskResult {
        executor_id: env.executor_id.clone(),
        output_rows,
        output_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        metrics_json: serde_json::to_string(&metrics).unwrap_or_default(),
        column_bounds: bounds.finish(),
        inline_pieces,
    })
}

/// Every operator's output spends tokio task budget: operators that multiply rows (joins)
/// or replay buffered ones (sorts, aggregates) then yield regularly, so the task can be
/// cancelled at once and does not starve its neighbours.
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            if node.children().is_empty() || node.downcast_ref::<CooperativeExec>().is_some() {
                Ok(Transformed::no(node))
            } else {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as _))
            }
        })?
        .data)
}

fn push(
    coalescer: &mut BatchCoalescer,
    output: &mut OutputWriter,
    inline: &mut InlinePieces,
    piece: usize,
    batch: RecordBatch,
) -> Result<()> {
    coalescer.push_batch(batch)?;
    while let Some(done) = coalescer.next_completed_batch() {
        inline.push(piece, &done);
        output.push(piece, done)?;
    }
    Ok(())
}
