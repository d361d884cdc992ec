//! Writes: CREATE TABLE AS SELECT of TPC-H `lineitem` into a managed (Delta) table on a
//! Quarry cluster of 2 executors and of 1 executor, against in-process DataFusion's
//! `COPY ... TO` Parquet (zstd) and DuckDB's, over the same files, in one run. Each
//! engine writes every row once; rows per second and ratios are printed and saved.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow::array::{Array, Int64Array, UInt64Array};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use serde_json::json;

use super::{Cluster, Error, FlightSql, duckdb_python};

/// One engine's write: seconds and rows.
struct Written {
    seconds: f64,
    rows: u64,
}

fn count_of(batches: &[arrow::array::RecordBatch]) -> u64 {
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let col = b.column(0);
            if let Some(a) = col.as_any().downcast_ref::<UInt64Array>() {
                a.value(0)
            } else if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
                a.value(0) as u64
            } else {
                0
            }
        })
        .sum()
}

async fn quarry_ctas(executors: usize, setup: &[String]) -> Result<Written, Error> {
    let cluster = Cluster::start(executors, None)?;
    let mut client = FlightSql::connect(cluster.flight).await?;
    for sql in setup {
        client.query(sql).await?;
    }
    client.query("CREATE SCHEMA IF NOT EXISTS w").await?;
    let started = Instant::now();
    let written = client
        .query("CREATE TABLE w.lineitem AS SELECT * FROM lineitem")
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = count_of(&written);
    let check = client.query("SELECT count(*) FROM w.lineitem").await?;
    if count_of(&check) != rows {
        return Err(format!(
            "the table holds {} rows, {rows} were written",
            count_of(&check)
        )
        .into());
    }
    Ok(Written { seconds, rows })
}

async fn datafusion_copy(dir: &Path, partitions: usize, out: &Path) -> Result<Written, Error> {
    let config = SessionConfig::new().with_target_partitions(partitions);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_parquet(
        "lineitem",
        dir.join("lineitem").display().to_string(),
        ParquetReadOptions::default(),
    )
    .await?;
    let target = out.join("datafusion/");
    let started = Instant::now();
    let batches = ctx
        .sql(&format!(
            "COPY (SELECT * FROM lineitem) TO '{}' STORED AS PARQUET OPTIONS ('format.compression' 'zstd(3)')",
            target.display()
        ))
        .await?
        .collect()
        .await?;
    Ok(Written {
        seconds: started.elapsed().as_secs_f64(),
        rows: count_of(&batches),
    })
}

fn duckdb_copy(dir: &Path, threads: usize, out: &Path) -> Result<Written, Error> {
    let python = duckdb_python()?;
    let script = format!(
        "import duckdb, json, time\n\
         con = duckdb.connect()\n\
         con.execute('SET autoinstall_known_extensions = false')\n\
         con.execute('SET autoload_known_extensions = false')\n\
         con.execute('SET threads = {threads}')\n\
         started = time.perf_counter()\n\
         con.execute(\"COPY (SELECT * FROM read_parquet('{input}/*.parquet')) TO '{output}' (FORMAT parquet, COMPRESSION zstd, PER_THREAD_OUTPUT true)\")\n\
         seconds = time.perf_counter() - started\n\
         rows = con.execute(\"SELECT count(*) FROM read_parquet('{output}/*.parquet')\").fetchone()[0]\n\
         print(json.dumps({{'seconds': seconds, 'rows': rows}}))\n",
        input = dir.join("lineitem").display(),
        output = out.join("duckdb").display(),
    );
    let output = Command::new(python).args(["-c", &script]).output()?;
    if !output.status.success() {
        return Err(format!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    // The JSON is the last line; DuckDB may print progress before it.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    let reply: serde_json::Value = serde_json::from_str(last)?;
    Ok(Written {
        seconds: reply["seconds"].as_f64().unwrap_or(f64::NAN),
        rows: reply["rows"].as_u64().unwrap_or(0),
    })
}

/// The write benchmark at one scale factor; prints a table and saves `write-sf{sf}.json`.
pub async fn run(
    sf: f64,
    dir: &Path,
    setup: &[String],
    partitions: usize,
    no_duckdb: bool,
    results: &Path,
) -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    eprintln!("CTAS of lineitem: Quarry, 2 executors");
    let two = quarry_ctas(2, setup).await?;
    eprintln!("CTAS of lineitem: Quarry, 1 executor");
    let one = quarry_ctas(1, setup).await?;
    eprintln!("COPY of lineitem: DataFusion in-process, {partitions} partitions");
    let datafusion = datafusion_copy(dir, partitions, scratch.path()).await?;
    let duckdb = if no_duckdb {
        None
    } else {
        eprintln!("COPY of lineitem: DuckDB, {partitions} threads");
        Some(duckdb_copy(dir, partitions, scratch.path())?)
    };
    let rate = |w: &Written| w.rows as f64 / w.seconds;
    println!(
        "\nWriting TPC-H SF{sf} lineitem as zstd Parquet (rows/s; ratio = Quarry 2 executors / peer)"
    );
    println!("| writer | rows | seconds | rows/s | Quarry (2 executors) / this |");
    println!("|---|---:|---:|---:|---:|");
    let mut entries = vec![
        ("Quarry CTAS, 2 executors", &two),
        ("Quarry CTAS, 1 executor", &one),
        ("DataFusion COPY, in-process", &datafusion),
    ];
    if let Some(d) = &duckdb {
        entries.push(("DuckDB COPY", d));
    }
    let mut saved = Vec::new();
    for (name, w) in &entries {
        println!(
            "| {name} | {} | {:.2} | {:.0} | {:.2} |",
            w.rows,
            w.seconds,
            rate(w),
            rate(&two) / rate(w)
        );
        saved.push(json!({"writer": name, "rows": w.rows, "seconds": w.seconds, "rows_per_second": rate(w)}));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::fs::write(
        results.join(format!("write-sf{sf}.json")),
        serde_json::to_string_pretty(&json!({
            "scale_factor": sf,
            "cores": cores,
            "results": saved,
            "quarry_2_executors_vs_datafusion": rate(&two) / rate(&datafusion),
        }))?,
    )?;
    Ok(())
}
