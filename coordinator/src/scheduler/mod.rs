//! The scheduler: runs a query's stages as tasks on executors.
//!
//! Stages run in dependency order; the tasks of a stage run in parallel, each in a slot
//! of some executor. A task whose executor disappears (the call breaks, or heartbeats
//! stop) is retried on another executor with a new attempt number, up to the query's
//! `quarry.task_max_attempts`; a task that fails on its own data fails the query. When
//! the query ends, however it ends, every executor that ran a task releases its outputs.

mod profile;
mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Action;
use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::action_service::call_action;
use quarry_common::codec::{partitioning_to_bytes, plan_to_bytes};
use quarry_common::flight_channels::FlightChannels;
use quarry_common::metrics::OperatorMetrics;
use quarry_common::protocol::{
    ACTION_RELEASE_QUERY, ACTION_RUN_TASK, ExchangeTicket, ObjectStoreSpec, ReleaseQuery, Setting,
    TaskDefinition, TaskFailure, TaskResult,
};
use quarry_common::shuffle_reader::{ShuffleLocation, ShuffleReaderExec};
use quarry_common::{ErrorCode, QuarryError};

use crate::cluster::{Cluster, ExecutorInfo};
use crate::planner::stages::{Stage, StagePlan};
pub use profile::{QueryProfile, StageProfile, TaskProfile};
use slots::SlotPool;

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
}

/// A finished task: where its output is.
#[derive(Debug, Clone)]
struct TaskOutput {
    executor_id: String,
    endpoint: String,
    attempt: u32,
}

/// Why a task call failed.
enum TaskError {
    /// The executor could not be reached or went away: try elsewhere.
    Lost(String),
    /// The task itself failed (bad data, bad plan): the query fails.
    Failed(QuarryError),
}

pub struct Scheduler {
    cluster: Arc<Cluster>,
    channels: Arc<FlightChannels>,
    slots: SlotPool,
}

