//! The soak: a mixed load for a given time while every process's resident memory, open
//! files and threads are sampled at an interval. The load: Flight SQL and REST clients
//! running TPC-H queries and `SELECT 1`, a writer appending to a table and compacting it
//! (`OPTIMIZE`) and removing old files (`VACUUM ... RETAIN 0 HOURS`), a reflection on that
//! table refreshed over REST and queried, and clients that go away in the middle of an
//! answer. It fails on a dead process, an error other than a clear refusal, a lost insert,
//! a job left running, or growth: a process whose lowest reading in the last third of the
//! run is well above its highest in the first third (after the first sample, which is
//! warm-up).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::doors::{Addresses, Door, Errors, Outcome};
use crate::fuzz::cluster::{count, settled};
use crate::processes::ProcessCluster;
use crate::tpch;
use crate::vitals::{Vitals, mib};

/// The table the writer appends to.
pub const TABLE: &str = "mart.soak";
/// The reflection on it.
pub const REFLECTION: &str = "soak_by_k";
/// Rows each insert appends.
const ROWS_PER_INSERT: u64 = 1_000;
/// TPC-H queries the query clients rotate through.
const QUERIES: [usize; 8] = [1, 3, 5, 6, 10, 12, 14, 19];

/// Growth allowed between the first and the last third of the run.
const RSS_FACTOR: f64 = 1.5;
const RSS_SLACK: u64 = 96 * 1024 * 1024;
const FILES_SLACK: usize = 32;
/// Threads come and go with load (the blocking pools of the runtimes keep idle threads
/// for seconds); a leak grows past this.
const THREADS_SLACK: usize = 64;
/// How long jobs left behind by departed clients may take to end.
const DRAIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    pub duration: Duration,
    pub sample_every: Duration,
}

/// One reading of every process.
pub struct Sample {
    pub at: Duration,
    pub processes: Vec<(String, Option<Vitals>)>,
}

