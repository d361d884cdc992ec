//! Small queries, where a query's fixed cost is most of its time: a join of twenty
//! 10-row tables, the 22 TPC-H queries at SF0.01, `SELECT 1` and a point lookup, each
//! p50 over Flight SQL on a Quarry cluster (separate processes) against in-process
//! DataFusion (parse, plan and run each time) over the same files, runs interleaved.
//! Quarry runs with its results cache off, then each query again with it on (repeats).
//!
//! ```text
//! target/release/quarry-bench --small [--iterations 30]
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use quarry_sql_tests::tpch;
use serde_json::json;

use crate::Error;
use crate::cluster::{Cluster, FlightSql};

const TABLES: usize = 20;

/// Milliseconds of each run of one query on Quarry and on DataFusion, runs interleaved,
/// and the rows of the last run of each.
pub(crate) struct Interleaved {
    pub ours: Vec<f64>,
    pub theirs: Vec<f64>,
    pub our_rows: Vec<RecordBatch>,
    pub their_rows: Vec<RecordBatch>,
}

/// Run `sql` `warm` times on both (file metadata in the page cache, connections), then
/// `iterations` times each, alternating.
pub(crate) async fn interleaved(
    quarry: &mut FlightSql,
    datafusion: &SessionContext,
    sql: &str,
    warm: usize,
    iterations: usize,
) -> Result<Interleaved, Error> {
    for _ in 0..warm {
        quarry.query(sql).await?;
        datafusion.sql(sql).await?.collect().await?;
    }
    let mut runs = Interleaved {
        ours: Vec::new(),
        theirs: Vec::new(),
        our_rows: Vec::new(),
        their_rows: Vec::new(),
    };
    for _ in 0..iterations {
        let started = Instant::now();
        runs.our_rows = quarry.query(sql).await?;
        runs.ours.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        runs.their_rows = datafusion.sql(sql).await?.collect().await?;
        runs.theirs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(runs)
}

pub(crate) fn percentile(times: &[f64], p: f64) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// Twenty tables `t1..t20` of ten rows (`a_i`, `b_i`, `label`), one Parquet file each.
fn write_tiny_tables(dir: &Path) -> Result<(), Error> {
    for t in 1..=TABLES {
        let schema = Arc::new(Schema::new(vec![
            Field::new(format!("a{t}"), DataType::Int64, false),
            Field::new(format!("b{t}"), DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("t{t}-{i}")),
                )),
            ],
        )?;
        let folder = dir.join(format!("t{t}"));
        std::fs::create_dir_all(&folder)?;
        let file = std::fs::File::create(folder.join("part-0.parquet"))?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
    }
    Ok(())
}

fn twenty_table_join() -> String {
    let tables: Vec<String> = (1..=TABLES).map(|t| format!("t{t}")).collect();
    let joins: Vec<String> = (1..TABLES).map(|t| format!("a{t} = b{}", t + 1)).collect();
    format!(
        "SELECT a1, t20.label FROM {} WHERE {} ORDER BY a1",
        tables.join(", "),
        joins.join(" AND ")
    )
}

/// What a suite against a cluster runs with (`--small`, `--adaptive`).
#[derive(Clone, Copy)]
pub struct Suite<'a> {
    pub data: &'a Path,
    pub executors: usize,
    pub slots: Option<usize>,
    pub iterations: usize,
    pub results: &'a Path,
}

impl Suite<'_> {
    /// A cluster of this suite's shape, and a Flight SQL client of it.
    pub async fn cluster(&self) -> Result<(Cluster, FlightSql), Error> {
        let cluster = Cluster::start(self.executors, self.slots)?;
        let client = FlightSql::connect(cluster.flight).await?;
        Ok((cluster, client))
    }
}

pub async fn run(suite: Suite<'_>) -> Result<(), Error> {
    let tpch_dir = tpch::cached(suite.data, 0.01, 1)?.canonicalize()?;
    let tiny = suite.data.join("tiny-tables");
    write_tiny_tables(&tiny)?;
    let tiny = tiny.canonicalize()?;

    let (_cluster, mut quarry) = suite.cluster().await?;
    let mut setup = tpch::create_tables_sql(&tpch_dir);
    setup.push(format!(
        "CREATE SOURCE IF NOT EXISTS tiny TYPE local WITH (root = '{}')",
        tiny.display()
    ));
    for t in 1..=TABLES {
        setup.push(format!(
            "CREATE TABLE IF NOT EXISTS t{t} FROM tiny 't{t}' FORMAT parquet"
        ));
    }
    for sql in &setup {
        quarry.query(sql).await?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let datafusion = tpch::datafusion_context(&tpch_dir, cores).await?;
    for t in 1..=TABLES {
        datafusion
            .register_parquet(
                format!("t{t}"),
                tiny.join(format!("t{t}")).to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
    }

    let mut queries: Vec<(String, String)> = vec![
        ("SELECT 1".to_string(), "SELECT 1".to_string()),
        (
            "point lookup".to_string(),
            "SELECT * FROM orders WHERE o_orderkey = 4242".to_string(),
        ),
        ("twenty-table join".to_string(), twenty_table_join()),
    ];
    queries.extend((1..=22).map(|n| (format!("TPC-H Q{n} SF0.01"), tpch::query(n))));

    eprintln!(
        "Small queries: Quarry (coordinator + {} executors) over Flight SQL vs DataFusion in-process ({cores} partitions), p50 of {}",
        suite.executors, suite.iterations
    );
    println!(
        "| query | Quarry p50 ms | DataFusion p50 ms | difference ms | Quarry cached p50 ms | answers |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let mut rows = Vec::new();
    for (name, sql) in &queries {
        quarry
            .query("SET quarry.results_cache.enabled = false")
            .await?;
        let Interleaved {
            ours,
            theirs,
            our_rows,
            their_rows,
        } = interleaved(&mut quarry, &datafusion, sql, 3, suite.iterations).await?;
        quarry
            .query("SET quarry.results_cache.enabled = true")
            .await?;
        let mut cached = Vec::new();
        // The first run keeps the result, the second confirms its shortcut (see
        // results_shortcut.rs); repeats after that are what a dashboard sees.
        for _ in 0..2 {
            quarry.query(sql).await?;
        }
        for _ in 0..suite.iterations {
            let started = Instant::now();
            quarry.query(sql).await?;
            cached.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let agree = tpch::answer(sql, &our_rows)? == tpch::answer(sql, &their_rows)?;
        let (q, d, c) = (
            percentile(&ours, 0.5),
            percentile(&theirs, 0.5),
            percentile(&cached, 0.5),
        );
        println!(
            "| {name} | {q:.2} | {d:.2} | {:+.2} | {c:.2} | {} |",
            q - d,
            if agree { "agree" } else { "DIFFER" }
        );
        rows.push(json!({
            "query": name,
            "quarry_p50_ms": q,
            "quarry_p99_ms": percentile(&ours, 0.99),
            "datafusion_p50_ms": d,
            "difference_ms": q - d,
            "quarry_cached_p50_ms": c,
            "answers_agree": agree,
        }));
    }
    let report = json!({
        "iterations": suite.iterations,
        "executors": suite.executors,
        "datafusion_partitions": cores,
        "queries": rows,
    });
    crate::write_report(suite.results, "small-queries.json", &report)
}
