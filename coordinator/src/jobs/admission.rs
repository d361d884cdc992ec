//! Admission control, as Dremio's and Trino's queues do it: at most `max_running` queries
//! run on the executors at once, at most `max_queued` more wait (state QUEUED), each for
//! at most `queue_timeout`. A query past a full queue, or one that waited too long, fails
//! at once with RESOURCE_EXHAUSTED; nothing waits without bound.
//!
//! Only queries that run on executors are admitted here: statements the coordinator
//! answers alone (`SELECT 1`, catalog statements, `SET`, system tables) take no slots and
//! skip the queue, so they stay quick while the cluster is busy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quarry_common::{ErrorCode, QuarryError};
use tokio::sync::oneshot;

/// Limits of the admission queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Queries running on the executors at once.
    pub max_running: usize,
    /// Queries waiting to run; one more is refused.
    pub max_queued: usize,
    /// Longest a query waits in the queue.
    pub queue_timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_running: DEFAULT_MAX_RUNNING,
            max_queued: DEFAULT_MAX_QUEUED,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

pub const DEFAULT_MAX_RUNNING: usize = 16;
pub const DEFAULT_MAX_QUEUED: usize = 200;
pub(crate) const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// Waiting queries in arrival order; a closed sender is a query that gave up.
    queue: VecDeque<oneshot::Sender<Permit>>,
}

#[derive(Debug)]
struct Shared {
    config: AdmissionConfig,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

/// A query's right to run; the next queued query is admitted when it is dropped.
#[derive(Debug)]
pub struct Permit {
    /// None once handed back by other means.
    shared: Option<Arc<Shared>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.lock();
            state.running = state.running.saturating_sub(1);
            admit_next(&shared, &mut state);
        }
    }
}

fn admit_next(shared: &Arc<Shared>, state: &mut State) {
    while state.running < shared.config.max_running {
        let Some(waiter) = state.queue.pop_front() else {
            return;
        };
        if waiter.is_closed() {
            continue;
        }
        state.running += 1;
        let permit = Permit {
            shared: Some(Arc::clone(shared)),
        };
        if let Err(mut permit) = waiter.send(permit) {
            // It gave up just now: the turn goes back here, under the lock we hold.
            permit.shared = None;
            state.running -= 1;
        }
    }
}

/// A place in line: admitted already, or waiting.
#[derive(Debug)]
pub enum Ticket {
    Admitted(Permit),
    Queued(oneshot::Receiver<Permit>, Duration),
}

impl Ticket {
    pub fn is_queued(&self) -> bool {
        matches!(self, Ticket::Queued(..))
    }

    /// Wait for the turn (up to the queue timeout).
    pub async fn admitted(self) -> Result<Permit, QuarryError> {
        match self {
            Ticket::Admitted(permit) => Ok(permit),
            Ticket::Queued(turn, timeout) => match tokio::time::timeout(timeout, turn).await {
                Ok(Ok(permit)) => Ok(permit),
                Ok(Err(_)) => Err(QuarryError::unavailable("the coordinator is shutting down")),
                Err(_) => Err({
                    crate::metrics::admission_refused("queue_timeout");
                    QuarryError::new(
                        ErrorCode::ResourceExhausted,
                        format!(
                            "the query waited {} in the queue without a turn to run; the cluster is busy, try again later",
                            humantime::format_duration(timeout)
                        ),
                    )
                }),
            },
        }
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            shared: Arc::new(Shared {
                config: AdmissionConfig {
                    max_running: config.max_running.max(1),
                    ..config
                },
                state: Mutex::default(),
            }),
        }
    }

    /// Take a turn, or a place in the queue, or be refused when the queue is full.
    pub fn enqueue(&self) -> Result<Ticket, QuarryError> {
        let mut state = self.shared.lock();
        state.queue.retain(|w| !w.is_closed());
        if state.running < self.shared.config.max_running && state.queue.is_empty() {
            state.running += 1;
            return Ok(Ticket::Admitted(Permit {
                shared: Some(Arc::clone(&self.shared)),
            }));
        }
        if state.queue.len() >= self.shared.config.max_queued {
            crate::metrics::admission_refused("queue_full");
            return Err(QuarryError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the query queue is full ({} running, {} waiting); try again later",
                    state.running,
                    state.queue.len()
                ),
            ));
        }
        let (send, receive) = oneshot::channel();
        state.queue.push_back(send);
        Ok(Ticket::Queued(receive, self.shared.config.queue_timeout))
    }

    /// (running, queued) right now.
    pub fn load(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (
            state.running,
            state.queue.iter().filter(|w| !w.is_closed()).count(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_running: usize, max_queued: usize, timeout_ms: u64) -> AdmissionConfig {
        AdmissionConfig {
            max_running,
            max_queued,
            queue_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn queries_queue_in_order_and_a_full_queue_refuses() -> Result<(), QuarryError> {
        let admission = Admission::new(config(1, 1, 5_000));
        let first = admission.enqueue()?;
        assert!(!first.is_queued());
        let second = admission.enqueue()?;
        assert!(second.is_queued());
        let refused = admission.enqueue().expect_err("the queue is full");
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        assert_eq!(admission.load(), (1, 1));
        let permit = first.admitted().await?;
        drop(permit);
        let _second = second.admitted().await?;
        assert_eq!(admission.load(), (1, 0));
        Ok(())
    }

    #[tokio::test]
    async fn a_wait_past_the_timeout_fails_and_gives_its_place_up() -> Result<(), QuarryError> {
        let admission = Admission::new(config(1, 4, 50));
        let _running = admission.enqueue()?.admitted().await?;
        let error = admission
            .enqueue()?
            .admitted()
            .await
            .expect_err("timed out");
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
        assert!(error.message.contains("waited"), "{}", error.message);
        assert_eq!(admission.load(), (1, 0));
        Ok(())
    }
}
