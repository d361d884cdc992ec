//! Cluster membership: which executors exist, how many task slots each has, and whether
//! they are alive. Executors register and heartbeat through [`internal`]; an executor that
//! misses heartbeats for `lost_after` is declared lost and takes no more work.

pub(crate) mod files;
pub(crate) mod internal;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quarry_catalog::now_ms;
use quarry_common::protocol::{ExecutorRegistration, Heartbeat, LocalFile, TaskActivityReport};
use tokio::sync::Notify;

/// What the coordinator knows about one executor.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    pub executor_id: String,
    /// Which registration of this executor id: a restarted executor is a new incarnation,
    /// holding none of the outputs of the old one.
    pub incarnation: u64,
    pub endpoint: String,
    pub slots: u32,
    pub data_dir: String,
    pub local_files: Arc<Vec<LocalFile>>,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms: u64,
    pub running_tasks: u32,
    pub exchange_bytes: u64,
    /// Task outputs held in its exchange store.
    pub exchange_outputs: u32,
    pub memory_used_bytes: u64,
    pub spill_files: u32,
    /// What its running tasks were doing at the last heartbeat.
    pub tasks: Arc<Vec<TaskActivityReport>>,
    pub state: ExecutorState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorState {
    Active,
    /// Stopped heartbeating; its running tasks are failed over.
    Lost,
    /// Said goodbye: it takes no new tasks, but finishes the ones it runs and serves its
    /// outputs until it goes.
    Left,
}

impl ExecutorState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorState::Active => "ACTIVE",
            ExecutorState::Lost => "LOST",
            ExecutorState::Left => "LEFT",
        }
    }
}

#[derive(Debug)]
struct Member {
    info: ExecutorInfo,
    last_seen: Instant,
}

/// The live membership table.
#[derive(Debug)]
pub struct Cluster {
    members: RwLock<BTreeMap<String, Member>>,
    heartbeat_interval: Duration,
    lost_after: Duration,
    /// Woken whenever membership changes.
    changed: Notify,
    incarnations: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub fn new(heartbeat_interval: Duration, lost_after: Duration) -> Arc<Self> {
        Arc::new(Cluster {
            members: RwLock::new(BTreeMap::new()),
            heartbeat_interval,
            lost_after,
            changed: Notify::new(),
            incarnations: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    pub fn register(&self, registration: ExecutorRegistration) {
        let now = now_ms();
        let info = ExecutorInfo {
            executor_id: registration.executor_id.clone(),
            incarnation: self
                .incarnations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            endpoint: registration.flight_endpoint,
            slots: registration.slots.max(1),
            data_dir: registration.data_dir,
            local_files: Arc::new(registration.local_files),
            registered_at_ms: now,
            last_heartbeat_ms: now,
            running_tasks: 0,
            exchange_bytes: 0,
            exchange_outputs: 0,
            memory_used_bytes: 0,
            spill_files: 0,
            tasks: Arc::default(),
            state: ExecutorState::Active,
        };
        tracing::info!(executor = %info.executor_id, endpoint = %info.endpoint, slots = info.slots, "executor registered");
        if let Ok(mut members) = self.members.write() {
            members.insert(
                registration.executor_id,
                Member {
                    info,
                    last_seen: Instant::now(),
                },
            );
        }
        self.changed.notify_waiters();
    }

    /// Record a heartbeat; false when the executor is unknown or was declared lost.
    pub fn heartbeat(&self, beat: &Heartbeat) -> bool {
        let Ok(mut members) = self.members.write() else {
            return false;
        };
        match members.get_mut(&beat.executor_id) {
            Some(member) if member.info.state == ExecutorState::Active => {
                member.last_seen = Instant::now();
                member.info.last_heartbeat_ms = now_ms();
                member.info.running_tasks = beat.running_tasks;
                member.info.exchange_bytes = beat.exchange_bytes;
                member.info.exchange_outputs = beat.exchange_outputs;
                member.info.memory_used_bytes = beat.memory_used_bytes;
                member.info.spill_files = beat.spill_files;
                member.info.tasks = Arc::new(beat.tasks.clone());
                true
            }
            _ => false,
        }
    }

    pub fn deregister(&self, executor_id: &str) {
        if let Ok(mut members) = self.members.write()
            && let Some(member) = members.get_mut(executor_id)
        {
            member.info.state = ExecutorState::Left;
            tracing::info!(executor = %executor_id, "executor left");
        }
        self.changed.notify_waiters();
    }

    /// Mark executors silent for too long as lost; returns the ones newly lost.
    pub fn expire(&self) -> Vec<String> {
        let mut lost = Vec::new();
        if let Ok(mut members) = self.members.write() {
            for member in members.values_mut() {
                if matches!(
                    member.info.state,
                    ExecutorState::Active | ExecutorState::Left
                ) && member.last_seen.elapsed() > self.lost_after
                {
                    member.info.state = ExecutorState::Lost;
                    tracing::warn!(executor = %member.info.executor_id, "executor lost: no heartbeat");
                    lost.push(member.info.executor_id.clone());
                }
            }
        }
        if !lost.is_empty() {
            self.changed.notify_waiters();
        }
        lost
    }

    /// Mark one incarnation of an executor lost now (a call to it failed at the
    /// transport level, or it no longer had an output it made).
    pub fn mark_lost(&self, executor_id: &str, incarnation: u64) {
        if let Ok(mut members) = self.members.write()
            && let Some(member) = members.get_mut(executor_id)
            && matches!(
                member.info.state,
                ExecutorState::Active | ExecutorState::Left
            )
            && member.info.incarnation == incarnation
        {
            member.info.state = ExecutorState::Lost;
            tracing::warn!(executor = %executor_id, "executor lost: unreachable");
        }
        self.changed.notify_waiters();
    }

    /// Whether this incarnation of the executor is still there: active, or leaving but
    /// not gone (its running tasks finish, its outputs can be read).
    pub fn is_current(&self, executor_id: &str, incarnation: u64) -> bool {
        self.members
            .read()
            .map(|m| {
                m.get(executor_id).is_some_and(|m| {
                    matches!(m.info.state, ExecutorState::Active | ExecutorState::Left)
                        && m.info.incarnation == incarnation
                })
            })
            .unwrap_or(false)
    }

    /// Executors that take work, in id order.
    pub fn active(&self) -> Vec<ExecutorInfo> {
        self.members
            .read()
            .map(|m| {
                m.values()
                    .filter(|m| m.info.state == ExecutorState::Active)
                    .map(|m| m.info.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every executor ever seen since the coordinator started, for `sys.nodes`.
    pub fn all(&self) -> Vec<ExecutorInfo> {
        self.members
            .read()
            .map(|m| m.values().map(|m| m.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Total task slots of active executors.
    pub fn total_slots(&self) -> usize {
        self.active().iter().map(|e| e.slots as usize).sum()
    }

    /// Wait until membership changes or `timeout` passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// Wait until at least `n` executors are active.
    pub async fn wait_for_executors(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.active().len() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.changed(left.min(Duration::from_millis(50))).await;
        }
    }

    /// Run the loss detector until `stop` fires.
    pub fn spawn_expiry(self: &Arc<Self>, tasks: &crate::tasks::Tasks) {
        let cluster = Arc::clone(self);
        let stop = tasks.stopping();
        tasks.spawn(async move {
            let tick = (cluster.heartbeat_interval / 2).max(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                cluster.expire();
            }
        })
    }
}
