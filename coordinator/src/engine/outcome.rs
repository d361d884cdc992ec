//! What planning makes of a statement ([`Outcome`]): rows already made, a plan for the
//! coordinator, or stages for the executors, and what a distributed query must give back
//! however it ends.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use quarry_common::QuarryError;
use quarry_common::protocol::{ObjectStoreSpec, Setting};

use crate::access::UserAccess;
use crate::jobs::admission::Ticket;
use crate::planner::stages::StagePlan;
use crate::scheduler::Scheduler;

use super::QuarryOptions;
use super::result_batches::plan_text_schema;
use super::results_cache::{CacheKey, CachedResult};

/// How a planned statement produces its rows.
pub(super) enum Outcome {
    /// Already produced while planning (catalog statements, SET, EXPLAIN).
    Rows(SchemaRef, Vec<RecordBatch>),
    /// Runs on the coordinator (no file scans: VALUES, information_schema, DESCRIBE).
    Local(Arc<dyn ExecutionPlan>, Arc<TaskContext>),
    /// Runs on executors.
    Distributed(Box<DistributedQuery>),
    /// EXPLAIN ANALYZE: run the query, report what each stage did.
    Analyze(Box<Outcome>),
    /// CREATE TABLE ... AS SELECT: the insert, and the new table, dropped again when the
    /// insert fails, so a failed CTAS leaves no table.
    Created(Box<Outcome>, CreatedTable),
    /// The rows an earlier run of the same query left in the results cache, and the key
    /// planning found them under (none when a shortcut served them unplanned).
    Cached(CachedResult, Option<CacheKey>),
    /// A query whose rows go to the results cache under the key when it succeeds.
    Caching(Box<Outcome>, CacheKey),
}

/// What a background job does after its run (see `Engine::start_then`).
pub(super) type Then = Box<
    dyn FnOnce(
            Result<(), QuarryError>,
        ) -> futures::future::BoxFuture<'static, Result<(), QuarryError>>
        + Send,
>;

pub(super) struct CreatedTable {
    pub(super) actor: Arc<UserAccess>,
    pub(super) schema: String,
    pub(super) name: String,
}

impl Outcome {
    /// The part that runs on executors, if any.
    pub(super) fn distributed_mut(&mut self) -> Option<&mut DistributedQuery> {
        match self {
            Outcome::Distributed(query) => Some(query),
            Outcome::Analyze(inner) | Outcome::Created(inner, _) | Outcome::Caching(inner, _) => {
                inner.distributed_mut()
            }
            _ => None,
        }
    }

    pub(super) fn schema(&self) -> SchemaRef {
        match self {
            Outcome::Rows(schema, _) => Arc::clone(schema),
            Outcome::Local(plan, _) => plan.schema(),
            Outcome::Distributed(query) => query.stages.root.schema(),
            Outcome::Analyze(_) => plan_text_schema(),
            Outcome::Created(inner, _) | Outcome::Caching(inner, _) => inner.schema(),
            Outcome::Cached(result, _) => Arc::clone(&result.schema),
        }
    }
}

pub(super) struct DistributedQuery {
    pub(super) stages: StagePlan,
    pub(super) settings: Vec<Setting>,
    pub(super) object_stores: Vec<ObjectStoreSpec>,
    pub(super) options: QuarryOptions,
    /// The query's session, for running the root stage on the coordinator.
    pub(super) state: SessionState,
    /// Its place in the admission queue, taken when it was submitted.
    pub(super) ticket: Option<Ticket>,
}

/// How recently a lost executor must have been heard from to be sent a query's release.
const RELEASE_LOST_WITHIN_MS: u64 = 10 * 60 * 1000;

/// Frees a query's exchange outputs on every executor however the query ends.
pub(super) struct ReleaseOnDrop {
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) tasks: crate::tasks::Tasks,
    pub(super) query_id: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let scheduler = Arc::clone(&self.scheduler);
        let query_id = std::mem::take(&mut self.query_id);
        // Executors heard from lately, lost ones too: one declared lost under load may still
        // be alive and holding this query's outputs, which nothing else would free.
        let now = quarry_catalog::now_ms();
        let endpoints = scheduler
            .cluster()
            .all()
            .into_iter()
            .filter(|e| {
                e.state == crate::cluster::ExecutorState::Active
                    || now.saturating_sub(e.last_heartbeat_ms) < RELEASE_LOST_WITHIN_MS
            })
            .map(|e| e.endpoint)
            .collect();
        self.tasks
            .spawn(async move { scheduler.release(&query_id, &endpoints).await });
    }
}
