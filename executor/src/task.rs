//! Running one task: decode its plan, execute its partition, split the output into the
//! exchange store, and report what happened.

use std::sync::Arc;
use std::time::Instant;

use arrow::compute::BatchCoalescer;
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use quarry_common::codec::{partitioning_from_bytes, plan_from_bytes};
use quarry_common::flight_channels::FlightChannels;
use quarry_common::metrics::collect_operator_metrics;
use quarry_common::object_stores::ObjectStoreRegistrar;
use quarry_common::protocol::{TaskDefinition, TaskResult};
use quarry_common::shuffle_reader::ExchangeAccess;

use crate::exchange::ExchangeStore;

/// What every task on this executor shares.
#[derive(Debug)]
pub struct TaskEnvironment {
    pub executor_id: String,
    pub runtime: Arc<RuntimeEnv>,
    pub exchange: Arc<ExchangeStore>,
    pub channels: Arc<FlightChannels>,
    pub object_stores: ObjectStoreRegistrar,
}

pub async fn run_task(env: &TaskEnvironment, task: TaskDefinition) -> Result<TaskResult> {
    let started = Instant::now();
    let mut config = SessionConfig::new();
    for setting in &task.settings {
        config.options_mut().set(&setting.key, &setting.value)?;
    }
    let batch_size = config.batch_size();
    let config = config.with_extension(Arc::new(ExchangeAccess {
        channels: Arc::clone(&env.channels),
        local: Some(Arc::clone(&env.exchange) as _),
    }));
    for spec in &task.object_stores {
        env.object_stores
            .register(&env.runtime, spec)
            .map_err(DataFusionError::from)?;
    }
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(Arc::clone(&env.runtime))
        .build();
    let task_ctx = state.task_ctx();
    let plan = plan_from_bytes(&task.plan, &task_ctx)?;
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
    let mut outputs: Vec<Vec<RecordBatch>> = vec![Vec::new(); output_count];

    let mut stream = plan.execute(partition, Arc::clone(&task_ctx))?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        match partitioner.as_mut() {
            Some(partitioner) => partitioner.partition(batch, |i, piece| {
                push(&mut coalescers[i], &mut outputs[i], piece)
            })?,
            None => push(&mut coalescers[0], &mut outputs[0], batch)?,
        }
    }
    for (coalescer, output) in coalescers.iter_mut().zip(outputs.iter_mut()) {
        coalescer.finish_buffered_batch()?;
        while let Some(batch) = coalescer.next_completed_batch() {
            output.push(batch);
        }
    }

    let output_rows = outputs
        .iter()
        .map(|o| o.iter().map(|b| b.num_rows() as u64).sum())
        .collect();
    let output_bytes = outputs
        .iter()
        .map(|o| o.iter().map(|b| b.get_array_memory_size() as u64).sum())
        .collect();
    env.exchange.put(
        &task.query_id,
        task.stage_id,
        task.partition,
        task.attempt,
        outputs,
    );
    let metrics = collect_operator_metrics(&plan);
    Ok(TaskResult {
        executor_id: env.executor_id.clone(),
        output_rows,
        output_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        metrics_json: serde_json::to_string(&metrics).unwrap_or_default(),
    })
}

fn push(
    coalescer: &mut BatchCoalescer,
    output: &mut Vec<RecordBatch>,
    batch: RecordBatch,
) -> Result<()> {
    coalescer.push_batch(batch)?;
    while let Some(done) = coalescer.next_completed_batch() {
        output.push(done);
    }
    Ok(())
}
