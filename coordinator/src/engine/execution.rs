//! Running planned statements: a job's outcome runs in the background (on the query
//! runtime), on the coordinator or as stages on executors, its batches going to the job's
//! result spool; EXPLAIN ANALYZE reports what each stage did.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use quarry_common::QuarryError;
use quarry_common::metrics::collect_operator_metrics;
use quarry_common::panics::catch_panic;
use quarry_common::shuffle_reader::ExchangeAccess;
use tracing::Instrument;

use super::{DistributedQuery, Engine, Outcome, ReleaseOnDrop, Then, plan_text_batch};
use crate::error::CoordinatorError;
use crate::jobs::Job;
use crate::scheduler::{QueryProfile, QueryTasks};

impl Engine {
    /// Run `plan` on the query runtime, handing its batches to `sink` here.
    pub(super) async fn drain(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        sink: &mut (dyn FnMut(&RecordBatch) -> Result<(), QuarryError> + Send),
    ) -> Result<(), QuarryError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, QuarryError>>(2);
        let producer = self.cpu.run(async move {
            let mut stream = match execute_stream(plan, context) {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            while let Some(batch) = stream.next().await {
                if tx.send(batch.map_err(QuarryError::from)).await.is_err() {
                    // The consumer stopped (its sink failed): stop computing.
                    return;
                }
            }
        });
        let consumer = async move {
            while let Some(batch) = rx.recv().await {
                sink(&batch?)?;
            }
            Ok::<(), QuarryError>(())
        };
        let (produced, consumed) = tokio::join!(producer, consumer);
        consumed?;
        produced.map_err(|panic| CoordinatorError::crashed("the query", panic).into())
    }

    pub(super) fn start(self: &Arc<Self>, job: Arc<Job>, outcome: Outcome) {
        self.start_then(job, outcome, None);
    }

    /// Run `outcome` as `job` in the background; `then` sees how it ended (a cancelled
    /// job too) before the job does, and may turn success into failure.
    pub(super) fn start_then(
        self: &Arc<Self>,
        job: Arc<Job>,
        outcome: Outcome,
        then: Option<Then>,
    ) {
        let engine = Arc::clone(self);
        let cancel = job.cancellation();
        // The job owns this task: cancelling the job drops the run, and with it every
        // task call to the executors. The run itself (and the writes of its results to
        // the spool) happens on the query runtime; the task here only waits for it.
        let watched = Arc::clone(&job);
        let span = tracing::info_span!(parent: &job.span(), "execute");
        self.tasks.spawn(async move {
            let runner = Arc::clone(&engine);
            let run = runner.cpu.run(async move {
                let run = catch_panic(engine.run(&job, outcome).instrument(span));
                let result = tokio::select! {
                    result = run => result.unwrap_or_else(|panic| {
                        Err(CoordinatorError::crashed("the query", panic).into())
                    }),
                    _ = cancel.cancelled() => {
                        if let Some(then) = then {
                            let cancelled = QuarryError::new(
                                quarry_common::ErrorCode::Cancelled,
                                "the job was cancelled",
                            );
                            let _ = then(Err(cancelled)).await;
                        }
                        return;
                    }
                };
                let result = match then {
                    Some(then) => then(result).await,
                    None => result,
                };
                match result {
                    Ok(()) => job.complete(),
                    Err(e) => job.fail(&e),
                }
            });
            if let Err(e) = run.await {
                // A panic is caught inside; this is the runtime going away (shutdown).
                watched.fail(&QuarryError::unavailable(format!(
                    "the query stopped with the coordinator: {e}"
                )));
            }
        });
    }

    pub(super) async fn run(&self, job: &Job, outcome: Outcome) -> Result<(), QuarryError> {
        let mut first = true;
        let mut sink = |batch: &RecordBatch| {
            if first && batch.num_rows() > 0 {
                first = false;
                job.mark("first_batch");
            }
            job.spool.append(batch)
        };
        match outcome {
            Outcome::Analyze(inner) => {
                let started = std::time::Instant::now();
                let mut rows = 0u64;
                let mut count = |batch: &RecordBatch| {
                    rows += batch.num_rows() as u64;
                    Ok(())
                };
                let profile = self.execute(job, *inner, &mut count).await?;
                let mut report = crate::scheduler::analyze_report(
                    &profile,
                    rows,
                    started.elapsed().as_millis() as u64,
                );
                // What planning made of reflections, as EXPLAIN shows it.
                let considered = job.record().reflections;
                if !considered.is_empty() {
                    report.insert(0, ("reflections".to_string(), considered.join("\n")));
                }
                job.set_profile(&profile);
                sink(&plan_text_batch(report)?)
            }
            other => self.execute(job, other, &mut sink).await.map(|_| ()),
        }
    }