impl Scheduler {
    pub fn new(cluster: Arc<Cluster>, channels: Arc<FlightChannels>) -> Self {
        Scheduler {
            cluster,
            channels,
            slots: SlotPool::default(),
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn channels(&self) -> &Arc<FlightChannels> {
        &self.channels
    }

    /// Run every stage of `plan`; return the root with its readers pointing at the
    /// outputs, the profile so far, and the executors holding outputs.
    pub async fn run_stages(
        &self,
        query: &QueryTasks,
        plan: &StagePlan,
        profile: &mut QueryProfile,
        holders: &mut BTreeSet<String>,
    ) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
        let allowed = self.allowed_executors(query.max_executors);
        let total = plan.task_count();
        let mut done = 0usize;
        let mut outputs: BTreeMap<u32, Vec<TaskOutput>> = BTreeMap::new();
        for stage in &plan.stages {
            let resolved =
                resolve_readers(Arc::clone(&stage.plan), plan, &outputs, &query.query_id)?;
            let plan_bytes = plan_to_bytes(Arc::clone(&resolved))?;
            let output_bytes = partitioning_to_bytes(stage.output.as_ref())?;
            let mut stage_profile = StageProfile::new(stage, &resolved);
            let concurrency = self.cluster.total_slots().max(1);
            let runs: Vec<(TaskOutput, TaskProfile)> = futures::stream::iter(0..stage.task_count())
                .map(|partition| {
                    self.run_task(
                        query,
                        stage,
                        partition as u32,
                        plan_bytes.clone(),
                        output_bytes.clone(),
                        &allowed,
                    )
                })
                .buffer_unordered(concurrency)
                .inspect_ok(|_| {
                    done += 1;
                    (query.progress)(done, total);
                })
                .try_collect()
                .await
                .map_err(|e| e.context(format!("stage {}", stage.id)))?;
            let mut task_outputs: Vec<(u32, TaskOutput)> = Vec::with_capacity(runs.len());
            for (output, task_profile) in runs {
                holders.insert(output.endpoint.clone());
                task_outputs.push((task_profile.partition, output));
                stage_profile.tasks.push(task_profile);
            }
            task_outputs.sort_by_key(|(p, _)| *p);
            stage_profile.tasks.sort_by_key(|t| t.partition);
            outputs.insert(stage.id, task_outputs.into_iter().map(|(_, o)| o).collect());
            profile.stages.push(stage_profile);
        }
        resolve_readers(Arc::clone(&plan.root), plan, &outputs, &query.query_id)
    }

    /// The executors a query may use.
    fn allowed_executors(&self, max_executors: usize) -> Option<BTreeSet<String>> {
        if max_executors == 0 {
            return None;
        }
        Some(
            self.cluster
                .active()
                .into_iter()
                .take(max_executors)
                .map(|e| e.executor_id)
                .collect(),
        )
    }

    async fn run_task(
        &self,
        query: &QueryTasks,
        stage: &Stage,
        partition: u32,
        plan: Bytes,
        output_partitioning: Vec<u8>,
        allowed: &Option<BTreeSet<String>>,
    ) -> Result<(TaskOutput, TaskProfile), QuarryError> {
        let mut failures: Vec<String> = Vec::new();
        let mut attempt = 0u32;
        loop {
            let eligible =
                |e: &ExecutorInfo| allowed.as_ref().is_none_or(|a| a.contains(&e.executor_id));
            let (executor, lease) = self
                .slots
                .acquire(&self.cluster, &eligible, None, partition as usize)
                .await?;
            let task = TaskDefinition {
                query_id: query.query_id.clone(),
                stage_id: stage.id,
                partition,
                attempt,
                plan: plan.to_vec(),
                output_partitioning: output_partitioning.clone(),
                settings: query.settings.clone(),
                object_stores: query.object_stores.clone(),
            };
            let outcome = self.call_task(&executor, task).await;
            drop(lease);
            match outcome {
                Ok(result) => {
                    let output = TaskOutput {
                        executor_id: executor.executor_id.clone(),
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
                    return Ok((output, profile));
                }
                Err(TaskError::Failed(e)) => return Err(e),
                Err(TaskError::Lost(reason)) => {
                    tracing::warn!(
                        query = %query.query_id,
                        stage = stage.id,
                        partition,
                        attempt,
                        executor = %executor.executor_id,
                        "task lost its executor: {reason}"
                    );
                    self.cluster.mark_lost(&executor.executor_id);
                    self.channels.forget(&executor.endpoint);
                    failures.push(format!(
                        "attempt {attempt} on {}: {reason}",
                        executor.executor_id
                    ));
                    attempt += 1;
                    if attempt >= query.max_attempts.max(1) {
                        return Err(QuarryError::unavailable(format!(
                            "task {partition} failed {attempt} times; giving up ({})",
                            failures.join("; ")
                        )));
                    }
                }
            }
        }
    }

    /// Run a task on an executor; give up on it as soon as the executor is declared lost.
    async fn call_task(
        &self,
        executor: &ExecutorInfo,
        task: TaskDefinition,
    ) -> Result<TaskResult, TaskError> {
        let call = async {
            let mut client = self
                .channels
                .client(&executor.endpoint)
                .map_err(|e| TaskError::Lost(e.message))?;
            let mut results = client
                .do_action(Action::new(ACTION_RUN_TASK, task.encode_to_vec()))
                .await
                .map_err(classify_call_error)?;
            let body = match results.next().await {
                Some(Ok(body)) => body,
                Some(Err(e)) => return Err(classify_call_error(e)),
                None => {
                    return Err(TaskError::Lost(
                        "the executor returned no task result".into(),
                    ));
                }
            };
            TaskResult::decode(body).map_err(|e| {
                TaskError::Failed(QuarryError::internal(format!("malformed task result: {e}")))
            })
        };
        let lost = async {
            loop {
                if !self.cluster.is_active(&executor.executor_id) {
                    return TaskError::Lost(format!(
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
}

fn classify_call_error(e: arrow_flight::error::FlightError) -> TaskError {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => {
            if !status.details().is_empty()
                && let Ok(failure) = TaskFailure::decode(status.details())
            {
                if failure.fetch_failed.is_some() {
                    // An input piece is gone with its executor.
                    return TaskError::Lost(failure.message);
                }
                return TaskError::Failed(QuarryError::new(
                    ErrorCode::parse(&failure.code),
                    failure.message,
                ));
            }
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::DeadlineExceeded => TaskError::Lost(status.message().to_string()),
                _ => TaskError::Failed(QuarryError::from_status(&status)),
            }
        }
        other => TaskError::Lost(other.to_string()),
    }
}

/// Point every reader in `plan` at the outputs of the stage it reads.
fn resolve_readers(
    plan: Arc<dyn ExecutionPlan>,
    stages: &StagePlan,
    outputs: &BTreeMap<u32, Vec<TaskOutput>>,
    query_id: &str,
) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
    let resolved = plan.transform_up(|node| {
        let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
            return Ok(Transformed::no(node));
        };
        let stage_id = reader.stage_id();
        let (Some(stage), Some(tasks)) = (stages.stage(stage_id), outputs.get(&stage_id)) else {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "stage {stage_id} is read before it ran"
            )));
        };
        let location = |task: u32, output: &TaskOutput, piece: u32| ShuffleLocation {
            executor_id: output.executor_id.clone(),
            endpoint: output.endpoint.clone(),
            ticket: Some(ExchangeTicket {
                query_id: query_id.to_string(),
                stage_id,
                partition: task,
                attempt: output.attempt,
                output_partition: piece,
            }),
        };
        let partitions: Vec<Vec<ShuffleLocation>> = match &stage.output {
            Some(_) => (0..stage.output_pieces() as u32)
                .map(|piece| {
                    tasks
                        .iter()
                        .enumerate()
                        .map(|(t, output)| location(t as u32, output, piece))
                        .collect()
                })
                .collect(),
            None => tasks
                .iter()
                .enumerate()
                .map(|(t, output)| vec![location(t as u32, output, 0)])
                .collect(),
        };
        Ok(Transformed::yes(
            Arc::new(reader.with_locations(partitions)) as _,
        ))
    })?;
    Ok(resolved.data)
}
