//! Task slots: each executor runs at most `slots` tasks at once, across all queries, and
//! free slots are shared fairly between the queries that wait for them.
//!
//! Every task that wants a slot waits in one list. Whenever a slot frees, a task starts
//! waiting or membership changes, the free slots are handed out: each to a waiting task
//! of the query that holds the fewest slots right now (ties: the query served longest
//! ago, then the task that waited longest) among those that can run on an executor with
//! a free slot. So a short query
//! that arrives while a long one holds the whole cluster gets the next slot that frees,
//! instead of queueing behind the long query's remaining tasks.
//!
//! A grant depends on nothing but free slots: no task ever waits for a slot while
//! holding one (a task takes its slot only once its inputs are finished, see the module
//! doc of the scheduler), so slot hand-out cannot deadlock.
//!
//! A task that runs several partitions at once (a plan run whole on one executor) takes
//! that many slots of one executor together (all of them, on a smaller executor). While
//! such a task is the fairest waiter and no executor has that many free, freed slots wait
//! for it rather than going to tasks behind it, which would otherwise keep it waiting for
//! ever.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_common::QuarryError;
use tokio::sync::oneshot;

use crate::cluster::{Cluster, ExecutorInfo};

/// How long a task waits for any executor to exist before the query fails.
const NO_EXECUTOR_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type Eligible = Arc<dyn Fn(&ExecutorInfo) -> bool + Send + Sync>;

struct Waiter {
    query: String,
    /// Slots it takes on one executor (at most that executor's).
    slots: u32,
    eligible: Eligible,
    preferred: Option<String>,
    /// Where ties between equally free executors start, so tasks go round them.
    spread: usize,
    grant: oneshot::Sender<(ExecutorInfo, Lease)>,
}

#[derive(Default)]
struct PoolState {
    /// Slots taken per executor id.
    in_use: HashMap<String, u32>,
    /// Slots held per query id.
    held: HashMap<String, usize>,
    /// Waiting tasks, by arrival.
    waiters: BTreeMap<u64, Waiter>,
    next_waiter: u64,
    /// When each query was last handed a slot (a grant counter), for ties.
    last_grant: HashMap<String, u64>,
    grants: u64,
}

struct Shared {
    cluster: Arc<Cluster>,
    state: Mutex<PoolState>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

pub(super) struct SlotPool {
    shared: Arc<Shared>,
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for SlotPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPool").finish_non_exhaustive()
    }
}

/// Held slots of one executor; dropping the lease frees them and hands them on.
pub(super) struct Lease {
    shared: Arc<Shared>,
    executor_id: String,
    query: String,
    slots: u32,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("executor", &self.executor_id)
            .field("query", &self.query)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            if let Some(n) = state.in_use.get_mut(&self.executor_id) {
                *n = n.saturating_sub(self.slots);
            }
            if let Some(n) = state.held.get_mut(&self.query) {
                *n = n.saturating_sub(self.slots as usize);
                if *n == 0 {
                    state.held.remove(&self.query);
                }
            }
        }
        dispatch(&self.shared);
    }
}

/// Removes a waiter that stopped waiting (its query was cancelled).
struct WaitGuard<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.id);
    }
}

