//! The coordinator's Prometheus metrics, served at `/metrics` in the OpenMetrics text
//! format. Every name, its type, unit and labels is listed in `docs/metrics.md` (a test
//! checks the served names against that list). Labels are bounded: job states, the doors
//! statements come in by, executor ids and states; never a query, user or job id.
//!
//! Counters and histograms are updated where things happen (a job ending, a failed
//! login); gauges are read from the cluster and the admission queue when scraped. One
//! registry per process: a process is a node (in-process test clusters share it).

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::ExecutorInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    /// `COMPLETED`, `FAILED` or `CANCELED`.
    state: String,
    /// `flight_sql`, `rest`, `pgwire`, `in_process`, or `engine` for the engine's own jobs.
    frontend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutorLabel {
    executor: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// A counter per label value, each there from the start at zero, so that a rate over it
/// exists before the first event.
fn seeded<L>(labels: impl IntoIterator<Item = L>) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for label in labels {
        let _ = family.get_or_create(&label);
    }
    family
}

struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<StateLabel, Histogram>,
    queue_wait: Histogram,
    accelerated: Counter,
    planning: Histogram,
    refreshes: Family<OutcomeLabel, Counter>,
    refresh_duration: Histogram,
    reflections: Family<StateLabel, Gauge>,
    catalog_writes: Histogram,
    cpu: FloatCounter,
    tasks: Family<OutcomeLabel, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    logins_failed: Counter,
    jobs_running: Gauge,
    jobs_queued: Gauge,
    executors: Family<StateLabel, Gauge>,
    slots: Gauge,
    slots_busy: Gauge,
    heartbeat_age: Family<ExecutorLabel, FloatGauge>,
    executor_memory: Family<ExecutorLabel, Gauge>,
    executor_spill_files: Family<ExecutorLabel, Gauge>,
    executor_exchange: Family<ExecutorLabel, Gauge>,
    resident_memory: Gauge,
    open_fds: Gauge,
    results_cache: Family<OutcomeLabel, Counter>,
    results_cache_entries: Gauge,
    results_cache_bytes: Gauge,
}

