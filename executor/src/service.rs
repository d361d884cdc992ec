//! The executor's Flight service: run tasks, serve their output, release queries.

use std::sync::Arc;

use arrow_flight::FlightData;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use bytes::Bytes;
use datafusion::error::DataFusionError;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::action_service::{ActionHandler, ResultStream};
use quarry_common::error::{classify, describe};
use quarry_common::protocol::{
    self, ACTION_READ_FILE, ACTION_RELEASE_QUERY, ACTION_RUN_TASK, ACTION_STATUS, ExchangeTicket,
    ExecutorStatus, FetchFailure, ReadFile, ReleaseQuery, TaskActivityReport, TaskDefinition,
    TaskFailure,
};
use quarry_common::shuffle_reader::FetchFailed;
use tonic::Status;
use tracing::Instrument;

use crate::data_dir::DataDir;
use crate::running::RunningTasks;
use crate::task::{TaskEnvironment, run_task};

pub struct ExecutorService {
    env: Arc<TaskEnvironment>,
    running: Arc<RunningTasks>,
    data_dir: Option<DataDir>,
}

impl ExecutorService {
    pub fn new(env: Arc<TaskEnvironment>, data_dir: Option<DataDir>) -> Self {
        ExecutorService {
            env,
            running: Arc::default(),
            data_dir,
        }
    }

    /// What each running task is doing.
    pub fn task_reports(&self) -> Vec<TaskActivityReport> {
        self.running.reports()
    }

    pub fn status(&self) -> ExecutorStatus {
        ExecutorStatus {
            executor_id: self.env.executor_id.clone(),
            running_tasks: self.running.count(),
            exchange_bytes: self.env.exchange.memory_bytes(),
            exchange_entries: self.env.exchange.entries() as u32,
            memory_used_bytes: self.env.runtime.memory_pool.reserved() as u64,
            spill_files: self.env.spill_files(),
        }
    }
}

fn failure_status(e: DataFusionError) -> Status {
    let code = classify(&e);
    let message = describe(&e);
    let fetch_failed = find_fetch_failed(&e).map(|f| FetchFailure {
        executor_id: f.executor_id.clone(),
        stage_id: f.stage_id,
        partition: f.partition,
    });
    let failure = TaskFailure {
        code: code.as_str().to_string(),
        message: message.clone(),
        fetch_failed,
    };
    Status::with_details(
        code.grpc_code(),
        message,
        Bytes::from(failure.encode_to_vec()),
    )
}

/// The FetchFailed at the bottom of an error chain, if any.
fn find_fetch_failed(e: &DataFusionError) -> Option<&FetchFailed> {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(f) = current.downcast_ref::<FetchFailed>() {
            return Some(f);
        }
        if let Some(DataFusionError::External(inner)) = current.downcast_ref::<DataFusionError>()
            && let Some(f) = inner.downcast_ref::<FetchFailed>()
        {
            return Some(f);
        }
        current = current.source()?;
    }
}

#[tonic::async_trait]
impl ActionHandler for ExecutorService {
    async fn action(&self, action_type: &str, body: Bytes) -> Result<ResultStream<Bytes>, Status> {
        match action_type {
            ACTION_RUN_TASK => {
                let task: TaskDefinition = protocol::decode(&body, "task definition")?;
                let env = Arc::clone(&self.env);
                let running = Arc::clone(&self.running);
                // The task lives inside the response: when the caller goes away the
                // response is dropped, and the task with it.
                // A child of the coordinator's span of this task when the query is traced.
                let span = tracing::info_span!(
                    "run task",
                    job_id = %task.query_id,
                    stage = task.stage_id,
                    partition = task.partition,
                    attempt = task.attempt,
                    executor = %self.env.executor_id,
                );
                quarry_common::trace_context::set_parent(&span, &task.trace_context);
                let task_future = async move {
                    // Counted when it ends, as cancelled if it is dropped first.
                    let mut outcome = crate::metrics::TaskOutcome::new(Arc::clone(&env.metrics));
                    let registered = running.start(&task);
                    let work = {
                        let env = Arc::clone(&env);
                        let running = Arc::clone(&registered.task);
                        async move { run_task(&env, task, &running).await }
                    };
                    // The task's work runs on the task runtime (inside this span).
                    let ended = match env.cpu.run(work).await {
                        Ok(result) => result
                            .map(|result| Bytes::from(result.encode_to_vec()))
                            .map_err(failure_status),
                        // A reader that panics on malformed input fails this task only.
                        Err(panic) => Err(failure_status(DataFusionError::Execution(format!(
                            "the task failed on its input: {panic}"
                        )))),
                    };
                    outcome.set(ended.is_ok());
                    ended
                }
                .instrument(span);
                Ok(futures::stream::once(task_future).boxed())
            }
            ACTION_RELEASE_QUERY => {
                let release: ReleaseQuery = protocol::decode(&body, "release request")?;
                let released = self.env.exchange.release(&release.query_id);
                tracing::debug!(query = %release.query_id, released, "released query outputs");
                Ok(futures::stream::empty().boxed())
            }
            ACTION_READ_FILE => {
                let request: ReadFile = protocol::decode(&body, "file read")?;
                let data_dir = self.data_dir.clone().ok_or_else(|| {
                    Status::failed_precondition("this executor has no data directory")
                })?;
                let chunks = tokio::task::spawn_blocking(move || data_dir.read(&request))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))??;
                Ok(futures::stream::iter(chunks.into_iter().map(Ok)).boxed())
            }
            ACTION_STATUS => {
                let status = self.status();
                Ok(
                    futures::stream::once(async move { Ok(Bytes::from(status.encode_to_vec())) })
                        .boxed(),
                )
            }
            other => Err(Status::invalid_argument(format!(
                "unknown executor action '{other}'"
            ))),
        }
    }

    async fn get(&self, ticket: Bytes) -> Result<ResultStream<FlightData>, Status> {
        let ticket: ExchangeTicket = protocol::decode(&ticket, "exchange ticket")?;
        let batches = self.env.exchange.read_piece(&ticket).ok_or_else(|| {
            Status::not_found(format!(
                "executor {} holds no output for query {} stage {} task {} attempt {}",
                self.env.executor_id,
                ticket.query_id,
                ticket.stage_id,
                ticket.partition,
                ticket.attempt
            ))
        })?;
        // Dictionaries travel as dictionaries: consumers expect the producer's types.
        let metrics = Arc::clone(&self.env.metrics);
        let stream = FlightDataEncoderBuilder::new()
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches.map_err(|e| FlightError::ExternalError(Box::new(e))))
            .map_ok(move |data| {
                metrics.sent((data.data_body.len() + data.data_header.len()) as u64);
                data
            })
            .map_err(|e| Status::internal(e.to_string()));
        Ok(stream.boxed())
    }
}
