//! Calling executors: a task's RPC, abandoned as soon as its executor is declared lost, and
//! what a failed call means for the task.

use std::time::Duration;

use arrow_flight::Action;
use futures::StreamExt;
use prost::Message;
use quarry_common::protocol::{ACTION_RUN_TASK, TaskDefinition, TaskFailure, TaskResult};
use quarry_common::{ErrorCode, QuarryError};

use crate::cluster::ExecutorInfo;
use crate::error::CoordinatorError;

use super::Scheduler;

/// Why a task call failed.
pub(super) enum CallError {
    /// The executor could not be reached or went away: try elsewhere.
    Lost(String),
    /// The task could not read a piece produced on `executor`.
    FetchFailed { executor: String, message: String },
    /// The task itself failed (bad data, bad plan): the query fails.
    Failed(QuarryError),
}

impl CallError {
    /// The task outcome it counts as in the metrics.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            CallError::Lost(_) => "executor_lost",
            CallError::FetchFailed { .. } => "input_lost",
            CallError::Failed(_) => "failed",
        }
    }
}

impl Scheduler {
    /// Run a task on an executor; give up on it as soon as the executor is declared lost.
    pub(super) async fn call_task(
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

pub(super) fn classify_call_error(e: arrow_flight::error::FlightError) -> CallError {
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
