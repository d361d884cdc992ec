//! One task of a stage, attempt after attempt: placed in a slot, called, and run again
//! elsewhere when its executor is lost, until it succeeds, fails on its data, or runs out
//! of attempts.

use std::sync::Arc;

use bytes::Bytes;
use quarry_common::QuarryError;
use quarry_common::metrics::OperatorMetrics;
use quarry_common::protocol::TaskDefinition;

use crate::cluster::ExecutorInfo;
use crate::planner::stages::Stage;

use super::placement::Placement;
use super::profile::TaskProfile;
use super::rpc::CallError;
use super::run::QueryRun;
use super::slots::Eligible;
use super::{TaskEnd, TaskOutput};

impl QueryRun {
    pub(super) async fn run_task(
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
                .acquire_many(
                    &self.tasks.query_id,
                    eligible,
                    placement.preferred(),
                    stage.slots_per_task,
                )
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
                trace_context: quarry_common::trace_context::traceparent(&tracing::Span::current()),
                bound_columns: self.bound_columns(stage.id),
                inline_output_limit: self.inline_output_limit(stage.id),
            };
            let in_flight = self.in_flight(stage.id, partition, &executor.executor_id, attempt);
            let outcome = self.scheduler.call_task(&executor, task).await;
            drop(in_flight);
            drop(lease);
            crate::metrics::task_ended(match &outcome {
                Ok(_) => "succeeded",
                Err(e) => e.outcome(),
            });
            let reason = match outcome {
                Ok(result) => {
                    let output = TaskOutput {
                        executor_id: executor.executor_id.clone(),
                        incarnation: executor.incarnation,
                        endpoint: executor.endpoint.clone(),
                        attempt,
                        bounds: result.column_bounds,
                        inline: (!result.inline_pieces.is_empty())
                            .then(|| Arc::new(result.inline_pieces)),
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
                Err(CallError::Failed(e)) => {
                    return Err(e);
                }
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
