//! TPC-H on (a) a Quarry cluster of separate processes — a coordinator and executors at
//! their default slots (one per core) — queried over Flight SQL, (b) the same cluster
//! with one slot per executor, (c) in-process DataFusion over the same files with as many
//! partitions as cluster (a) has task slots (what distribution costs is the difference),
//! and (d) DuckDB (the best single-node peer), all in one run. Answers are checked
//! against each other; per-query medians and ratios are printed and saved. With `--load`,
//! sixteen concurrent clients then each run all 22 queries with `SELECT 1` between them
//! on cluster (a): throughput and latency percentiles are reported.
//!
//! ```text
//! cargo build --release --bins
//! target/release/quarry-bench --sf 1 --sf 10 --load
//! target/release/quarry-bench --reflections --orders 50000000
//! target/release/quarry-bench --fuzz all --minutes 60 --seed 7
//! target/release/quarry-bench --storm --clients 200 --rounds 3
//! target/release/quarry-bench --soak --minutes 60
//! target/release/quarry-bench --adaptive
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arrow::array::RecordBatch;
use clap::Parser;
use datafusion::prelude::SessionContext;
use quarry_sql_tests::tpch;

use cluster::{Cluster, FlightSql};
use serde_json::json;
use small::Suite;

mod adaptive;
mod cluster;
mod load;
mod reflections;
mod robustness;
mod small;
mod write;

