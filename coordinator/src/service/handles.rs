//! What frontends hold of the engine's objects: a session and a job as opaque handles.
//! Every use of them is a call here or on the service, so the engine's sessions, jobs and
//! result spools stay the engine's, and the policies around them (who may read, when a job
//! is cancelled because its reader left) live once, here.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use futures::StreamExt;
use futures::stream::BoxStream;
use quarry_catalog::JobRecord;
use quarry_common::{ErrorCode, QuarryError};

use crate::engine::Session;
pub use crate::jobs::JobState;
use crate::jobs::{CancelOnDrop, Hold, Job};

/// A client's session: its default schema, settings and prepared statements. Opaque:
/// what is done with it goes through [`super::QueryService`]. It also says which door the
/// client came in by, so the jobs it starts record it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    session: Arc<Session>,
    frontend: Frontend,
}

impl SessionHandle {
    pub(crate) fn new(session: Arc<Session>, frontend: Frontend) -> Self {
        SessionHandle { session, frontend }
    }

    /// The engine's session, for the service's implementation.
    pub(crate) fn inner(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn frontend(&self) -> Frontend {
        self.frontend
    }
}

/// The door a client came in by; job records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    FlightSql,
    Rest,
    PgWire,
    /// A caller in the coordinator's own process (tests, the SQL logic test runner).
    InProcess,
}

impl Frontend {
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::FlightSql => "flight_sql",
            Frontend::Rest => "rest",
            Frontend::PgWire => "pgwire",
            Frontend::InProcess => "in_process",
        }
    }
}

/// A statement a client prepared: its result and parameter schemas.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub handle: String,
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
}

/// A job started or found by a frontend: its state, its results, and cancelling it. While
/// any clone of it lives, the job's results are kept (newer jobs do not push them out).
#[derive(Debug, Clone)]
pub struct JobHandle(Arc<Hold>);

impl JobHandle {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        JobHandle(Arc::new(job.hold()))
    }

    fn job(&self) -> &Arc<Job> {
        self.0.job()
    }

    pub fn id(&self) -> &str {
        &self.job().id
    }

    pub fn state(&self) -> JobState {
        JobState::of(&self.job().state())
    }

    /// Its record as it is now (state, progress, timings, reflections used).
    pub fn record(&self) -> JobRecord {
        self.job().record()
    }

    /// The columns of its results (none yet while it is planned).
    pub fn schema(&self) -> SchemaRef {
        self.job()
            .spool
            .schema()
            .unwrap_or_else(|| Arc::new(Schema::empty()))
    }

    /// Rows produced so far.
    pub fn rows(&self) -> u64 {
        self.job().spool.rows()
    }

    /// Wait for the job to end: its record when it completed, its error when it failed or
    /// was cancelled. A caller that stops waiting (drops this future) cancels the job.
    pub async fn finished(&self) -> Result<JobRecord, QuarryError> {
        let guard = CancelOnDrop::new(self.job(), "the client went away");
        let record = self.job().wait().await;
        guard.disarm();
        match JobState::of(&record.state) {
            JobState::Completed => Ok(record),
            _ => Err(job_error(&record)),
        }
    }

    /// Rows `offset..offset+limit` (all from `offset` when `limit` is None), following the
    /// job while it runs. A failed job ends the stream with its error.
    pub fn results(
        &self,
        offset: u64,
        limit: Option<u64>,
    ) -> BoxStream<'static, Result<RecordBatch, QuarryError>> {
        self.held(self.job().results(offset, limit))
    }

    /// `results` keeping the job's results while they are read: a response body is read
    /// after its handler has returned, and newer jobs must not push these out meanwhile.
    fn held(
        &self,
        results: impl futures::Stream<Item = Result<RecordBatch, QuarryError>> + Send + 'static,
    ) -> BoxStream<'static, Result<RecordBatch, QuarryError>> {
        let hold = Arc::clone(&self.0);
        results
            .map(move |batch| {
                let _kept = &hold;
                batch
            })
            .boxed()
    }

    /// Every row, for the reader the job was waiting for: a reader that drops the stream
    /// before its end cancels the job if it still runs (nobody will read what it computes).
    pub fn results_for_reader(&self) -> BoxStream<'static, Result<RecordBatch, QuarryError>> {
        let results = self.job().spool.read(0, None).boxed();
        self.held(self.job().watched(results))
    }

    /// Cancel the job; false when it had already ended.
    pub fn cancel(&self, reason: &str) -> bool {
        self.job().cancel(reason)
    }

    /// A reader will come for the results later (Flight SQL's DoGet after GetFlightInfo):
    /// the job is cancelled unless one comes within `timeout`.
    pub fn expect_reader(&self, timeout: Duration) {
        self.job().expect_reader(timeout);
    }

    /// A client will come for the results later but may take its time (an asynchronous
    /// REST submission): unread, they are kept for `grace` after the job ends.
    pub fn keep_for_reader(&self, grace: Duration) {
        self.job().keep_for_reader(grace);
    }
}

/// What a job that did not complete answers: its recorded error, typed again.
pub fn job_error(record: &JobRecord) -> QuarryError {
    match &record.error {
        Some(error) => QuarryError::new(ErrorCode::parse(&error.code), error.message.clone()),
        None => QuarryError::new(
            ErrorCode::Internal,
            format!("job {} ended {}", record.id, record.state),
        ),
    }
}
