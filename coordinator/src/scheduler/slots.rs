//! Task slots: each executor runs at most `slots` tasks at once, across all queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_common::QuarryError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::cluster::{Cluster, ExecutorInfo};

/// How long a task waits for any executor to exist before the query fails.
const NO_EXECUTOR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct SlotPool {
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
    released: Arc<Notify>,
    /// Where the next placement-free task starts looking: tasks go round the executors,
    /// so one that joined gets work at once.
    next: std::sync::atomic::AtomicUsize,
}

/// A held slot; freeing it wakes tasks waiting for one.
#[derive(Debug)]
pub struct Lease {
    _permit: OwnedSemaphorePermit,
    released: Arc<Notify>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.released.notify_waiters();
    }
}

impl SlotPool {
    fn semaphore(&self, executor: &ExecutorInfo) -> Arc<Semaphore> {
        let mut semaphores = match self.semaphores.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(
            semaphores
                .entry(executor.executor_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(executor.slots as usize))),
        )
    }

    /// Free slots of an executor right now.
    pub fn free(&self, executor: &ExecutorInfo) -> usize {
        self.semaphore(executor).available_permits()
    }

    /// Take a slot on one of the executors `eligible` accepts, preferring `preferred`,
    /// else the one with the most free slots (ties go round the executors).
    pub async fn acquire(
        &self,
        cluster: &Cluster,
        eligible: &(dyn Fn(&ExecutorInfo) -> bool + Send + Sync),
        preferred: Option<&str>,
    ) -> Result<(ExecutorInfo, Lease), QuarryError> {
        let spread = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut no_executor_since: Option<Instant> = None;
        loop {
            let notified = self.released.notified();
            let mut candidates: Vec<ExecutorInfo> = cluster
                .active()
                .into_iter()
                .filter(|e| eligible(e))
                .collect();
            if candidates.is_empty() {
                let since = *no_executor_since.get_or_insert_with(Instant::now);
                if since.elapsed() > NO_EXECUTOR_TIMEOUT {
                    return Err(QuarryError::unavailable(
                        "no executor is available to run the query: start an executor or check that they can reach the coordinator",
                    ));
                }
                cluster.changed(Duration::from_millis(100)).await;
                continue;
            }
            no_executor_since = None;
            let n = candidates.len();
            candidates.rotate_left(spread % n);
            candidates.sort_by_key(|e| {
                let is_preferred = preferred == Some(e.executor_id.as_str());
                (!is_preferred, std::cmp::Reverse(self.free(e)))
            });
            for executor in candidates {
                if let Ok(permit) = self.semaphore(&executor).try_acquire_owned() {
                    return Ok((
                        executor,
                        Lease {
                            _permit: permit,
                            released: Arc::clone(&self.released),
                        },
                    ));
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = cluster.changed(Duration::from_millis(100)) => {}
            }
        }
    }
}
