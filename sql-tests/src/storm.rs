//! The storm: many clients connect at the same moment, half over Flight SQL and half over
//! REST, each on its own connection, and run a mix — `SELECT 1`, a catalog call, an
//! insert into one shared table and (every `tpch_every`-th client) TPC-H queries. The only
//! errors a client may see are clear refusals (a full queue or a limit: Flight
//! RESOURCE_EXHAUSTED, HTTP 429/413); anything else, a hang, a wrong answer, a lost insert
//! or a dead process is a failure. Reports the error mix, latency percentiles per kind and
//! every process's peak resident memory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::doors::{Addresses, Door, Errors, Outcome, percentile_ms};
use crate::fuzz::cluster::{count, settled};
use crate::processes::ProcessCluster;
use crate::tpch;
use crate::vitals::{Vitals, mib};

/// The longest one call may take before it counts as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The table the storm's inserts go to.
pub const INSERT_TABLE: &str = "mart.storm";

#[derive(Debug, Clone, Copy)]
pub struct StormConfig {
    pub clients: usize,
    /// Rounds of the mix each client runs.
    pub rounds: usize,
    /// Every n-th client also runs a TPC-H query each round (1: all of them).
    pub tpch_every: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Connect,
    SelectOne,
    Catalog,
    Insert,
    Tpch,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Connect => "connect",
            Kind::SelectOne => "SELECT 1",
            Kind::Catalog => "catalog",
            Kind::Insert => "insert",
            Kind::Tpch => "TPC-H",
        })
    }
}

/// What all clients saw.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<Kind, Vec<Duration>>,
    errors: Errors,
    /// The first answer to each statement, by door; later answers must equal it.
    answers: BTreeMap<(bool, String), Vec<String>>,
    wrong: Vec<String>,
    inserted: u64,
}

impl Tally {
    fn record(&mut self, kind: Kind, flight: bool, sql: &str, took: Duration, outcome: Outcome) {
        let Some(rows) = self.errors.count(&kind, outcome) else {
            return;
        };
        self.latencies.entry(kind).or_default().push(took);
        if kind == Kind::Insert {
            self.inserted += 1;
        }
        if let (Some(rows), Kind::Tpch) = (rows, kind) {
            let expected = self
                .answers
                .entry((flight, sql.to_string()))
                .or_insert_with(|| rows.clone());
            if *expected != rows {
                self.wrong.push(crate::fuzz::excerpt(sql, 60));
            }
        }
    }
}

/// The storm's numbers.
pub struct StormReport {
    pub clients: usize,
    pub elapsed: Duration,
    /// Calls answered, by kind: count, p50 and p99 in milliseconds.
    pub answered: BTreeMap<String, (usize, f64, f64)>,
    pub errors: Errors,
    pub wrong: Vec<String>,
    /// Inserts acknowledged, and rows the table holds afterwards.
    pub inserts_acknowledged: u64,
    pub rows_inserted: Option<u64>,
    /// Each process before the storm and after it (`peak_rss` is the lifetime peak).
    pub before: Vec<(String, Vitals)>,
    pub after: Vec<(String, Option<Vitals>)>,
    /// A process that died.
    pub dead: Vec<String>,
    /// `SELECT 1` after the storm, and whether every job ended.
    pub afterwards: Result<(), String>,
}

impl StormReport {
    /// Everything a storm must hold to: only refusals, right answers, no lost insert, no
    /// dead process, a working server afterwards.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.errors.problems();
        problems.extend(
            self.wrong
                .iter()
                .map(|q| format!("a different answer to {q}")),
        );
        if self.rows_inserted != Some(self.inserts_acknowledged) {
            problems.push(format!(
                "{} inserts acknowledged, {:?} rows in {INSERT_TABLE}",
                self.inserts_acknowledged, self.rows_inserted
            ));
        }
        problems.extend(self.dead.iter().cloned());
        if let Err(why) = &self.afterwards {
            problems.push(format!("afterwards: {why}"));
        }
        problems
    }

    /// Every kind's latencies together: p99 in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.answered
            .values()
            .map(|(_, _, p99)| *p99)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for StormReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "storm: {} clients at once, {:.1} s",
            self.clients,
            self.elapsed.as_secs_f64()
        )?;
        for (kind, (n, p50, p99)) in &self.answered {
            writeln!(
                f,
                "  {kind:<9} {n:>5} answered   p50 {p50:>8.1} ms   p99 {p99:>8.1} ms"
            )?;
        }
        let refused: usize = self.errors.refused.values().sum();
        let failed: usize = self.errors.failed.values().sum();
        writeln!(f, "  refused (queue full / limit): {refused}")?;
        for (what, n) in &self.errors.refused {
            writeln!(f, "    {n:>5} x {what}")?;
        }
        writeln!(f, "  other errors: {failed}")?;
        for (what, n) in &self.errors.failed {
            writeln!(f, "    {n:>5} x {what}")?;
        }
        writeln!(
            f,
            "  inserts acknowledged {}, rows in {INSERT_TABLE} {:?}; wrong answers {}",
            self.inserts_acknowledged,
            self.rows_inserted,
            self.wrong.len()
        )?;
        for ((name, before), (_, after)) in self.before.iter().zip(&self.after) {
            match after {
                Some(after) => writeln!(
                    f,
                    "  {name:<12} RSS before {:>6.0} MiB, after {:>6.0} MiB, peak {:>6.0} MiB; files {} -> {}; threads {} -> {}",
                    mib(before.rss),
                    mib(after.rss),
                    mib(after.peak_rss),
                    before.files,
                    after.files,
                    before.threads,
                    after.threads
                )?,
                None => writeln!(f, "  {name:<12} is gone")?,
            }
        }
        match &self.afterwards {
            Ok(()) => writeln!(f, "  afterwards: SELECT 1 answers, no job left running"),
            Err(why) => writeln!(f, "  afterwards: {why}"),
        }
    }
}