/// Hand free slots to waiting tasks, fairest first.
fn dispatch(shared: &Arc<Shared>) {
    let executors = shared.cluster.active();
    let mut granted = Vec::new();
    {
        let mut state = shared.lock();
        loop {
            let free_on = |state: &PoolState, e: &ExecutorInfo| {
                e.slots
                    .saturating_sub(state.in_use.get(&e.executor_id).copied().unwrap_or(0))
            };
            let free: Vec<&ExecutorInfo> = executors
                .iter()
                .filter(|e| free_on(&state, e) > 0)
                .collect();
            if free.is_empty() {
                break;
            }
            // The waiting task of the query holding the fewest slots that can run on a
            // free executor; the longest waiting among equals.
            let choice = state
                .waiters
                .iter()
                .filter(|(_, w)| !w.grant.is_closed())
                .filter_map(|(id, w)| {
                    let mut usable: Vec<&ExecutorInfo> = free
                        .iter()
                        .copied()
                        .filter(|e| (w.eligible)(e) && free_on(&state, e) >= wanted(w, e))
                        .collect();
                    if usable.is_empty() {
                        return None;
                    }
                    let n = usable.len();
                    usable.rotate_left(w.spread % n);
                    let executor = usable
                        .iter()
                        .copied()
                        .find(|e| w.preferred.as_deref() == Some(e.executor_id.as_str()))
                        .or_else(|| {
                            // Most free slots; the first in rotated order among equals.
                            usable.iter().copied().min_by_key(|e| {
                                let used = state.in_use.get(&e.executor_id).copied().unwrap_or(0);
                                std::cmp::Reverse(e.slots.saturating_sub(used))
                            })
                        })?;
                    Some((fairness(&state, *id, w), executor.clone()))
                })
                .min_by_key(|(key, _)| *key);
            // Waiters whose task went away are dropped here.
            state.waiters.retain(|_, w| !w.grant.is_closed());
            let Some((key, executor)) = choice else {
                break;
            };
            // A fairer task that takes several slots and finds no executor with enough
            // free keeps the free ones for itself.
            let reserved = state.waiters.iter().any(|(other, w)| {
                w.slots > 1
                    && executors.iter().any(|e| (w.eligible)(e))
                    && fairness(&state, *other, w) < key
            });
            let (_, _, id) = key;
            if reserved {
                break;
            }
            let Some(waiter) = state.waiters.remove(&id) else {
                break;
            };
            state.grants += 1;
            let grants = state.grants;
            state.last_grant.insert(waiter.query.clone(), grants);
            let slots = wanted(&waiter, &executor);
            *state
                .in_use
                .entry(executor.executor_id.clone())
                .or_default() += slots;
            *state.held.entry(waiter.query.clone()).or_default() += slots as usize;
            granted.push((waiter, executor, slots));
        }
        // Forget queries that neither hold nor wait for a slot.
        if state.last_grant.len() > 64 {
            let PoolState {
                last_grant,
                held,
                waiters,
                ..
            } = &mut *state;
            last_grant
                .retain(|q, _| held.contains_key(q) || waiters.values().any(|w| &w.query == q));
        }
    }
    // Send outside the lock: a grant that finds its waiter gone drops its lease, which
    // frees the slot and dispatches again.
    for (waiter, executor, slots) in granted {
        let lease = Lease {
            shared: Arc::clone(shared),
            executor_id: executor.executor_id.clone(),
            query: waiter.query.clone(),
            slots,
        };
        let _ = waiter.grant.send((executor, lease));
    }
}

/// Which waiter goes first: of the query holding the fewest slots now, then the query
/// served longest ago, then the task that waited longest.
fn fairness(state: &PoolState, id: u64, waiter: &Waiter) -> (usize, u64, u64) {
    (
        state.held.get(&waiter.query).copied().unwrap_or(0),
        state.last_grant.get(&waiter.query).copied().unwrap_or(0),
        id,
    )
}

/// The slots `waiter` takes on `executor`: what it asks for, at most all of them.
fn wanted(waiter: &Waiter, executor: &ExecutorInfo) -> u32 {
    waiter.slots.min(executor.slots).max(1)
}

/// Which executors are active, with how many slots: changes when one joins or goes.
fn capacity(cluster: &Cluster) -> Vec<(String, u64, u32)> {
    cluster
        .active()
        .into_iter()
        .map(|e| (e.executor_id, e.incarnation, e.slots))
        .collect()
}