    /// Run a planned statement, handing its batches to `sink`; returns its profile.
    pub(super) async fn execute(
        &self,
        job: &Job,
        outcome: Outcome,
        sink: &mut (dyn FnMut(&RecordBatch) -> Result<(), QuarryError> + Send),
    ) -> Result<QueryProfile, QuarryError> {
        match outcome {
            Outcome::Rows(_, batches) => {
                job.set_running(0);
                for batch in &batches {
                    sink(batch)?;
                }
                Ok(QueryProfile::default())
            }
            Outcome::Local(plan, context) => {
                job.set_running(0);
                self.drain(Arc::clone(&plan), context, sink).await?;
                Ok(QueryProfile {
                    stages: Vec::new(),
                    root: collect_operator_metrics(&plan),
                })
            }
            Outcome::Distributed(query) => self.run_distributed(job, *query, sink).await,
            Outcome::Cached(result, _) => {
                job.set_running(0);
                job.set_results_cache(format!(
                    "served from the results cache{} (the result of job {}, {} rows)",
                    if result.unplanned {
                        " without planning"
                    } else {
                        ""
                    },
                    result.job_id,
                    result.rows
                ));
                for batch in result.batches.iter() {
                    sink(batch)?;
                }
                Ok(QueryProfile::default())
            }
            Outcome::Caching(inner, key) => {
                let schema = inner.schema();
                let limit = self.results.entry_limit();
                let (mut kept, mut bytes, mut rows) = (Some(Vec::new()), 0usize, 0u64);
                let profile = {
                    let mut keep = |batch: &RecordBatch| {
                        if let Some(batches) = kept.as_mut() {
                            bytes += batch.get_array_memory_size();
                            rows += batch.num_rows() as u64;
                            if bytes > limit {
                                kept = None;
                            } else {
                                batches.push(batch.clone());
                            }
                        }
                        sink(batch)
                    };
                    Box::pin(self.execute(job, *inner, &mut keep)).await?
                };
                if let Some(batches) = kept
                    && !job.is_cancelled()
                {
                    self.results.put(
                        key,
                        super::results_cache::CachedResult {
                            schema,
                            batches: Arc::new(batches),
                            job_id: job.id.clone(),
                            rows,
                            unplanned: false,
                        },
                    );
                }
                Ok(profile)
            }
            Outcome::Analyze(_) => Err(QuarryError::invalid("EXPLAIN ANALYZE cannot be nested")),
            Outcome::Created(inner, table) => {
                let result = Box::pin(self.execute(job, *inner, sink)).await;
                if result.is_err()
                    && let Err(e) = self
                        .catalog
                        .drop_dataset_and_files(
                            &table.actor,
                            &table.schema,
                            &table.name,
                            Some("table"),
                            true,
                            None,
                        )
                        .await
                {
                    tracing::warn!(
                        "cannot drop {}.{} after its CREATE TABLE AS failed: {e}",
                        table.schema,
                        table.name
                    );
                }
                result
            }
        }
    }

    pub(super) async fn run_distributed(
        &self,
        job: &Job,
        mut query: DistributedQuery,
        sink: &mut (dyn FnMut(&RecordBatch) -> Result<(), QuarryError> + Send),
    ) -> Result<QueryProfile, QuarryError> {
        let ticket = match query.ticket.take() {
            Some(ticket) => ticket,
            None => self.limits.admission.enqueue()?,
        };
        if ticket.is_queued() {
            job.set_queued();
        }
        let _permit = ticket.admitted().await?;
        job.mark("admission");
        let timeout = query.options.query_timeout()?;
        if timeout.is_zero() {
            return self.run_admitted(job, query, sink).await;
        }
        match tokio::time::timeout(timeout, self.run_admitted(job, query, sink)).await {
            Ok(result) => result,
            Err(_) => Err(QuarryError::new(
                quarry_common::ErrorCode::DeadlineExceeded,
                format!(
                    "the query ran longer than quarry.query_timeout ({}) and was stopped",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    pub(super) async fn run_admitted(
        &self,
        job: &Job,
        query: DistributedQuery,
        sink: &mut (dyn FnMut(&RecordBatch) -> Result<(), QuarryError> + Send),
    ) -> Result<QueryProfile, QuarryError> {
        let total = query.stages.task_count();
        job.set_running(total);
        let _release = ReleaseOnDrop {
            scheduler: Arc::clone(&self.scheduler),
            tasks: self.tasks.clone(),
            query_id: job.id.clone(),
        };
        let progress_job = self.jobs.live(&job.id);
        let tasks = QueryTasks {
            query_id: job.id.clone(),
            settings: query.settings,
            object_stores: query.object_stores,
            max_attempts: query.options.task_max_attempts as u32,
            max_executors: query.options.max_executors,
            stall_timeout: query.options.stall_timeout()?,
            progress: Arc::new(move |done, total| {
                if let Some(job) = &progress_job {
                    job.set_progress(done, total);
                }
            }),
        };
        let run = self.scheduler.query(tasks, query.stages);
        let root = run.run_stages().await;
        job.mark("stages");
        job.set_profile(&run.profile());
        let root = root?;
        // The coordinator reads the last stage with recovery: a piece lost with its
        // executor is recomputed and read again.
        let mut state = query.state;
        state.config_mut().set_extension(Arc::new(ExchangeAccess {
            channels: Arc::clone(self.scheduler.channels()),
            local: None,
            recovery: Some(Arc::clone(&run) as _),
            activity: None,
        }));
        self.drain(Arc::clone(&root), state.task_ctx(), sink)
            .instrument(tracing::info_span!("results"))
            .await?;
        let mut profile = run.profile();
        profile.root = collect_operator_metrics(&root);
        job.set_profile(&profile);
        Ok(profile)
    }
}
