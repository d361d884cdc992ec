//! Jobs: every statement a client submits becomes a job with an id, a state, a profile
//! and its results in a spool. Frontends start jobs, follow their state and page through
//! their results; the job history is kept in the catalog.

pub(crate) mod admission;
mod holders;
pub(crate) mod spool;
mod state;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_catalog::{Catalog, JobError, JobRecord};
use quarry_common::QuarryError;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub(crate) use holders::CancelOnDrop;
use holders::Reader;
pub(crate) use holders::{Hold, WatchedResults};
use quarry_catalog::now_ms;
pub(crate) use spool::ResultSpool;

pub use state::JobState;
pub(crate) use state::{CANCELED, COMPLETED, FAILED, PLANNING, QUEUED, RUNNING};

/// Jobs whose results stay available (older spools are deleted).
const LIVE_JOBS: usize = 200;
/// Past this many older jobs to keep, results promised to clients that have not come for
/// them go like any others: a client that submits and never reads cannot grow the table
/// (nor the work of every new job, which looks at each kept one) without bound.
const UNREAD_KEPT: usize = 2_000;
/// Job records kept in the catalog.
const KEPT_JOB_RECORDS: usize = 10_000;

pub(crate) fn is_final(state: &str) -> bool {
    matches!(state, COMPLETED | FAILED | CANCELED)
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    record: Mutex<JobRecord>,
    pub(crate) spool: Arc<ResultSpool>,
    cancel: CancellationToken,
    catalog: Catalog,
    /// When a client that reads results later (Flight SQL) must have started reading;
    /// past it with no reader the job is abandoned.
    fetch_deadline: Mutex<Option<Instant>>,
    readers: AtomicUsize,
    /// Handles held by frontends: while any is alive the job's results are kept, however
    /// many newer jobs there are.
    holds: AtomicUsize,
    /// How long after its end its results stay for a client that was told to come for
    /// them (see `keep_for_reader`); None again once a client starts reading them.
    kept_for_reader: Mutex<Option<Duration>>,
    /// The job's root span ("query"): planning and running happen inside it. It ends when
    /// the job does (taken here; the runs' clones end with them).
    span: Mutex<Option<tracing::Span>>,
    /// When it was submitted, for the timings of its phases.
    submitted: Instant,
}