/// `minute  name RSS/files/threads ...`, as the soak's table prints it.
impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>6.1} ", self.at.as_secs_f64() / 60.0)?;
        for (name, v) in &self.processes {
            match v {
                Some(v) => write!(f, " {name} {:.0}/{}/{}", mib(v.rss), v.files, v.threads)?,
                None => write!(f, " {name} gone")?,
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    calls: BTreeMap<String, usize>,
    errors: Errors,
    rows_acknowledged: u64,
}

impl Tally {
    fn record(&mut self, kind: &str, outcome: Outcome) {
        if self.errors.count(&kind, outcome).is_some() {
            *self.calls.entry(kind.to_string()).or_default() += 1;
        }
    }
}

pub struct SoakReport {
    pub elapsed: Duration,
    pub samples: Vec<Sample>,
    pub calls: BTreeMap<String, usize>,
    pub errors: Errors,
    pub rows_acknowledged: u64,
    pub rows_in_table: Option<u64>,
    pub dead: Vec<String>,
    pub afterwards: Result<(), String>,
}

/// A process's readings over the run: start (first sample), peak and end.
pub struct Curve {
    pub name: String,
    pub rss: (u64, u64, u64),
    pub files: (usize, usize, usize),
    pub threads: (usize, usize, usize),
}

impl SoakReport {
    fn readings(&self, name: &str) -> Vec<Vitals> {
        self.samples
            .iter()
            .filter_map(|s| s.processes.iter().find(|(n, _)| n == name))
            .filter_map(|(_, v)| *v)
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.samples
            .first()
            .map(|s| s.processes.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    pub fn curves(&self) -> Vec<Curve> {
        self.names()
            .into_iter()
            .map(|name| {
                let r = self.readings(&name);
                let first = r.first().copied().unwrap_or_default();
                let last = r.last().copied().unwrap_or_default();
                Curve {
                    rss: (
                        first.rss,
                        r.iter().map(|v| v.rss).max().unwrap_or(0),
                        last.rss,
                    ),
                    files: (
                        first.files,
                        r.iter().map(|v| v.files).max().unwrap_or(0),
                        last.files,
                    ),
                    threads: (
                        first.threads,
                        r.iter().map(|v| v.threads).max().unwrap_or(0),
                        last.threads,
                    ),
                    name,
                }
            })
            .collect()
    }

    /// Processes that grew: the least of the last third against the most of the first.
    fn growth(&self) -> Vec<String> {
        let mut grew = Vec::new();
        for name in self.names() {
            let readings = self.readings(&name);
            let n = readings.len();
            if n < 4 {
                continue;
            }
            let third = (n / 3).max(1);
            let early = &readings[1..=third];
            let late = &readings[n - third..];
            let early_max = |f: fn(&Vitals) -> u64| early.iter().map(f).max().unwrap_or(0);
            let late_min = |f: fn(&Vitals) -> u64| late.iter().map(f).min().unwrap_or(0);
            let rss = (early_max(|v| v.rss), late_min(|v| v.rss));
            if rss.1 as f64 > rss.0 as f64 * RSS_FACTOR + RSS_SLACK as f64 {
                grew.push(format!(
                    "{name}: resident memory grew from {:.0} MiB to {:.0} MiB",
                    mib(rss.0),
                    mib(rss.1)
                ));
            }
            let files = (early_max(|v| v.files as u64), late_min(|v| v.files as u64));
            if files.1 > files.0 + FILES_SLACK as u64 {
                grew.push(format!(
                    "{name}: open files grew from {} to {}",
                    files.0, files.1
                ));
            }
            let threads = (
                early_max(|v| v.threads as u64),
                late_min(|v| v.threads as u64),
            );
            if threads.1 > threads.0 + THREADS_SLACK as u64 {
                grew.push(format!(
                    "{name}: threads grew from {} to {}",
                    threads.0, threads.1
                ));
            }
        }
        grew
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.errors.problems();
        if self.rows_in_table != Some(self.rows_acknowledged) {
            problems.push(format!(
                "{} rows acknowledged, {:?} in {TABLE}",
                self.rows_acknowledged, self.rows_in_table
            ));
        }
        problems.extend(self.dead.iter().cloned());
        problems.extend(self.growth());
        if let Err(why) = &self.afterwards {
            problems.push(format!("afterwards: {why}"));
        }
        problems
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {:.0} s, {} samples",
            self.elapsed.as_secs_f64(),
            self.samples.len()
        )?;
        for (kind, n) in &self.calls {
            writeln!(f, "  {kind:<22} {n:>6} answered")?;
        }
        for (what, n) in &self.errors.refused {
            writeln!(f, "  refused {n:>5} x {what}")?;
        }
        for (what, n) in &self.errors.failed {
            writeln!(f, "  FAILED  {n:>5} x {what}")?;
        }
        writeln!(
            f,
            "  rows acknowledged {}, in {TABLE} {:?}",
            self.rows_acknowledged, self.rows_in_table
        )?;
        writeln!(f, "  per process: start / peak / end")?;
        for c in self.curves() {
            writeln!(
                f,
                "  {:<12} RSS {:.0} / {:.0} / {:.0} MiB   files {} / {} / {}   threads {} / {} / {}",
                c.name,
                mib(c.rss.0),
                mib(c.rss.1),
                mib(c.rss.2),
                c.files.0,
                c.files.1,
                c.files.2,
                c.threads.0,
                c.threads.1,
                c.threads.2
            )?;
        }
        writeln!(
            f,
            "  samples (minute: RSS MiB / files / threads per process):"
        )?;
        for s in &self.samples {
            writeln!(f, "    {s}")?;
        }
        match &self.afterwards {
            Ok(()) => writeln!(f, "  afterwards: SELECT 1 answers, no job left running"),
            Err(why) => writeln!(f, "  afterwards: {why}"),
        }
    }
}

/// Create the TPC-H tables over `tpch_data`, the writer's table and its reflection.
pub fn prepare(cluster: &ProcessCluster, tpch_data: &std::path::Path) -> Result<(), String> {
    let mut setup = tpch::create_tables_sql(tpch_data);
    setup.push("CREATE SCHEMA IF NOT EXISTS mart".to_string());
    setup.push(format!(
        "CREATE TABLE {TABLE} AS SELECT value % 10 AS k, value AS v FROM range(0)"
    ));
    setup.push(format!(
        "ALTER TABLE {TABLE} CREATE AGGREGATE REFLECTION {REFLECTION} USING DIMENSIONS (k) MEASURES (v (SUM, COUNT))"
    ));
    crate::fuzz::cluster::run_statements(&cluster.rest, &setup)
}

type Shared = Arc<Mutex<Tally>>;

fn record(tally: &Shared, kind: &str, outcome: Outcome) {
    if let Ok(mut t) = tally.lock() {
        t.record(kind, outcome);
    }
}

async fn connect(flight: bool, addresses: &Addresses, tally: &Shared) -> Option<Door> {
    match Door::connect(flight, addresses).await {
        Ok(door) => Some(door),
        Err(outcome) => {
            record(tally, "connect", outcome);
            None
        }
    }
}

/// TPC-H queries and `SELECT 1`, over one door, until `stop`.
async fn querier(flight: bool, addresses: Addresses, tally: Shared, stop: Arc<AtomicBool>) {
    let door_name = if flight { "Flight SQL" } else { "REST" };
    let Some(mut door) = connect(flight, &addresses, &tally).await else {
        return;
    };
    let mut i = usize::from(!flight) * 3;
    while !stop.load(Ordering::Relaxed) {
        let sql = tpch::query(QUERIES[i % QUERIES.len()]);
        record(
            &tally,
            &format!("{door_name} TPC-H"),
            door.query(&sql).await,
        );
        record(
            &tally,
            &format!("{door_name} SELECT 1"),
            door.query("SELECT 1 AS one").await,
        );
        i += 1;
    }
}

/// Appends, and every few appends OPTIMIZE and VACUUM, until `stop`.
async fn writer(addresses: Addresses, tally: Shared, stop: Arc<AtomicBool>) {
    let Some(mut door) = connect(true, &addresses, &tally).await else {
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let insert = format!(
            "INSERT INTO {TABLE} SELECT value % 10 AS k, value + {} AS v FROM range({ROWS_PER_INSERT})",
            n * ROWS_PER_INSERT
        );
        let outcome = door.query(&insert).await;
        if matches!(outcome, Outcome::Answered(_))
            && let Ok(mut t) = tally.lock()
        {
            t.rows_acknowledged += ROWS_PER_INSERT;
        }
        record(&tally, "insert", outcome);
        n += 1;
        if n.is_multiple_of(5) {
            let optimize = door.query(&format!("OPTIMIZE TABLE {TABLE}")).await;
            record(&tally, "OPTIMIZE", optimize);
        }
        if n.is_multiple_of(10) {
            let vacuum = door.query(&format!("VACUUM {TABLE} RETAIN 0 HOURS")).await;
            record(&tally, "VACUUM", vacuum);
        }
    }
}

/// Refreshes the reflection over REST and queries what it answers, until `stop`.
async fn refresher(addresses: Addresses, tally: Shared, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let Some(mut door) = connect(false, &addresses, &tally).await else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let reply = client
            .post(format!(
                "{}/api/v1/reflections/{REFLECTION}/refresh",
                addresses.rest
            ))
            .send()
            .await;
        let outcome = match reply {
            Ok(r) if r.status().is_success() => Outcome::Answered(None),
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(serde_json::Value::Null);
                crate::doors::rest_outcome(status, &body)
            }
            Err(e) => Outcome::Failed(crate::doors::category("http", &e.to_string())),
        };
        record(&tally, "reflection refresh", outcome);
        let sql =
            format!("SELECT k, sum(v) AS s, count(*) AS n FROM {TABLE} GROUP BY k ORDER BY k");
        record(&tally, "reflection query", door.query(&sql).await);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Clients that go away in the middle of an answer, each on a new connection.
async fn leaver(addresses: Addresses, tally: Shared, stop: Arc<AtomicBool>) {
    let mut flight = false;
    while !stop.load(Ordering::Relaxed) {
        flight = !flight;
        let Some(mut door) = connect(flight, &addresses, &tally).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let kind = if flight {
            "Flight SQL left mid-answer"
        } else {
            "REST left mid-answer"
        };
        record(&tally, kind, door.abandon("SELECT * FROM orders").await);
        drop(door);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn readings(cluster: &ProcessCluster) -> Vec<(String, Option<Vitals>)> {
    cluster
        .pids()
        .into_iter()
        .map(|(name, pid)| (name, Vitals::of(pid)))
        .collect()
}

/// Run the soak against a prepared cluster (see [`prepare`]); `progress` hears each sample.
pub fn run(
    cluster: &mut ProcessCluster,
    config: SoakConfig,
    mut progress: impl FnMut(&Sample),
) -> SoakReport {
    let addresses = Addresses {
        flight: cluster.flight_address().to_string(),
        rest: cluster.rest.base.clone(),
    };
    let tally: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    let tasks = vec![
        runtime.spawn(querier(
            true,
            addresses.clone(),
            tally.clone(),
            stop.clone(),
        )),
        runtime.spawn(querier(
            false,
            addresses.clone(),
            tally.clone(),
            stop.clone(),
        )),
        runtime.spawn(writer(addresses.clone(), tally.clone(), stop.clone())),
        runtime.spawn(refresher(addresses.clone(), tally.clone(), stop.clone())),
        runtime.spawn(leaver(addresses.clone(), tally.clone(), stop.clone())),
    ];
    let started = Instant::now();
    let mut samples = Vec::new();
    let dead = loop {
        let sample = Sample {
            at: started.elapsed(),
            processes: readings(cluster),
        };
        progress(&sample);
        samples.push(sample);
        let dead = cluster.dead();
        if !dead.is_empty() || started.elapsed() >= config.duration {
            break dead;
        }
        let next = (config.sample_every * samples.len() as u32).min(config.duration);
        std::thread::sleep(next.saturating_sub(started.elapsed()));
    };
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    drop(runtime);
    let elapsed = started.elapsed();
    // The filter on a measure keeps the reflection (refreshed every few seconds, so behind
    // the last inserts) from answering: this counts the table itself.
    let counted = format!("SELECT count(*) AS n FROM {TABLE} WHERE v >= 0");
    let rows_in_table = count(&cluster.rest, &counted);
    let afterwards = settled(&cluster.rest, DRAIN);
    let tally = Arc::try_unwrap(tally)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    SoakReport {
        elapsed,
        samples,
        calls: tally.calls,
        errors: tally.errors,
        rows_acknowledged: tally.rows_acknowledged,
        rows_in_table,
        dead,
        afterwards,
    }
}
