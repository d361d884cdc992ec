//! The watchdog: a safety net under the scheduler's guarantee that tasks cannot wait on
//! each other. A query whose tasks hold slots and all stop making progress for
//! `quarry.stall_timeout` fails with an error naming the stages and what each task waits
//! on (from the executors' heartbeats), and its slots go back to the cluster. Progress is
//! a task finishing, a task starting, or rows moving in any operator of a running task.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use quarry_common::QuarryError;

use super::QueryRun;
use crate::cluster::ExecutorInfo;

/// A task holding a slot right now.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub executor_id: String,
    pub attempt: u32,
    pub started: Instant,
}

/// Lists a task as holding a slot for as long as it is alive.
pub(super) struct InFlightGuard<'a> {
    run: &'a QueryRun,
    key: (u32, u32),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.run.lock();
        state.in_flight.remove(&self.key);
        state.last_progress = Instant::now();
    }
}

impl QueryRun {
    /// Note that a task took a slot on `executor_id`, until the guard is dropped.
    pub(super) fn in_flight(
        &self,
        stage: u32,
        partition: u32,
        executor_id: &str,
        attempt: u32,
    ) -> InFlightGuard<'_> {
        let mut state = self.lock();
        state.in_flight.insert(
            (stage, partition),
            InFlight {
                executor_id: executor_id.to_string(),
                attempt,
                started: Instant::now(),
            },
        );
        state.last_progress = Instant::now();
        InFlightGuard {
            run: self,
            key: (stage, partition),
        }
    }

    /// Resolves only when the query has stalled (never when the timeout is zero).
    pub(super) async fn watch(&self) -> QuarryError {
        let timeout = self.tasks.stall_timeout;
        if timeout.is_zero() {
            return futures::future::pending().await;
        }
        let period = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Some(error) = self.stalled(timeout) {
                return error;
            }
        }
    }

    fn stalled(&self, timeout: Duration) -> Option<QuarryError> {
        let state = self.lock();
        if state.in_flight.is_empty() || state.last_progress.elapsed() < timeout {
            return None;
        }
        let executors: HashMap<String, ExecutorInfo> = self
            .scheduler
            .cluster
            .all()
            .into_iter()
            .map(|e| (e.executor_id.clone(), e))
            .collect();
        let timeout_ms = timeout.as_millis() as u64;
        let mut stages = BTreeSet::new();
        let mut tasks = Vec::new();
        for ((stage, partition), task) in &state.in_flight {
            if task.started.elapsed() < timeout {
                return None;
            }
            let report = executors.get(&task.executor_id).and_then(|e| {
                e.tasks.iter().find(|r| {
                    r.query_id == self.tasks.query_id
                        && r.stage_id == *stage
                        && r.partition == *partition
                        && r.attempt == task.attempt
                })
            });
            let line = match report {
                Some(r) if r.idle_ms < timeout_ms => return None,
                Some(r) => format!(
                    "task {partition} of stage {stage} on {} moved {} rows and none in the last {:.1} s, waiting on {}",
                    task.executor_id,
                    r.rows,
                    r.idle_ms as f64 / 1000.0,
                    if r.waiting_on.is_empty() {
                        "nothing it reports".to_string()
                    } else {
                        r.waiting_on.join(", ")
                    }
                ),
                None => format!(
                    "task {partition} of stage {stage} on {} holds a slot but its executor does not report it",
                    task.executor_id
                ),
            };
            tracing::warn!(query = %self.tasks.query_id, "stalled: {line}");
            stages.insert(*stage);
            tasks.push(line);
        }
        let stages: Vec<String> = stages.iter().map(u32::to_string).collect();
        // The stall timeout ran out: a deadline, not a bug of ours to hide.
        Some(QuarryError::new(
            quarry_common::ErrorCode::DeadlineExceeded,
            format!(
                "stage {} made no progress for {:.1} s (quarry.stall_timeout), so the query was stopped: {}",
                stages.join(", stage "),
                timeout.as_secs_f64(),
                tasks.join("; ")
            ),
        ))
    }
}
