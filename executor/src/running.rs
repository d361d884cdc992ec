//! The tasks running on this executor, and what each is doing: rows moved so far, time
//! since it last moved one, and the inputs it has open. Heartbeats carry this to the
//! coordinator, whose watchdog fails a query whose tasks all stopped moving.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use quarry_common::activity::TaskActivity;
use quarry_common::protocol::{TaskActivityReport, TaskDefinition};

/// One running task.
#[derive(Debug)]
pub struct RunningTask {
    query_id: String,
    stage_id: u32,
    partition: u32,
    attempt: u32,
    pub activity: Arc<TaskActivity>,
    /// Set once the plan is decoded.
    pub plan: OnceLock<Arc<dyn ExecutionPlan>>,
    /// (rows seen at the last report, when they last grew)
    progress: Mutex<(u64, Instant)>,
}

impl RunningTask {
    fn report(&self) -> TaskActivityReport {
        let rows = self.plan.get().map(rows_moved).unwrap_or(0);
        let idle_ms = match self.progress.lock() {
            Ok(mut progress) => {
                if rows > progress.0 {
                    *progress = (rows, Instant::now());
                }
                progress.1.elapsed().as_millis() as u64
            }
            Err(_) => 0,
        };
        let mut waiting_on = self.activity.open_inputs();
        if waiting_on.is_empty()
            && let Some(plan) = self.plan.get()
        {
            // No exchange piece is open: the task waits on its own leaves.
            leaves(plan, &mut waiting_on);
        }
        TaskActivityReport {
            query_id: self.query_id.clone(),
            stage_id: self.stage_id,
            partition: self.partition,
            attempt: self.attempt,
            rows,
            idle_ms,
            waiting_on,
        }
    }
}

/// Rows that have left any operator of the plan so far.
fn rows_moved(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(rows_moved).sum::<u64>()
}

fn leaves(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    let children = plan.children();
    if children.is_empty() {
        let mut line = displayable(plan.as_ref()).one_line().to_string();
        if line.len() > 160 {
            let cut = (0..=160)
                .rev()
                .find(|i| line.is_char_boundary(*i))
                .unwrap_or(0);
            line.truncate(cut);
            line.push('…');
        }
        out.push(format!("its input {}", line.trim_end()));
    }
    for child in children {
        leaves(child, out);
    }
}

/// Every task running here.
#[derive(Debug, Default)]
pub struct RunningTasks {
    tasks: Mutex<BTreeMap<u64, Arc<RunningTask>>>,
    next: AtomicU64,
}

/// Keeps a task listed for as long as it is alive (also when it is dropped).
pub struct Registered {
    registry: Arc<RunningTasks>,
    id: u64,
    pub task: Arc<RunningTask>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.registry.tasks.lock() {
            tasks.remove(&self.id);
        }
    }
}

impl RunningTasks {
    pub fn start(self: &Arc<Self>, definition: &TaskDefinition) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let task = Arc::new(RunningTask {
            query_id: definition.query_id.clone(),
            stage_id: definition.stage_id,
            partition: definition.partition,
            attempt: definition.attempt,
            activity: Arc::default(),
            plan: OnceLock::new(),
            progress: Mutex::new((0, Instant::now())),
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.insert(id, Arc::clone(&task));
        }
        Registered {
            registry: Arc::clone(self),
            id,
            task,
        }
    }

    pub fn count(&self) -> u32 {
        self.tasks.lock().map(|t| t.len() as u32).unwrap_or(0)
    }

    pub fn reports(&self) -> Vec<TaskActivityReport> {
        let tasks: Vec<Arc<RunningTask>> = self
            .tasks
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        tasks.iter().map(|t| t.report()).collect()
    }
}