/// One client: connect when all are ready, then `rounds` of the mix.
async fn client(
    index: usize,
    config: StormConfig,
    addresses: Addresses,
    barrier: Arc<Barrier>,
    tally: Arc<Mutex<Tally>>,
) {
    let flight = index.is_multiple_of(2);
    let record = |kind: Kind, sql: &str, took: Duration, outcome: Outcome| {
        if let Ok(mut tally) = tally.lock() {
            tally.record(kind, flight, sql, took, outcome);
        }
    };
    barrier.wait().await;
    let started = Instant::now();
    let connected = tokio::time::timeout(CALL_TIMEOUT, Door::connect(flight, &addresses)).await;
    let mut door = match connected {
        Ok(Ok(door)) => {
            record(
                Kind::Connect,
                "",
                started.elapsed(),
                Outcome::Answered(None),
            );
            door
        }
        Ok(Err(outcome)) => return record(Kind::Connect, "", started.elapsed(), outcome),
        Err(_) => {
            let hang = Outcome::Failed("no answer within the call timeout".to_string());
            return record(Kind::Connect, "", started.elapsed(), hang);
        }
    };
    for round in 0..config.rounds {
        let mut calls = vec![
            (Kind::SelectOne, "SELECT 1 AS one".to_string()),
            (Kind::Catalog, String::new()),
            (
                Kind::Insert,
                format!("INSERT INTO {INSERT_TABLE} VALUES ({index}, {round})"),
            ),
        ];
        if index.is_multiple_of(config.tpch_every.max(1)) {
            let n = (index / config.tpch_every.max(1) + round) % 22 + 1;
            calls.push((Kind::Tpch, tpch::query(n)));
        }
        for (kind, sql) in calls {
            let started = Instant::now();
            let call = async {
                match kind {
                    Kind::Catalog => door.catalog().await,
                    _ => door.query(&sql).await,
                }
            };
            let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed("no answer within the call timeout".to_string()),
            };
            record(kind, &sql, started.elapsed(), outcome);
        }
    }
}

/// Create the insert table and the TPC-H tables over `tpch_data`.
pub fn prepare(cluster: &ProcessCluster, tpch_data: &std::path::Path) -> Result<(), String> {
    let mut setup = tpch::create_tables_sql(tpch_data);
    setup.push("CREATE SCHEMA IF NOT EXISTS mart".to_string());
    setup.push(format!(
        "CREATE TABLE {INSERT_TABLE} AS SELECT CAST(0 AS BIGINT) AS client, CAST(0 AS BIGINT) AS round WHERE false"
    ));
    crate::fuzz::cluster::run_statements(&cluster.rest, &setup)
}

/// Run the storm against a prepared cluster (see [`prepare`]).
pub fn run(cluster: &mut ProcessCluster, config: StormConfig) -> StormReport {
    let before: Vec<(String, Vitals)> = cluster
        .pids()
        .into_iter()
        .map(|(name, pid)| (name, Vitals::of(pid).unwrap_or_default()))
        .collect();
    let addresses = Addresses {
        flight: cluster.flight_address().to_string(),
        rest: cluster.rest.base.clone(),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    runtime.block_on(async {
        let barrier = Arc::new(Barrier::new(config.clients));
        let clients: Vec<_> = (0..config.clients)
            .map(|i| {
                tokio::spawn(client(
                    i,
                    config,
                    addresses.clone(),
                    barrier.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
    });
    drop(runtime);
    let elapsed = started.elapsed();
    let dead = cluster.dead();
    let after = cluster
        .pids()
        .into_iter()
        .map(|(name, pid)| (name, Vitals::of(pid)))
        .collect();
    let rest = &cluster.rest;
    let rows_inserted = count(rest, &format!("SELECT count(*) AS n FROM {INSERT_TABLE}"));
    let afterwards = settled(rest, Duration::from_secs(60));
    let tally = Arc::try_unwrap(tally)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    let answered = tally
        .latencies
        .into_iter()
        .map(|(kind, mut times)| {
            times.sort();
            let row = (
                times.len(),
                percentile_ms(&times, 0.5),
                percentile_ms(&times, 0.99),
            );
            (kind.to_string(), row)
        })
        .collect();
    StormReport {
        clients: config.clients,
        elapsed,
        answered,
        errors: tally.errors,
        wrong: tally.wrong,
        inserts_acknowledged: tally.inserted,
        rows_inserted,
        before,
        after,
        dead,
        afterwards,
    }
}