impl SlotPool {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        SlotPool {
            shared: Arc::new(Shared {
                cluster,
                state: Mutex::new(PoolState::default()),
            }),
            next: Default::default(),
        }
    }

    /// Take a slot for a task of `query` on one of the executors `eligible` accepts,
    /// preferring `preferred`, else the one with the most free slots.
    #[cfg(test)]
    pub(super) async fn acquire(
        &self,
        query: &str,
        eligible: Eligible,
        preferred: Option<&str>,
    ) -> Result<(ExecutorInfo, Lease), QuarryError> {
        self.acquire_many(query, eligible, preferred, 1).await
    }

    /// Take `slots` slots of one executor (all of a smaller one's) for a task of `query`
    /// that runs that many partitions at once; otherwise as [`SlotPool::acquire`].
    pub(super) async fn acquire_many(
        &self,
        query: &str,
        eligible: Eligible,
        preferred: Option<&str>,
        slots: u32,
    ) -> Result<(ExecutorInfo, Lease), QuarryError> {
        let spread = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cluster = Arc::clone(&self.shared.cluster);
        let mut no_executor_since: Option<Instant> = None;
        loop {
            if !cluster.active().iter().any(|e| eligible(e)) {
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
            let (grant, mut granted) = oneshot::channel();
            let id = {
                let mut state = self.shared.lock();
                let id = state.next_waiter;
                state.next_waiter += 1;
                state.waiters.insert(
                    id,
                    Waiter {
                        query: query.to_string(),
                        slots: slots.max(1),
                        eligible: Arc::clone(&eligible),
                        preferred: preferred.map(str::to_string),
                        spread,
                        grant,
                    },
                );
                id
            };
            let guard = WaitGuard {
                shared: &self.shared,
                id,
            };
            dispatch(&self.shared);
            // Freed slots and new waiters dispatch by themselves; membership changes (an
            // executor joins, or the eligible ones go) are looked for here.
            let mut members = capacity(&cluster);
            loop {
                tokio::select! {
                    result = &mut granted => {
                        drop(guard);
                        match result {
                            Ok(grant) => return Ok(grant),
                            // The pool dropped the waiter; try again.
                            Err(_) => break,
                        }
                    }
                    _ = cluster.changed(Duration::from_millis(250)) => {
                        if !cluster.active().iter().any(|e| eligible(e)) {
                            break;
                        }
                        let now = capacity(&cluster);
                        if now != members {
                            members = now;
                            dispatch(&self.shared);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
// Tests own the tasks they start.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::error::CoordinatorError;
    use quarry_common::protocol::ExecutorRegistration;

    fn cluster(slots: u32) -> Arc<Cluster> {
        let cluster = Cluster::new(Duration::from_secs(1), Duration::from_secs(60));
        cluster.register(ExecutorRegistration {
            executor_id: "e1".to_string(),
            flight_endpoint: "http://127.0.0.1:1".to_string(),
            slots,
            data_dir: String::new(),
            local_files: Vec::new(),
        });
        cluster
    }

    fn anywhere() -> Eligible {
        Arc::new(|_: &ExecutorInfo| true)
    }

    /// A query that arrives while another holds every slot and has more tasks waiting
    /// gets the next slot that frees, and then they take turns.
    #[tokio::test]
    async fn a_late_query_gets_the_next_free_slot() -> Result<(), QuarryError> {
        let pool = Arc::new(SlotPool::new(cluster(1)));
        let (_, first) = pool.acquire("long", anywhere(), None).await?;
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (query, n) in [("long", 3), ("short", 2)] {
            for _ in 0..n {
                let pool = Arc::clone(&pool);
                let tx = order_tx.clone();
                waiting.push(tokio::spawn(async move {
                    let (_, lease) = pool.acquire(query, anywhere(), None).await?;
                    let _ = tx.send(query);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(lease);
                    Ok::<_, QuarryError>(())
                }));
                // Every long task waits before the short query arrives.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(first);
        let mut served = Vec::new();
        for _ in 0..5 {
            served.push(order.recv().await.unwrap_or("none"));
        }
        assert_eq!(served, ["short", "long", "short", "long", "long"]);
        for task in waiting {
            task.await
                .map_err(|e| QuarryError::from(CoordinatorError::crashed("a waiter", e)))??;
        }
        Ok(())
    }

    /// A task that runs two partitions at once takes two slots of one executor together;
    /// a later single-slot task does not take the slot it is waiting for, and gets one
    /// once both are freed.
    #[tokio::test]
    async fn a_task_of_several_partitions_takes_that_many_slots_and_is_not_starved()
    -> Result<(), QuarryError> {
        let pool = Arc::new(SlotPool::new(cluster(2)));
        let (_, first) = pool.acquire("a", anywhere(), None).await?;
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let whole = {
            let (pool, tx) = (Arc::clone(&pool), order_tx.clone());
            tokio::spawn(async move {
                let (_, lease) = pool.acquire_many("whole", anywhere(), None, 2).await?;
                let _ = tx.send(("whole", lease.slots));
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(lease);
                Ok::<_, QuarryError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let single = {
            let (pool, tx) = (Arc::clone(&pool), order_tx.clone());
            tokio::spawn(async move {
                let (_, lease) = pool.acquire("single", anywhere(), None).await?;
                let _ = tx.send(("single", lease.slots));
                Ok::<_, QuarryError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One slot is free all this time, but it is kept for the two-slot task.
        assert!(order.try_recv().is_err(), "a slot went to a task behind it");
        drop(first);
        assert_eq!(order.recv().await, Some(("whole", 2)));
        assert_eq!(order.recv().await, Some(("single", 1)));
        for task in [whole, single] {
            task.await
                .map_err(|e| QuarryError::from(CoordinatorError::crashed("a waiter", e)))??;
        }
        // More than an executor has: all of its slots.
        let (_, all) = pool.acquire_many("big", anywhere(), None, 8).await?;
        assert_eq!(all.slots, 2);
        Ok(())
    }

    /// A task that stops waiting (its query was cancelled) leaves no slot taken.
    #[tokio::test]
    async fn a_cancelled_wait_takes_nothing() -> Result<(), QuarryError> {
        let pool = Arc::new(SlotPool::new(cluster(1)));
        let (_, held) = pool.acquire("a", anywhere(), None).await?;
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire("b", anywhere(), None).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        drop(held);
        let next =
            tokio::time::timeout(Duration::from_secs(2), pool.acquire("c", anywhere(), None))
                .await
                .map_err(|_| {
                    QuarryError::from(CoordinatorError::invariant("the slot was never freed"))
                })?;
        assert!(next.is_ok());
        Ok(())
    }
}