impl Job {
    /// The job's span, to run its work in (a disabled one once the job has ended).
    pub fn span(&self) -> tracing::Span {
        self.span
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    /// End the job's span (its trace then goes to the exporter).
    fn end_span(&self) {
        if let Ok(mut span) = self.span.lock() {
            span.take();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobRecord> {
        match self.record.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn record(&self) -> JobRecord {
        self.lock().clone()
    }

    /// Keep the job's results while the returned hold lives (a client is being answered).
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.holds.fetch_add(1, Ordering::Relaxed);
        Hold(Arc::clone(self))
    }

    /// Its result rows `offset..offset+limit` (all from `offset` when `limit` is None),
    /// following the job while it runs.
    pub fn results(
        &self,
        offset: u64,
        limit: Option<u64>,
    ) -> impl futures::Stream<Item = Result<arrow::array::RecordBatch, QuarryError>> + Send + 'static
    {
        self.reader_came();
        self.spool.read(offset, limit)
    }

    /// The columns of its results, once it is planned.
    pub fn result_schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        self.spool.schema()
    }

    /// Who ran it.
    pub fn user(&self) -> String {
        self.lock().user.clone()
    }

    pub fn state(&self) -> String {
        self.lock().state.clone()
    }

    fn persist(&self) {
        let record = self.record();
        if let Err(e) = self.catalog.put_job(&record) {
            tracing::warn!(job = %self.id, "cannot record job: {e}");
        }
    }

    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waiting for its turn to run.
    pub fn set_queued(&self) {
        {
            let mut record = self.lock();
            if is_final(&record.state) {
                return;
            }
            record.state = QUEUED.to_string();
        }
        self.persist();
    }

    /// Cancel the job unless a reader comes within `timeout`.
    pub fn expect_reader(&self, timeout: Duration) {
        if let Ok(mut deadline) = self.fetch_deadline.lock() {
            *deadline = Some(Instant::now() + timeout);
        }
        self.keep_for_reader(timeout);
    }

    /// A client was told to come for its results (a Flight SQL ticket, an asynchronous
    /// REST submission): if it has not started reading them, they stay for `grace` after
    /// the job ends, however many newer jobs there are.
    pub fn keep_for_reader(&self, grace: Duration) {
        if let Ok(mut kept) = self.kept_for_reader.lock() {
            *kept = Some(grace);
        }
    }

    /// A client started reading its results: they need not outlive newer jobs for it.
    fn reader_came(&self) {
        if let Ok(mut kept) = self.kept_for_reader.lock() {
            *kept = None;
        }
    }

    /// Its results were promised to a client that has not started reading them, and the
    /// grace after its end has not passed.
    fn awaits_reader(&self) -> bool {
        let Some(grace) = self.kept_for_reader.lock().ok().and_then(|k| *k) else {
            return false;
        };
        let finished = self.lock().finished_ms.unwrap_or_else(now_ms);
        now_ms() < finished.saturating_add(grace.as_millis() as u64)
    }

    /// Still running, and nobody came for its results in time.
    fn abandoned(&self) -> bool {
        let overdue = self
            .fetch_deadline
            .lock()
            .map(|d| d.is_some_and(|d| Instant::now() >= d))
            .unwrap_or(false);
        overdue && self.readers.load(Ordering::Relaxed) == 0 && !is_final(&self.state())
    }

    /// `results` read by a client: if the client drops them before their end while the
    /// job runs, the job is cancelled (nobody will read what it computes).
    pub fn watched<S>(self: &Arc<Self>, results: S) -> WatchedResults<S> {
        self.readers.fetch_add(1, Ordering::Relaxed);
        self.reader_came();
        if let Ok(mut deadline) = self.fetch_deadline.lock() {
            *deadline = None;
        }
        WatchedResults {
            inner: results,
            reader: Some(Reader {
                job: Arc::clone(self),
                finished: false,
            }),
        }
    }

    /// What planning made of reflections, how old the data of those used is, and the
    /// aggregates the job runs.
    pub fn set_reflections(
        &self,
        considered: Vec<String>,
        data_as_of_ms: Option<u64>,
        aggregates: Vec<quarry_catalog::AggregateShape>,
    ) {
        {
            let mut record = self.lock();
            record.reflections = considered;
            record.data_as_of_ms = data_as_of_ms;
            record.aggregates = aggregates;
        }
        self.persist();
    }

    /// Note that `phase` ended now (the first time only): microseconds since submission.
    pub fn mark(&self, phase: &'static str) {
        self.mark_in(&mut self.lock(), phase);
    }

    fn mark_in(&self, record: &mut JobRecord, phase: &'static str) {
        let elapsed = self.submitted.elapsed().as_micros() as u64;
        record
            .timings_us
            .entry(phase.to_string())
            .or_insert(elapsed);
    }

    /// Say that its rows came from the results cache.
    pub fn set_results_cache(&self, note: String) {
        self.lock().results_cache = Some(note);
    }

    pub fn set_running(&self, tasks_total: usize) {
        {
            let mut record = self.lock();
            if is_final(&record.state) {
                return;
            }
            record.state = RUNNING.to_string();
            record.started_ms = Some(now_ms());
            record.tasks_total = tasks_total as u64;
        }
        self.persist();
    }

    pub fn set_progress(&self, done: usize, total: usize) {
        let mut record = self.lock();
        record.tasks_done = done as u64;
        record.tasks_total = total as u64;
    }

    pub fn set_profile(&self, profile: &impl Serialize) {
        let value = serde_json::to_value(profile).unwrap_or(serde_json::Value::Null);
        self.lock().profile = value;
    }

    /// Finish successfully (unless it was cancelled meanwhile).
    pub fn complete(&self) {
        {
            let mut record = self.lock();
            if is_final(&record.state) {
                return;
            }
            record.state = COMPLETED.to_string();
            record.finished_ms = Some(now_ms());
            self.mark_in(&mut record, "last_batch");
            record.row_count = self.spool.rows();
            record.tasks_done = record.tasks_total;
            ended(&record);
        }
        self.spool.finish(Ok(()));
        self.persist();
        self.end_span();
    }

    pub fn fail(&self, error: &QuarryError) {
        // What the job record (and so every client) keeps of a bug is an incident id.
        let error = &error.for_client();
        {
            let mut record = self.lock();
            if is_final(&record.state) {
                return;
            }
            record.state = FAILED.to_string();
            record.finished_ms = Some(now_ms());
            record.row_count = self.spool.rows();
            record.error = Some(JobError {
                code: error.code.as_str().to_string(),
                message: error.message.clone(),
            });
            ended(&record);
        }
        self.spool.finish(Err(error.clone()));
        self.persist();
        self.end_span();
    }

    /// Stop the job; false when it had already finished.
    pub fn cancel(&self, reason: &str) -> bool {
        {
            let mut record = self.lock();
            if is_final(&record.state) {
                return false;
            }
            record.state = CANCELED.to_string();
            record.finished_ms = Some(now_ms());
            record.error = Some(JobError {
                code: quarry_common::ErrorCode::Cancelled.as_str().to_string(),
                message: reason.to_string(),
            });
            ended(&record);
        }
        self.cancel.cancel();
        self.spool.finish(Err(QuarryError::cancelled(format!(
            "job {} was cancelled: {reason}",
            self.id
        ))));
        self.persist();
        self.end_span();
        true
    }

    /// Wait until the job is finished; returns its record.
    pub async fn wait(&self) -> JobRecord {
        loop {
            if self.spool.outcome().is_some() && is_final(&self.state()) {
                return self.record();
            }
            self.spool.changed().await;
        }
    }
}

#[derive(Debug)]
pub struct Jobs {
    catalog: Catalog,
    results_dir: PathBuf,
    live: Mutex<VecDeque<Arc<Job>>>,
    /// Jobs created since the history was last pruned.
    since_prune: AtomicUsize,
}

/// The history is pruned every this many new jobs (pruning reads the time index only).
const PRUNE_EVERY: usize = 64;

impl Jobs {
    /// Start the job table; results of a previous run are gone, and jobs it left
    /// unfinished are marked failed.
    pub fn new(catalog: Catalog, results_dir: PathBuf) -> Result<Arc<Self>, QuarryError> {
        let _ = std::fs::remove_dir_all(&results_dir);
        std::fs::create_dir_all(&results_dir).map_err(|e| {
            QuarryError::io(format_args!("cannot create {}", results_dir.display()), &e)
        })?;
        let jobs = catalog.list_jobs().map_err(crate::error::catalog_error)?;
        for mut job in jobs.into_iter().filter(|j| !is_final(&j.state)) {
            job.state = FAILED.to_string();
            job.finished_ms = Some(now_ms());
            job.error = Some(JobError {
                code: quarry_common::ErrorCode::Unavailable.as_str().to_string(),
                message: "the coordinator restarted while the job ran".to_string(),
            });
            let _ = catalog.put_job(&job);
        }
        Ok(Arc::new(Jobs {
            catalog,
            results_dir,
            live: Mutex::new(VecDeque::new()),
            since_prune: AtomicUsize::new(PRUNE_EVERY),
        }))
    }

    fn live_jobs(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        match self.live.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn create(&self, sql: &str, user: &str, frontend: &str) -> Arc<Job> {
        let id = uuid::Uuid::new_v4().to_string();
        // A root of its own, whatever request created it.
        let span = tracing::info_span!(parent: None, "query", job_id = %id, frontend = %frontend);
        let record = JobRecord {
            id: id.clone(),
            sql: sql.to_string(),
            user: user.to_string(),
            state: PLANNING.to_string(),
            submitted_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            row_count: 0,
            tasks_done: 0,
            tasks_total: 0,
            error: None,
            profile: serde_json::Value::Null,
            reflections: Vec::new(),
            data_as_of_ms: None,
            aggregates: Vec::new(),
            frontend: frontend.to_string(),
            trace_id: quarry_common::trace_context::trace_id(&span),
            results_cache: None,
            timings_us: Default::default(),
        };
        let job = Arc::new(Job {
            spool: ResultSpool::new(self.results_dir.join(format!("{id}.arrows"))),
            id,
            record: Mutex::new(record),
            cancel: CancellationToken::new(),
            catalog: self.catalog.clone(),
            fetch_deadline: Mutex::new(None),
            readers: AtomicUsize::new(0),
            holds: AtomicUsize::new(0),
            kept_for_reader: Mutex::new(None),
            span: Mutex::new(Some(span)),
            submitted: Instant::now(),
        });
        job.persist();
        let evicted: Vec<Arc<Job>> = {
            let mut live = self.live_jobs();
            live.push_back(Arc::clone(&job));
            let excess = live.len().saturating_sub(LIVE_JOBS);
            live.drain(..excess).collect()
        };
        let crowded = evicted.len() > UNREAD_KEPT;
        for old in evicted {
            if !is_final(&old.state())
                || old.holds.load(Ordering::Relaxed) > 0
                || (!crowded && old.awaits_reader())
            {
                // Still running, a client is being answered from it, or one was sent a
                // ticket or job id for it and has not come yet (a Flight SQL client
                // between GetFlightInfo and DoGet while many other jobs start): keep it.
                self.live_jobs().push_front(old);
            } else {
                old.spool.discard();
            }
        }
        if self.since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            self.since_prune.store(0, Ordering::Relaxed);
            if let Ok(removed) = self.catalog.prune_jobs(KEPT_JOB_RECORDS)
                && removed > 0
            {
                tracing::debug!(removed, "pruned old job records");
            }
        }
        job
    }

    /// A job whose results are still available.
    pub fn live(&self, id: &str) -> Option<Arc<Job>> {
        self.live_jobs().iter().find(|j| j.id == id).cloned()
    }

    /// A job's record, live or historical.
    pub fn record(&self, id: &str) -> Result<Option<JobRecord>, QuarryError> {
        if let Some(job) = self.live(id) {
            return Ok(Some(job.record()));
        }
        self.catalog
            .get_job(id)
            .map_err(crate::error::catalog_error)
    }

    /// Jobs newest first, optionally in one state; reads only the records it returns.
    pub fn list(&self, state: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, QuarryError> {
        self.list_where(state, limit, |_| true)
    }

    /// The newest `limit` jobs in `state` that `keep` accepts (whose user does not
    /// change), reading no more of the history than that takes.
    pub fn list_where(
        &self,
        state: Option<&str>,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, QuarryError> {
        let mut records = self
            .catalog
            .recent_jobs_where(limit, |job| {
                keep(job) && state.is_none_or(|s| job.state.eq_ignore_ascii_case(s))
            })
            .map_err(crate::error::catalog_error)?;
        // Live jobs have fresher state than their persisted records.
        for record in records.iter_mut() {
            if let Some(job) = self.live(&record.id) {
                *record = job.record();
            }
        }
        Ok(records
            .into_iter()
            .filter(|r| state.is_none_or(|s| r.state.eq_ignore_ascii_case(s)))
            .take(limit)
            .collect())
    }

    pub fn running(&self) -> Vec<Arc<Job>> {
        self.live_jobs()
            .iter()
            .filter(|j| !is_final(&j.state()))
            .cloned()
            .collect()
    }

    /// Cancel jobs whose client never came for the results; returns how many.
    pub fn cancel_abandoned(&self) -> usize {
        let abandoned: Vec<Arc<Job>> = self
            .running()
            .into_iter()
            .filter(|j| j.abandoned())
            .collect();
        for job in &abandoned {
            tracing::info!(job = %job.id, "cancelling a job whose client never fetched its results");
            job.cancel("no client fetched the results in time (the client went away)");
        }
        abandoned.len()
    }

    /// Check for abandoned jobs every `every` until `stop`.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration, tasks: &crate::tasks::Tasks) {
        let jobs = Arc::clone(self);
        let stop = tasks.stopping();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                jobs.cancel_abandoned();
            }
        })
    }
}

/// Count and time a job that has just reached its final state.
fn ended(record: &JobRecord) {
    crate::metrics::job_ended(
        &record.state,
        &record.frontend,
        record.submitted_ms,
        record.started_ms,
        record.finished_ms.unwrap_or_else(now_ms),
        record.data_as_of_ms.is_some(),
    );
}

#[cfg(test)]
mod tests;
