//! What a running task is waiting on: the exchange pieces it has open, so that a task
//! that stops making progress can say why (see the coordinator's watchdog).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Inputs one task has open; installed in its `ExchangeAccess`.
#[derive(Debug, Default)]
pub struct TaskActivity {
    open: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
}

impl TaskActivity {
    /// Note an input as open until the returned guard is dropped.
    pub fn open(self: &std::sync::Arc<Self>, what: String) -> OpenInput {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, what);
        }
        OpenInput {
            activity: std::sync::Arc::clone(self),
            id,
        }
    }

    /// The inputs open right now.
    pub fn open_inputs(&self) -> Vec<String> {
        self.open
            .lock()
            .map(|open| open.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// An open input; closes on drop.
#[derive(Debug)]
pub struct OpenInput {
    activity: std::sync::Arc<TaskActivity>,
    id: u64,
}

impl Drop for OpenInput {
    fn drop(&mut self) {
        if let Ok(mut open) = self.activity.open.lock() {
            open.remove(&self.id);
        }
    }
}
