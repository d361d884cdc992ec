//! Sixteen concurrent Flight SQL clients, each running a share of the 22 TPC-H queries
//! at SF0.1 between short `SELECT 1` statements, on two executors with two slots each.
//! Every answer must equal DataFusion's and nothing may fail; the short statements'
//! latency stays bounded while the long queries run. With a deliberately small queue
//! the only errors allowed are clear RESOURCE_EXHAUSTED refusals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::tpch;

use crate::flight::FlightSql;
use crate::shapes::data;

const CLIENTS: usize = 16;
/// TPC-H queries per client (in CI; the benchmark runs all 22 per client).
const QUERIES_PER_CLIENT: usize = 3;
const SHORT_PER_QUERY: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[derive(Default)]
struct ClientRun {
    long: Vec<Duration>,
    short: Vec<Duration>,
    wrong: Vec<String>,
    errors: Vec<tonic::Status>,
}

async fn client(
    address: String,
    index: usize,
    expected: Arc<Vec<Vec<String>>>,
    queries: usize,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut flight = match FlightSql::connect(&address).await {
        Ok(f) => f,
        Err(e) => {
            run.errors.push(tonic::Status::unavailable(e.to_string()));
            return run;
        }
    };
    for i in 0..queries {
        let n = (index * queries + i) % 22 + 1;
        let sql = tpch::query(n);
        let started = Instant::now();
        match flight.query(&sql).await {
            Ok(batches) => {
                run.long.push(started.elapsed());
                match tpch::answer(&sql, &batches) {
                    Ok(got) if got == expected[n - 1] => {}
                    Ok(got) => {
                        run.wrong
                            .push(format!("Q{n}: {} rows, {:?}", got.len(), got.first()))
                    }
                    Err(e) => run.wrong.push(format!("Q{n}: {e}")),
                }
            }
            Err(status) => run.errors.push(status),
        }
        for _ in 0..SHORT_PER_QUERY {
            let started = Instant::now();
            match flight.query("SELECT 1").await {
                Ok(_) => run.short.push(started.elapsed()),
                Err(status) => run.errors.push(status),
            }
        }
    }
    run
}

fn run_clients(
    cluster: &ProcessCluster,
    expected: &Arc<Vec<Vec<String>>>,
) -> (Vec<ClientRun>, Duration) {
    let started = Instant::now();
    let runs = cluster.rest.runtime.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(client(
                    cluster.flight.clone(),
                    i,
                    Arc::clone(expected),
                    QUERIES_PER_CLIENT,
                ))
            })
            .collect();
        let mut runs = Vec::new();
        for task in tasks {
            runs.push(task.await.unwrap_or_default());
        }
        runs
    });
    (runs, started.elapsed())
}

/// Two executors with two slots each and the TPC-H tables; DataFusion's answers.
fn tpch_cluster(coordinator_args: &[&str]) -> (ProcessCluster, Arc<Vec<Vec<String>>>) {
    let data = data();
    let cluster = ProcessCluster::start(2, 2, coordinator_args);
    let expected = cluster
        .rest
        .runtime
        .block_on(tpch::datafusion_answers(&data, 4))
        .expect("DataFusion's answers");
    cluster.create_tpch_tables(&data);
    (cluster, Arc::new(expected))
}

#[test]
fn sixteen_clients_mixing_tpch_and_short_statements() {
    let (cluster, expected) = tpch_cluster(&[]);
    let (runs, took) = run_clients(&cluster, &expected);
    let errors: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(|s| format!("{:?}: {}", s.code(), s.message()))
        })
        .collect();
    let wrong: Vec<&String> = runs.iter().flat_map(|r| r.wrong.iter()).collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    let mut long: Vec<Duration> = runs.iter().flat_map(|r| r.long.iter().copied()).collect();
    let mut short: Vec<Duration> = runs.iter().flat_map(|r| r.short.iter().copied()).collect();
    long.sort();
    short.sort();
    assert_eq!(long.len(), CLIENTS * QUERIES_PER_CLIENT);
    eprintln!(
        "{CLIENTS} clients, {} TPC-H queries and {} SELECT 1 in {:.1}s ({:.2} queries/s): TPC-H p50 {:?} p99 {:?}; SELECT 1 p50 {:?} p99 {:?}",
        long.len(),
        short.len(),
        took.as_secs_f64(),
        long.len() as f64 / took.as_secs_f64(),
        percentile(&long, 0.5),
        percentile(&long, 0.99),
        percentile(&short, 0.5),
        percentile(&short, 0.99),
    );
    assert!(
        percentile(&short, 0.99) < Duration::from_secs(3),
        "SELECT 1 p99 {:?} while TPC-H ran",
        percentile(&short, 0.99)
    );
    cluster.rest.wait_until_idle(Duration::from_secs(10));
}

#[test]
fn a_small_queue_refuses_clearly_and_answers_the_rest_right() {
    let (cluster, expected) =
        tpch_cluster(&["--max-running-queries", "2", "--max-queued-queries", "2"]);
    let (runs, _) = run_clients(&cluster, &expected);
    let wrong: Vec<&String> = runs.iter().flat_map(|r| r.wrong.iter()).collect();
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    let errors: Vec<&tonic::Status> = runs.iter().flat_map(|r| r.errors.iter()).collect();
    let unclear: Vec<String> = errors
        .iter()
        .filter(|s| s.code() != tonic::Code::ResourceExhausted || !s.message().contains("queue"))
        .map(|s| format!("{:?}: {}", s.code(), s.message()))
        .collect();
    assert!(
        unclear.is_empty(),
        "errors other than a full queue: {unclear:?}"
    );
    let answered: usize = runs.iter().map(|r| r.long.len()).sum();
    eprintln!(
        "small queue: {answered} TPC-H queries answered, {} refused as the queue was full",
        errors.len()
    );
    assert!(
        !errors.is_empty(),
        "sixteen clients never filled a queue of two"
    );
    assert!(answered > 0, "no query got through");
    cluster.rest.wait_until_idle(Duration::from_secs(10));
}