/// Seconds, from 5 ms to about 45 minutes.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 20)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "quarry_jobs",
            "Jobs ended, by final state and the door they came in by",
            jobs.clone(),
        );
        let job_duration = Family::<StateLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register_with_unit(
            "quarry_job_duration",
            "Time from a job's start to its end, by final state",
            Unit::Seconds,
            job_duration.clone(),
        );
        let queue_wait = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "quarry_job_queue_wait",
            "Time jobs waited for admission (submitted to started)",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let accelerated = Counter::default();
        registry.register(
            "quarry_jobs_accelerated",
            "Jobs completed with data from reflections",
            accelerated.clone(),
        );
        let planning = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "quarry_planning",
            "Time statements took to plan, from their text to a plan ready to run",
            Unit::Seconds,
            planning.clone(),
        );
        let refreshes = seeded(["succeeded", "failed"].map(|outcome| OutcomeLabel { outcome }));
        registry.register(
            "quarry_reflection_refreshes",
            "Reflection refreshes ended, by outcome",
            refreshes.clone(),
        );
        let refresh_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register_with_unit(
            "quarry_reflection_refresh_duration",
            "Time successful reflection refreshes took",
            Unit::Seconds,
            refresh_duration.clone(),
        );
        let reflections = Family::<StateLabel, Gauge>::default();
        registry.register(
            "quarry_reflections",
            "Reflections by status, as sys.reflections shows it",
            reflections.clone(),
        );
        let catalog_writes = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "quarry_catalog_write",
            "Time durable catalog writes took, flush to disk included",
            Unit::Seconds,
            catalog_writes.clone(),
        );
        let cpu = FloatCounter::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time this process has used, user and system",
            Unit::Seconds,
            cpu.clone(),
        );
        let tasks = seeded(
            ["succeeded", "failed", "input_lost", "executor_lost"]
                .map(|outcome| OutcomeLabel { outcome }),
        );
        registry.register(
            "quarry_tasks",
            "Task attempts on executors, by outcome",
            tasks.clone(),
        );
        let refusals = seeded(["queue_full", "queue_timeout"].map(|reason| ReasonLabel { reason }));
        registry.register(
            "quarry_admission_refusals",
            "Statements refused admission: the queue was full, or the wait for a turn timed out",
            refusals.clone(),
        );
        let logins_failed = Counter::default();
        registry.register(
            "quarry_logins_failed",
            "Logins refused for a wrong user, password or token (any door)",
            logins_failed.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "quarry_jobs_running",
            "Jobs running now",
            jobs_running.clone(),
        );
        let jobs_queued = Gauge::default();
        registry.register(
            "quarry_jobs_queued",
            "Jobs waiting for admission now",
            jobs_queued.clone(),
        );
        let executors = Family::<StateLabel, Gauge>::default();
        registry.register(
            "quarry_executors",
            "Executors known to the coordinator, by state",
            executors.clone(),
        );
        let slots = Gauge::default();
        registry.register(
            "quarry_executor_slots",
            "Task slots of active executors",
            slots.clone(),
        );
        let slots_busy = Gauge::default();
        registry.register(
            "quarry_executor_slots_busy",
            "Tasks running on active executors",
            slots_busy.clone(),
        );
        let heartbeat_age = Family::<ExecutorLabel, FloatGauge>::default();
        registry.register_with_unit(
            "quarry_executor_heartbeat_age",
            "Time since each executor's last heartbeat",
            Unit::Seconds,
            heartbeat_age.clone(),
        );
        let results_cache = seeded(["hit", "miss"].map(|outcome| OutcomeLabel { outcome }));
        registry.register(
            "quarry_results_cache_lookups",
            "Cacheable queries looked up in the results cache, by outcome",
            results_cache.clone(),
        );
        let results_cache_entries = Gauge::default();
        registry.register(
            "quarry_results_cache_entries",
            "Results the results cache holds",
            results_cache_entries.clone(),
        );
        let results_cache_bytes = Gauge::default();
        registry.register_with_unit(
            "quarry_results_cache",
            "Memory the results cache holds",
            Unit::Bytes,
            results_cache_bytes.clone(),
        );
        let executor_memory = Family::<ExecutorLabel, Gauge>::default();
        registry.register_with_unit(
            "quarry_executor_memory_used",
            "Memory each executor's queries hold, as its last heartbeat said",
            Unit::Bytes,
            executor_memory.clone(),
        );
        let executor_spill_files = Family::<ExecutorLabel, Gauge>::default();
        registry.register(
            "quarry_executor_spill_files",
            "Spill files each executor holds, as its last heartbeat said",
            executor_spill_files.clone(),
        );
        let executor_exchange = Family::<ExecutorLabel, Gauge>::default();
        registry.register_with_unit(
            "quarry_executor_exchange",
            "Task output each executor holds for other tasks to read",
            Unit::Bytes,
            executor_exchange.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of this process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors of this process",
            open_fds.clone(),
        );
        Metrics {
            registry,
            jobs,
            job_duration,
            queue_wait,
            accelerated,
            planning,
            refreshes,
            refresh_duration,
            reflections,
            catalog_writes,
            cpu,
            tasks,
            refusals,
            logins_failed,
            jobs_running,
            jobs_queued,
            executors,
            slots,
            slots_busy,
            heartbeat_age,
            executor_memory,
            executor_spill_files,
            executor_exchange,
            resident_memory,
            open_fds,
            results_cache,
            results_cache_entries,
            results_cache_bytes,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A cacheable query was looked up in the results cache.
pub(crate) fn results_cache_lookup(hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    METRICS
        .results_cache
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

/// A results cache gained or lost entries and bytes (in-process clusters add up).
pub(crate) fn results_cache_changed(entries: i64, bytes: i64) {
    METRICS.results_cache_entries.inc_by(entries);
    METRICS.results_cache_bytes.inc_by(bytes);
}

/// A job reached its final `state`: count it and time it.
pub(crate) fn job_ended(
    state: &str,
    frontend: &str,
    submitted_ms: u64,
    started_ms: Option<u64>,
    finished_ms: u64,
    accelerated: bool,
) {
    let m = &*METRICS;
    if accelerated && state == "COMPLETED" {
        m.accelerated.inc();
    }
    let frontend = if frontend.is_empty() {
        "engine"
    } else {
        frontend
    };
    m.jobs
        .get_or_create(&JobLabels {
            state: state.to_string(),
            frontend: frontend.to_string(),
        })
        .inc();
    let started = started_ms.unwrap_or(finished_ms);
    m.job_duration
        .get_or_create(&StateLabel {
            state: state.to_string(),
        })
        .observe(finished_ms.saturating_sub(started) as f64 / 1000.0);
    if started_ms.is_some() {
        m.queue_wait
            .observe(started.saturating_sub(submitted_ms) as f64 / 1000.0);
    }
}

/// How a task attempt on an executor ended: `succeeded`, `failed` (the query fails),
/// `input_lost` (an input's executor was gone; it runs again once that is recomputed) or
/// `executor_lost` (its executor was lost; it runs again elsewhere).
pub(crate) fn task_ended(outcome: &'static str) {
    METRICS.tasks.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// A statement was planned (or failed to plan) in `took`.
pub(crate) fn planned(took: std::time::Duration) {
    METRICS.planning.observe(took.as_secs_f64());
}

/// A reflection refresh ended; `duration_ms` of a successful one.
pub(crate) fn refresh_ended(succeeded: bool, duration_ms: u64) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    METRICS
        .refreshes
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    if succeeded {
        METRICS
            .refresh_duration
            .observe(duration_ms as f64 / 1000.0);
    }
}

/// A durable catalog write took `took` (set as the catalog's observer at start).
pub(crate) fn catalog_written(took: std::time::Duration) {
    METRICS.catalog_writes.observe(took.as_secs_f64());
}

/// A statement was refused admission: `queue_full` or `queue_timeout`.
pub(crate) fn admission_refused(reason: &'static str) {
    METRICS
        .refusals
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// A login was refused.
pub(crate) fn login_failed() {
    METRICS.logins_failed.inc();
}

/// What the gauges are read from at a scrape.
pub(crate) struct Scrape {
    pub running: usize,
    pub queued: usize,
    pub executors: Vec<ExecutorInfo>,
    /// Each reflection's status (`CAN_ACCELERATE`, `REFRESHING`, `FAILED`, ...).
    pub reflections: Vec<&'static str>,
    pub now_ms: u64,
}

/// The metrics as OpenMetrics text, gauges read from `scrape`.
pub(crate) fn render(scrape: &Scrape) -> Result<String, std::fmt::Error> {
    let m = &*METRICS;
    m.jobs_running.set(scrape.running as i64);
    m.jobs_queued.set(scrape.queued as i64);
    // Executors come and go: only those known now are reported.
    m.executors.clear();
    m.heartbeat_age.clear();
    m.executor_memory.clear();
    m.executor_spill_files.clear();
    m.executor_exchange.clear();
    let (mut slots, mut busy) = (0i64, 0i64);
    for e in &scrape.executors {
        let state = StateLabel {
            state: e.state.as_str().to_string(),
        };
        m.executors.get_or_create(&state).inc();
        let label = ExecutorLabel {
            executor: e.executor_id.clone(),
        };
        m.heartbeat_age
            .get_or_create(&label)
            .set(scrape.now_ms.saturating_sub(e.last_heartbeat_ms) as f64 / 1000.0);
        m.executor_memory
            .get_or_create(&label)
            .set(i64::try_from(e.memory_used_bytes).unwrap_or(i64::MAX));
        m.executor_spill_files
            .get_or_create(&label)
            .set(i64::from(e.spill_files));
        m.executor_exchange
            .get_or_create(&label)
            .set(i64::try_from(e.exchange_bytes).unwrap_or(i64::MAX));
        if e.state == crate::cluster::ExecutorState::Active {
            slots += i64::from(e.slots);
            busy += i64::from(e.running_tasks);
        }
    }
    m.slots.set(slots);
    m.slots_busy.set(busy);
    // Every status is there, at zero when no reflection has it.
    for status in crate::reflections::STATUSES {
        let count = scrape.reflections.iter().filter(|s| **s == status).count();
        m.reflections
            .get_or_create(&StateLabel {
                state: status.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    let (rss, fds, cpu) = process_stats();
    m.resident_memory.set(rss);
    m.open_fds.set(fds);
    // A counter only goes up: add what was used since the last scrape.
    let before = m.cpu.get();
    if cpu > before {
        m.cpu.inc_by(cpu - before);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)?;
    Ok(text)
}

/// Resident bytes, open file descriptors and CPU seconds, from /proc (zero where there is
/// none).
fn process_stats() -> (i64, i64, f64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (rss, fds, cpu_seconds())
}

/// User and system CPU time of this process: fields 14 and 15 of /proc/self/stat, in
/// clock ticks. Linux reports them at USER_HZ, 100 per second on every architecture Quarry
/// runs on (asking sysconf would need libc for one constant).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}