#[derive(Parser)]
#[command(about = "TPC-H: a Quarry cluster vs in-process DataFusion vs DuckDB")]
struct Args {
    /// Scale factors to run, in order.
    #[arg(long = "sf", default_values_t = [1.0])]
    scale_factors: Vec<f64>,
    /// Runs of each query; the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Where generated data is kept between runs.
    #[arg(long, default_value = "bench/data")]
    data: PathBuf,
    /// Files per table.
    #[arg(long, default_value_t = 4)]
    parts: usize,
    /// Executors of the Quarry cluster (each its own process).
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Task slots per executor (default: the executors' own default, one per core).
    #[arg(long)]
    slots: Option<usize>,
    /// Also run the concurrent-clients load test on the cluster.
    #[arg(long)]
    load: bool,
    /// Clients of the load test.
    #[arg(long, default_value_t = 16)]
    load_clients: usize,
    /// Only these queries (1-22), comma-separated.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<usize>,
    /// Leave DuckDB out.
    #[arg(long)]
    no_duckdb: bool,
    /// Run the write benchmark (CTAS of lineitem) instead of the queries.
    #[arg(long)]
    write: bool,
    /// Run the reflections benchmark (a dashboard over the tutorial's orders) instead.
    #[arg(long)]
    reflections: bool,
    /// Orders of the reflections benchmark.
    #[arg(long, default_value_t = 50_000_000)]
    orders: u64,
    /// Where results are written.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Fuzz a door instead: sql, rest, flight, files, internal, or all.
    #[arg(long)]
    fuzz: Option<String>,
    /// Minutes of each fuzz target, or of the soak.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// The fuzz input stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the storm instead: many clients connecting at once.
    #[arg(long)]
    storm: bool,
    /// Clients of the storm.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Rounds of the mix each storm client runs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run the soak instead: a mixed load for `--minutes`, sampling every process.
    #[arg(long)]
    soak: bool,
    /// Run the small-query suite instead (p50 per query vs in-process DataFusion).
    #[arg(long)]
    small: bool,
    /// Run the run-time decisions benchmark instead (dynamic filters, adaptive joins).
    #[arg(long)]
    adaptive: bool,
}

type Error = Box<dyn std::error::Error>;

/// Save a benchmark's report as `results/<name>` and say where it went.
fn write_report(results: &Path, name: &str, report: &serde_json::Value) -> Result<(), Error> {
    let path = results.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One engine's medians and answers.
#[derive(Default)]
struct Results {
    ms: BTreeMap<usize, f64>,
    answers: BTreeMap<usize, Vec<String>>,
}

/// The engines compared in the same run: each query's iterations alternate between them,
/// so drift in the machine's load hits all of them alike.
struct Engines {
    /// Quarry three ways, by name: the default cluster; the same executors with one slot
    /// each (a cluster of its own); the default cluster with every plan spread over the
    /// executors as stages (none whole on one executor).
    quarry: [(&'static str, FlightSql); 3],
    datafusion: SessionContext,
}

impl Engines {
    async fn new(
        port: u16,
        one_slot_port: u16,
        setup: &[String],
        dir: &Path,
        partitions: usize,
    ) -> Result<Self, Error> {
        let mut quarry = [
            ("Quarry", FlightSql::connect(port).await?),
            ("Quarry (1 slot)", FlightSql::connect(one_slot_port).await?),
            ("Quarry (as stages)", FlightSql::connect(port).await?),
        ];
        for (_, client) in &mut quarry {
            for sql in setup {
                client.query(sql).await?;
            }
        }
        quarry[2]
            .1
            .query("SET quarry.one_executor_max_bytes = 0")
            .await?;
        let datafusion = tpch::datafusion_context(dir, partitions).await?;
        Ok(Engines { quarry, datafusion })
    }

    /// Run every query on Quarry (default slots, one slot, every plan as stages) and
    /// DataFusion.
    async fn run(&mut self, queries: &[usize], iterations: usize) -> Result<[Results; 4], Error> {
        let mut results: [Results; 4] = Default::default();
        for &n in queries {
            let sql = tpch::query(n);
            let mut times: [Vec<f64>; 4] = Default::default();
            let mut last: [Vec<RecordBatch>; 4] = Default::default();
            for _ in 0..iterations {
                for (engine, (times, last)) in times.iter_mut().zip(last.iter_mut()).enumerate() {
                    let started = Instant::now();
                    *last = match self.quarry.get_mut(engine) {
                        Some((name, client)) => client
                            .query(&sql)
                            .await
                            .map_err(|e| format!("{name} Q{n}: {e}"))?,
                        None => self.datafusion.sql(&sql).await?.collect().await?,
                    };
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            for (engine, result) in results.iter_mut().enumerate() {
                result.ms.insert(n, median(&times[engine]));
                result.answers.insert(n, tpch::answer(&sql, &last[engine])?);
            }
            eprintln!(
                "  Q{n:<2} quarry {:>8.1} ms   quarry 1 slot {:>8.1} ms   quarry as stages {:>8.1} ms   datafusion {:>8.1} ms",
                results[0].ms[&n], results[1].ms[&n], results[2].ms[&n], results[3].ms[&n]
            );
        }
        Ok(results)
    }
}

/// A Python with DuckDB: `.venv-bench`, made on first use.
fn duckdb_python() -> Result<PathBuf, Error> {
    let venv = PathBuf::from(".venv-bench");
    if !venv.join("bin/python").exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", ".venv-bench"])
            .status()?
            .success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "duckdb"])
                .status()?
                .success();
        if !ok {
            return Err("cannot install DuckDB into .venv-bench".into());
        }
    }
    Ok(venv.join("bin/python"))
}

fn run_duckdb(
    dir: &Path,
    threads: usize,
    queries: &[usize],
    iterations: usize,
) -> Result<Results, Error> {
    let output = Command::new(duckdb_python()?)
        .arg("bench/duckdb_tpch.py")
        .arg(dir)
        .arg("bench/tpch/queries")
        .arg(iterations.to_string())
        .arg(threads.to_string())
        .arg(
            queries
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output()?;
    if !output.status.success() {
        return Err(format!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut results = Results::default();
    for &n in queries {
        let q = &parsed[format!("q{n}")];
        let times: Vec<f64> = q["ms"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let sql = tpch::query(n);
        let mut rows: Vec<String> = q["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| c.as_str().unwrap_or("NULL").to_string())
                                    .collect::<Vec<_>>()
                                    .join(" | ")
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !tpch::is_ordered(&sql) {
            rows.sort();
        }
        results.ms.insert(n, median(&times));
        results.answers.insert(n, rows);
        eprintln!("  Q{n:<2} duckdb {:>8.1} ms", median(&times));
    }
    Ok(results)
}

/// A table cell: "-" where an engine did not run.
fn cell(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_string()
    }
}

/// Same answers, with numbers equal to a relative 1e-6 (engines print them differently).
fn same_answers(a: &[String], b: &[String]) -> bool {
    fn cell_eq(x: &str, y: &str) -> bool {
        if x == y {
            return true;
        }
        match (x.trim().parse::<f64>(), y.trim().parse::<f64>()) {
            (Ok(p), Ok(q)) => (p - q).abs() <= 1e-6 * p.abs().max(q.abs()).max(1.0),
            _ => x.trim() == y.trim(),
        }
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (xs, ys): (Vec<&str>, Vec<&str>) =
                (x.split(" | ").collect(), y.split(" | ").collect());
            xs.len() == ys.len() && xs.iter().zip(&ys).all(|(p, q)| cell_eq(p, q))
        })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let queries: Vec<usize> = if args.queries.is_empty() {
        (1..=22).collect()
    } else {
        args.queries.clone()
    };
    std::fs::create_dir_all(&args.results)?;
    if args.reflections {
        return reflections::run(args.orders, &args.results).await;
    }
    if args.adaptive || args.small {
        // `--iterations` left at its TPC-H default: these suites' own defaults.
        let iterations = match (args.iterations, args.adaptive) {
            (3, true) => 10,
            (3, false) => 30,
            (n, _) => n,
        };
        let suite = Suite {
            data: &args.data,
            executors: args.executors,
            slots: args.slots,
            iterations,
            results: &args.results,
        };
        return if args.adaptive {
            adaptive::run(suite).await
        } else {
            small::run(suite).await
        };
    }
    // The robustness runs drive their clusters from threads of their own.
    if let Some(which) = &args.fuzz {
        let (which, results) = (which.clone(), args.results.clone());
        let (minutes, seed) = (args.minutes, args.seed);
        return tokio::task::spawn_blocking(move || {
            robustness::fuzz(&which, minutes, seed, &results).map_err(|e| e.to_string())
        })
        .await?
        .map_err(Into::into);
    }
    if args.storm || args.soak {
        let (data, results) = (args.data.clone(), args.results.clone());
        let (storm, clients, rounds, minutes) =
            (args.storm, args.clients, args.rounds, args.minutes);
        return tokio::task::spawn_blocking(move || {
            if storm {
                robustness::storm(clients, rounds, &data)
            } else {
                robustness::soak(minutes, &data, &results)
            }
            .map_err(|e| e.to_string())
        })
        .await?
        .map_err(Into::into);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_executor = args.slots.unwrap_or(cores);
    let slots = args.executors * per_executor;
    for &sf in &args.scale_factors {
        eprintln!(
            "TPC-H SF{sf}: generating data (once) into {}",
            args.data.display()
        );
        let started = Instant::now();
        let dir = tpch::cached(&args.data, sf, args.parts)?;
        eprintln!("  data ready in {:.1}s", started.elapsed().as_secs_f64());
        let mut setup = tpch::create_tables_sql(&dir.canonicalize()?);
        // Every run computes its answer: none comes from an earlier run's rows.
        setup.push("SET quarry.results_cache.enabled = false".to_string());
        if args.write {
            write::run(sf, &dir, &setup, slots, args.no_duckdb, &args.results).await?;
            continue;
        }

        eprintln!(
            "Quarry (coordinator + {} executors x {per_executor} slot(s), and the same with 1 slot each; separate processes) and DataFusion in-process ({slots} partitions)",
            args.executors
        );
        // Both clusters stay up; queries alternate between them, so only one works at a time.
        let cluster = Cluster::start(args.executors, args.slots)?;
        let one_slot = Cluster::start(args.executors, Some(1))?;
        let mut engines =
            Engines::new(cluster.flight, one_slot.flight, &setup, &dir, slots).await?;
        let [quarry, quarry_one, quarry_stages, datafusion] =
            engines.run(&queries, args.iterations).await?;
        drop(engines);
        drop(one_slot);
        let load = if args.load {
            eprintln!(
                "Load: {} concurrent clients, each all 22 queries with SELECT 1 between",
                args.load_clients
            );
            Some(
                load::run(
                    cluster.flight,
                    args.load_clients,
                    &setup,
                    &datafusion.answers,
                )
                .await?,
            )
        } else {
            None
        };
        drop(cluster);
        let duckdb = if args.no_duckdb {
            None
        } else {
            eprintln!("DuckDB, {slots} threads");
            Some(run_duckdb(&dir, slots, &queries, args.iterations)?)
        };

        println!(
            "\nTPC-H SF{sf}, median of {} runs (ms); Quarry: {} executors x {per_executor} slot(s) vs x 1 slot",
            args.iterations, args.executors
        );
        println!(
            "| query | Quarry | DataFusion | DuckDB | Quarry/DataFusion | Quarry/DuckDB | Quarry 1 slot | 1→{per_executor} slots speedup | Quarry as stages | answers |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let mut rows = Vec::new();
        let (mut tq, mut td, mut tk, mut t1, mut ts) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &n in &queries {
            let q = quarry.ms[&n];
            let d = datafusion.ms[&n];
            let k = duckdb.as_ref().map(|r| r.ms[&n]).unwrap_or(f64::NAN);
            let one = quarry_one.ms[&n];
            let staged = quarry_stages.ms[&n];
            tq += q;
            td += d;
            tk += k;
            t1 += one;
            ts += staged;
            let df_ok = quarry.answers[&n] == datafusion.answers[&n];
            let one_ok = quarry_one.answers[&n] == quarry.answers[&n]
                && quarry_stages.answers[&n] == quarry.answers[&n];
            let duck_ok = duckdb
                .as_ref()
                .map(|r| same_answers(&quarry.answers[&n], &r.answers[&n]))
                .unwrap_or(true);
            let check = match (df_ok && one_ok, duck_ok) {
                (true, true) => "agree".to_string(),
                (true, false) => "differ from DuckDB".to_string(),
                _ => "DIFFER from DataFusion".to_string(),
            };
            println!(
                "| Q{n} | {q:.1} | {d:.1} | {} | {:.2} | {} | {one:.1} | {:.2} | {staged:.1} | {check} |",
                cell(k, 1),
                q / d,
                cell(q / k, 2),
                one / q
            );
            rows.push(json!({"query": n, "quarry_ms": q, "datafusion_ms": d, "duckdb_ms": k, "quarry_one_slot_ms": one, "quarry_stages_ms": staged, "answers": check}));
        }
        println!(
            "| total | {tq:.1} | {td:.1} | {} | {:.2} | {} | {t1:.1} | {:.2} | {ts:.1} | |",
            cell(tk, 1),
            tq / td,
            cell(tq / tk, 2),
            t1 / tq
        );
        let report = json!({
            "scale_factor": sf,
            "iterations": args.iterations,
            "executors": args.executors,
            "slots_per_executor": per_executor,
            "queries": rows,
            "totals": {"quarry_ms": tq, "datafusion_ms": td, "duckdb_ms": tk, "quarry_one_slot_ms": t1, "quarry_stages_ms": ts},
            "load": load,
        });
        if let Some(load) = &load {
            println!("\nLoad, SF{sf}: {load}");
        }
        let path = args.results.join(format!("tpch-sf{sf}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
