//! The executor's Prometheus metrics (served by `http.rs`; the names are listed in
//! `docs/metrics.md`): task outcomes counted as tasks end, the rest read from the
//! executor's status at a scrape.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use quarry_common::protocol::ExecutorStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    /// `succeeded`, `failed` or `cancelled` (its caller went away).
    outcome: &'static str,
}

/// This executor's metrics: task outcomes counted as they end, the rest read at a scrape.
#[derive(Debug)]
pub(crate) struct ExecutorMetrics {
    registry: Registry,
    tasks: Family<OutcomeLabel, Counter>,
    spilled: Counter,
    exchange_sent: Counter,
    exchange_received: Counter,
    running: Gauge,
    memory: Gauge,
    spill_files: Gauge,
    exchange: Gauge,
    exchange_outputs: Gauge,
    resident_memory: Gauge,
}

impl ExecutorMetrics {
    pub(crate) fn new(slots: usize) -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "quarry_executor_tasks",
            "Tasks this executor ran, by outcome",
            tasks.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register_with_unit(name, help, Unit::Bytes, c.clone());
            c
        };
        let spilled = counter(
            &mut registry,
            "quarry_executor_spilled",
            "Bytes finished tasks' operators spilled to disk",
        );
        let exchange_sent = counter(
            &mut registry,
            "quarry_executor_exchange_sent",
            "Bytes of task output this executor sent to readers (Arrow Flight bodies and headers)",
        );
        let exchange_received = counter(
            &mut registry,
            "quarry_executor_exchange_received",
            "Bytes of other tasks' output finished tasks read (in memory, as Arrow arrays)",
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let g = Gauge::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, g.clone()),
                None => registry.register(name, help, g.clone()),
            }
            g
        };
        let slots_gauge = gauge(
            &mut registry,
            "quarry_executor_task_slots",
            "Tasks this executor may run at once",
            None,
        );
        // Fixed for the executor's life: set once, kept by the registry.
        slots_gauge.set(i64::try_from(slots).unwrap_or(i64::MAX));
        let running = gauge(
            &mut registry,
            "quarry_executor_running_tasks",
            "Tasks running now",
            None,
        );
        let memory = gauge(
            &mut registry,
            "quarry_executor_memory_reserved",
            "Memory the running tasks' operators hold in the memory pool",
            Some(Unit::Bytes),
        );
        let spill_files = gauge(
            &mut registry,
            "quarry_executor_spill_files_open",
            "Spill files on disk now",
            None,
        );
        let exchange = gauge(
            &mut registry,
            "quarry_executor_exchange_memory",
            "Task output held in memory for other tasks to read",
            Some(Unit::Bytes),
        );
        let exchange_outputs = gauge(
            &mut registry,
            "quarry_executor_exchange_outputs",
            "Task outputs held for other tasks to read",
            None,
        );
        let resident_memory = gauge(
            &mut registry,
            "quarry_executor_process_resident_memory",
            "Resident memory of the executor process",
            Some(Unit::Bytes),
        );
        ExecutorMetrics {
            registry,
            tasks,
            spilled,
            exchange_sent,
            exchange_received,
            running,
            memory,
            spill_files,
            exchange,
            exchange_outputs,
            resident_memory,
        }
    }

    /// What a finished task spilled and read from other tasks.
    pub(crate) fn task_io(&self, spilled_bytes: u64, fetched_bytes: u64) {
        self.spilled.inc_by(spilled_bytes);
        self.exchange_received.inc_by(fetched_bytes);
    }

    /// Bytes of task output sent to a reader.
    pub(crate) fn sent(&self, bytes: u64) {
        self.exchange_sent.inc_by(bytes);
    }

    pub(crate) fn task_ended(&self, outcome: &'static str) {
        self.tasks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The metrics as OpenMetrics text, gauges read from `status`.
    pub(crate) fn render(&self, status: &ExecutorStatus) -> Result<String, std::fmt::Error> {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.running.set(int(status.running_tasks.into()));
        self.memory.set(int(status.memory_used_bytes));
        self.spill_files.set(int(status.spill_files.into()));
        self.exchange.set(int(status.exchange_bytes));
        self.exchange_outputs
            .set(int(status.exchange_entries.into()));
        self.resident_memory.set(resident_bytes());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Resident bytes of this process, from /proc (zero where there is none).
fn resident_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A task's outcome, counted when it ends; a task dropped before it ends (its caller
/// went away) counts as cancelled.
pub(crate) struct TaskOutcome {
    metrics: Arc<ExecutorMetrics>,
    outcome: Option<&'static str>,
}

impl TaskOutcome {
    pub(crate) fn new(metrics: Arc<ExecutorMetrics>) -> Self {
        TaskOutcome {
            metrics,
            outcome: None,
        }
    }

    pub(crate) fn set(&mut self, succeeded: bool) {
        self.outcome = Some(if succeeded { "succeeded" } else { "failed" });
    }
}

impl Drop for TaskOutcome {
    fn drop(&mut self) {
        self.metrics.task_ended(self.outcome.unwrap_or("cancelled"));
    }
}
