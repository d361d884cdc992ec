//! The coordinator's background work, owned in one place: job runs, refreshes, the sweeps
//! (abandoned jobs, lost executors, refresh schedules), releases of a finished query's
//! exchange outputs, purges of dropped tables and old materializations, and the cleanup
//! after a table's last write. Nothing else starts a task (a clippy rule refuses bare
//! `tokio::spawn` in the coordinator), so shutdown can stop every piece and wait for it.
//!
//! Work handed over from a `Drop` runs on the runtime the coordinator started on, whatever
//! thread the drop happens on.

use std::future::Future;
use std::time::Duration;

use quarry_common::QuarryError;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::CoordinatorError;

/// The owner of the coordinator's background work; clones share it.
#[derive(Debug, Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    runtime: Handle,
}

impl Tasks {
    /// Tasks on the current runtime, told to stop by `stop`.
    pub fn new(stop: CancellationToken) -> Result<Self, QuarryError> {
        let runtime = Handle::try_current()
            .map_err(|_| CoordinatorError::invariant("the coordinator starts inside a runtime"))?;
        Ok(Tasks {
            tracker: TaskTracker::new(),
            stop,
            runtime,
        })
    }

    /// Run `work` in the background; shutdown waits for it.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // The one place a coordinator task starts: it is tracked (its handle is dropped,
        // which leaves it running).
        #[allow(clippy::disallowed_methods)]
        drop(self.tracker.spawn_on(work, &self.runtime));
    }

    /// Fires when the coordinator shuts down: long-running loops end on it.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Tell every loop to stop, accept no new work and wait up to `grace` for what runs.
    /// True when everything ended in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// How many tasks are running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_loops_and_waits_for_work_handed_over_from_drop() {
        let tasks = Tasks::new(CancellationToken::new()).unwrap();
        let stopping = tasks.stopping();
        tasks.spawn(async move { stopping.cancelled().await });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let handed = tasks.clone();
        // A drop on a thread outside the runtime hands its work over.
        std::thread::spawn(move || {
            handed.spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = done_tx.send(());
            });
        })
        .join()
        .unwrap();
        assert_eq!(tasks.running(), 2);
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
        assert!(done_rx.await.is_ok(), "the handed-over work ran to its end");
    }
}
