//! The scheduler: runs a query's stages as tasks on executors, and keeps the query going
//! when executors die.
//!
//! A stage runs once the stages it reads have finished (independent stages at the same
//! time); the tasks of a stage run in parallel, each in a slot
//! of an executor chosen by [`placement`]. Every task output is kept on the executor
//! that produced it, under an attempt number, until the query ends.
//!
//! Failures, by kind:
//! - the task's executor goes away (the call breaks, or heartbeats stop): the task runs
//!   again elsewhere with the next attempt number, up to `quarry.task_max_attempts`;
//! - the task could not read an input piece (its producer's executor is gone): the lost
//!   producer tasks are recomputed from their own inputs (lineage), then the task runs
//!   again against the new pieces;
//! - the task fails on its data or plan: the query fails.
//!
//! Before a stage runs, and before the coordinator reads the last stage, every input
//! piece is checked to live on an active executor; lost ones are recomputed first.
//!
//! # Why tasks holding slots cannot wait on each other
//!
//! A cluster of multi-slot executors once hung for good (TPC-H SF1 Q7/Q9 on two
//! executors with two slots): every slot was held by a task waiting, without using any
//! CPU, for exchange data that never arrived, and every later query waited for a slot.
//! The cause was HTTP/2 flow control. All `do_get` streams from one executor to a peer
//! shared one connection, and so one connection window. DataFusion opens some inputs
//! long before it reads them: a broadcast join executes its build and probe inputs when
//! it starts, and a coalesce runs each of its inputs in a task that stops at a small
//! bounded channel. Those streams kept receiving data until their windows were full,
//! which filled the connection's window, and the one stream the task was actually
//! reading — on the same connection — stalled. With two tasks of one executor reading
//! from the same peer the connection filled twice as fast; with one slot it did not.
//!
//! The guarantee, by construction:
//! 1. A task waits only on finished data. A stage starts only after every stage it reads
//!    has finished, and its outputs are complete in the producers' exchange stores, so
//!    no task ever waits for another task to produce something (lost outputs are
//!    recomputed before the reading stage runs, without holding a slot).
//! 2. A task's reads cannot be held up by any other read. Every exchange stream has a
//!    connection of its own while it is open (`FlightChannels::data_client`), so a
//!    stream's unread data blocks only that stream, exactly like DataFusion's own bounded
//!    channels in one process, where the same plans never deadlock.
//! 3. Slots are handed out by [`slots`] from free slots only; a task never asks for a
//!    slot while holding one.
//!
//! Should a future change break this, the [`watchdog`] fails a query whose tasks all
//! stop making progress for `quarry.stall_timeout`, naming the stage and what each task
//! waits on, instead of letting it hold the cluster.

mod adaptive;
pub(crate) mod analyze;
mod attempts;
mod pieces;
mod placement;
mod profile;
mod rpc;
mod run;
mod slots;
mod watchdog;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use quarry_common::action_service::call_action;
use quarry_common::flight_channels::FlightChannels;
use quarry_common::protocol::{ACTION_RELEASE_QUERY, ObjectStoreSpec, ReleaseQuery, Setting};

use crate::cluster::Cluster;
use crate::planner::stages::StagePlan;
pub(crate) use analyze::report as analyze_report;
pub use profile::{QueryProfile, StageProfile, TaskProfile};
pub(crate) use run::QueryRun;
use run::RunState;
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
    /// Fail the query when its running tasks all make no progress this long (0 = never).
    pub stall_timeout: Duration,
}

/// A finished task: where its output is.
#[derive(Debug, Clone)]
struct TaskOutput {
    executor_id: String,
    incarnation: u64,
    endpoint: String,
    attempt: u32,
    /// The ranges of the output columns later stages' dynamic filters asked for.
    bounds: Vec<quarry_common::protocol::ColumnBound>,
    /// Its pieces, when the task sent them back with its result (a small output of a
    /// stage the coordinator reads): they stay readable here whatever becomes of the
    /// executor.
    inline: Option<Arc<Vec<bytes::Bytes>>>,
}

impl TaskOutput {
    /// Is it held only in `executor_id`'s exchange store (not sent back with the result)?
    fn held_on(&self, executor_id: &str) -> bool {
        self.inline.is_none() && self.executor_id == executor_id
    }

    /// Is it gone with its executor (held there, and the executor not the same one)?
    fn lost(&self, cluster: &crate::cluster::Cluster) -> bool {
        self.held_on(&self.executor_id) && !cluster.is_current(&self.executor_id, self.incarnation)
    }
}

/// How one task ended, as far as its stage is concerned.
enum TaskEnd {
    Done(u32, TaskOutput, TaskProfile),
    /// An input piece is gone: recompute inputs, then run it again.
    NeedsInputs(u32),
}

pub struct Scheduler {
    cluster: Arc<Cluster>,
    channels: Arc<FlightChannels>,
    slots: SlotPool,
}

impl Scheduler {
    pub fn new(cluster: Arc<Cluster>, channels: Arc<FlightChannels>) -> Self {
        Scheduler {
            slots: SlotPool::new(Arc::clone(&cluster)),
            cluster,
            channels,
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn channels(&self) -> &Arc<FlightChannels> {
        &self.channels
    }

    /// Prepare a query's run.
    pub fn query(self: &Arc<Self>, tasks: QueryTasks, plan: StagePlan) -> Arc<QueryRun> {
        let allowed = match tasks.max_executors {
            0 => None,
            n => Some(
                self.cluster
                    .active()
                    .into_iter()
                    .take(n)
                    .map(|e| e.executor_id)
                    .collect(),
            ),
        };
        Arc::new(QueryRun {
            scheduler: Arc::clone(self),
            tasks,
            plan,
            allowed,
            state: Mutex::new(RunState::default()),
        })
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
