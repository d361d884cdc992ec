//! The load test: many Flight SQL clients at once, each running all 22 TPC-H queries (in
//! its own rotated order) with `SELECT 1` statements between them. Reports throughput and
//! latency percentiles for both kinds, and checks every answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quarry_sql_tests::tpch;
use serde_json::{Value, json};

use crate::Error;
use crate::cluster::FlightSql;

const SHORT_PER_QUERY: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[derive(Default)]
struct ClientRun {
    long: Vec<Duration>,
    short: Vec<Duration>,
    wrong: Vec<String>,
    errors: Vec<String>,
}

async fn client(
    port: u16,
    index: usize,
    setup: &[String],
    expected: &BTreeMap<usize, Vec<String>>,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut flight = match FlightSql::connect(port).await {
        Ok(f) => f,
        Err(e) => {
            run.errors.push(e.to_string());
            return run;
        }
    };
    for sql in setup {
        if let Err(e) = flight.query(sql).await {
            run.errors.push(e.to_string());
        }
    }
    for i in 0..22 {
        let n = (index + i) % 22 + 1;
        let sql = tpch::query(n);
        let started = Instant::now();
        match flight.query(&sql).await {
            Ok(batches) => {
                run.long.push(started.elapsed());
                let got = tpch::answer(&sql, &batches).unwrap_or_default();
                if expected.get(&n) != Some(&got) {
                    run.wrong.push(format!("Q{n}"));
                }
            }
            Err(e) => run.errors.push(format!("Q{n}: {e}")),
        }
        for _ in 0..SHORT_PER_QUERY {
            let started = Instant::now();
            match flight.query("SELECT 1").await {
                Ok(_) => run.short.push(started.elapsed()),
                Err(e) => run.errors.push(format!("SELECT 1: {e}")),
            }
        }
    }
    run
}

/// Run the load on the cluster behind `port`; the report as JSON.
pub async fn run(
    port: u16,
    clients: usize,
    setup: &[String],
    expected: &BTreeMap<usize, Vec<String>>,
) -> Result<Value, Error> {
    let started = Instant::now();
    let runs =
        futures::future::join_all((0..clients).map(|i| client(port, i, setup, expected))).await;
    let took = started.elapsed().as_secs_f64();
    let mut long: Vec<Duration> = runs.iter().flat_map(|r| r.long.iter().copied()).collect();
    let mut short: Vec<Duration> = runs.iter().flat_map(|r| r.short.iter().copied()).collect();
    long.sort();
    short.sort();
    let errors: Vec<&String> = runs.iter().flat_map(|r| r.errors.iter()).collect();
    let wrong: Vec<&String> = runs.iter().flat_map(|r| r.wrong.iter()).collect();
    let report = json!({
        "clients": clients,
        "seconds": took,
        "tpch_queries": long.len(),
        "tpch_per_second": long.len() as f64 / took,
        "tpch_p50_ms": percentile(&long, 0.5),
        "tpch_p99_ms": percentile(&long, 0.99),
        "select1": short.len(),
        "select1_p50_ms": percentile(&short, 0.5),
        "select1_p99_ms": percentile(&short, 0.99),
        "errors": errors.len(),
        "wrong_answers": wrong.len(),
    });
    eprintln!("  {report}");
    if !errors.is_empty() {
        eprintln!(
            "  first errors: {:?}",
            errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(report)
}
