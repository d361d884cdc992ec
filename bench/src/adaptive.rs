//! Decisions made at run time: a selective join of a 10M-row fact table (keys in order,
//! row groups of 100K rows) with a 100K-row dimension, on a Quarry cluster (separate
//! processes) over Flight SQL, with dynamic filters and joins chosen at run time on and
//! off, against in-process DataFusion (whose own dynamic filters work within one
//! process). Two shapes: the optimizer's broadcast join, and a partitioned join (the
//! broadcast limit, 10 KB, set under the build side's estimate but over its real size:
//! 1,000 keys, 8 KB). Then `ORDER BY k LIMIT 5` over the fact table with each task's TopK
//! filter on and off.
//!
//! ```text
//! target/release/quarry-bench --adaptive [--iterations 10]
//! ```

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use crate::Error;
use crate::small::{Suite, interleaved, percentile};

const FACT_ROWS: i64 = 10_000_000;
const FACT_FILES: i64 = 4;
const ROW_GROUP: usize = 100_000;
const DIM_ROWS: i64 = 100_000;

fn write(path: &Path, batches: &[RecordBatch], row_group: Option<usize>) -> Result<(), Error> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    let properties = row_group.map(|rows| {
        WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .build()
    });
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, first.schema(), properties)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(())
}

/// fact(k, v): keys 0..FACT_ROWS in order over FACT_FILES files; dim(k, name): key
/// `100 * i`, group `g{i / 1000}` (each group's keys span one fact row group).
fn write_data(dir: &Path) -> Result<(), Error> {
    if dir.join("done").exists() {
        return Ok(());
    }
    let fact = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let per_file = FACT_ROWS / FACT_FILES;
    for f in 0..FACT_FILES {
        let batches = (0..per_file / 1_000_000)
            .map(|b| {
                let first = f * per_file + b * 1_000_000;
                let keys = first..first + 1_000_000;
                RecordBatch::try_new(
                    Arc::clone(&fact),
                    vec![
                        Arc::new(Int64Array::from_iter_values(keys.clone())),
                        Arc::new(Int64Array::from_iter_values(keys.map(|k| k % 97))),
                    ],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        write(
            &dir.join(format!("fact/part-{f}.parquet")),
            &batches,
            Some(ROW_GROUP),
        )?;
    }
    let dim = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        dim,
        vec![
            Arc::new(Int64Array::from_iter_values((0..DIM_ROWS).map(|i| i * 100))),
            Arc::new(StringArray::from_iter_values(
                (0..DIM_ROWS).map(|i| format!("g{}", i / 1000)),
            )),
        ],
    )?;
    write(&dir.join("dim/part-0.parquet"), &[batch], None)?;
    std::fs::write(dir.join("done"), b"")?;
    Ok(())
}

const QUERY: &str = "SELECT count(*) AS n, sum(f.v) AS total FROM fact f JOIN dim d ON f.k = d.k \
                     WHERE d.name = 'g37'";

pub async fn run(suite: Suite<'_>) -> Result<(), Error> {
    let dir = suite.data.join("adaptive");
    write_data(&dir)?;
    let dir = dir.canonicalize()?;
    let (_cluster, mut quarry) = suite.cluster().await?;
    for sql in [
        format!(
            "CREATE SOURCE IF NOT EXISTS bench TYPE local WITH (root = '{}')",
            dir.display()
        ),
        "CREATE TABLE IF NOT EXISTS fact FROM bench 'fact' FORMAT parquet".to_string(),
        "CREATE TABLE IF NOT EXISTS dim FROM bench 'dim' FORMAT parquet".to_string(),
        "SET quarry.results_cache.enabled = false".to_string(),
        // What this suite measures crosses stages: the fact table would otherwise be read
        // whole on one executor, where DataFusion's own filters work as in-process.
        "SET quarry.one_executor_max_bytes = 0".to_string(),
    ] {
        quarry.query(&sql).await?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let datafusion = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(cores),
    );
    for table in ["fact", "dim"] {
        datafusion
            .register_parquet(
                table,
                dir.join(table).to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
    }

    // (shape, settings before the run)
    let shapes: [(&str, &[&str]); 2] = [
        ("broadcast join", &[]),
        (
            "partitioned join (broadcast limit 10 KB)",
            &["SET datafusion.optimizer.hash_join_single_partition_threshold = 10000"],
        ),
    ];
    // (configuration, its settings)
    let configurations: [(&str, [&str; 2]); 4] = [
        (
            "both off",
            [
                "SET quarry.dynamic_filters = false",
                "SET quarry.adaptive_joins = false",
            ],
        ),
        (
            "dynamic filters",
            [
                "SET quarry.dynamic_filters = true",
                "SET quarry.adaptive_joins = false",
            ],
        ),
        (
            "adaptive joins",
            [
                "SET quarry.dynamic_filters = false",
                "SET quarry.adaptive_joins = true",
            ],
        ),
        (
            "dynamic filters + adaptive joins",
            [
                "SET quarry.dynamic_filters = true",
                "SET quarry.adaptive_joins = true",
            ],
        ),
    ];
    eprintln!(
        "Run-time decisions: {FACT_ROWS} fact rows x {DIM_ROWS} dimension rows, Quarry (coordinator + {} executors) vs DataFusion in-process ({cores} partitions), median of {}",
        suite.executors, suite.iterations
    );
    println!("| shape | configuration | Quarry ms | DataFusion ms | Quarry / DataFusion |");
    println!("|---|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (shape, shape_settings) in shapes {
        quarry
            .query("RESET datafusion.optimizer.hash_join_single_partition_threshold")
            .await?;
        for sql in shape_settings {
            quarry.query(sql).await?;
        }
        // What the optimizer planned, for the record.
        let explained = quarry.query(&format!("EXPLAIN {QUERY}")).await?;
        let planned = arrow::util::pretty::pretty_format_batches(&explained)?.to_string();
        let planned = if planned.contains("mode=Partitioned") {
            "partitioned"
        } else {
            "broadcast"
        };
        for (configuration, settings) in &configurations {
            for sql in settings {
                quarry.query(sql).await?;
            }
            let runs = interleaved(&mut quarry, &datafusion, QUERY, 1, suite.iterations).await?;
            let agree = arrow::util::pretty::pretty_format_batches(&runs.our_rows)?.to_string()
                == arrow::util::pretty::pretty_format_batches(&runs.their_rows)?.to_string();
            let (q, d) = (percentile(&runs.ours, 0.5), percentile(&runs.theirs, 0.5));
            println!(
                "| {shape} (planned {planned}) | {configuration} | {q:.1} | {d:.1} | {:.2} |{}",
                q / d,
                if agree { "" } else { " answers DIFFER" }
            );
            rows.push(json!({
                "shape": shape,
                "planned_join": planned,
                "configuration": configuration,
                "quarry_ms": q,
                "datafusion_ms": d,
                "ratio": q / d,
                "answers_agree": agree,
            }));
        }
    }
    // A TopK over the fact table: each task's sort narrows the scan it reads from.
    let topk_query = "SELECT k, v FROM fact ORDER BY k LIMIT 5";
    let mut topk = Vec::new();
    for on in [false, true] {
        quarry
            .query(&format!(
                "SET datafusion.optimizer.enable_topk_dynamic_filter_pushdown = {on}"
            ))
            .await?;
        let runs = interleaved(&mut quarry, &datafusion, topk_query, 1, suite.iterations).await?;
        let (q, d) = (percentile(&runs.ours, 0.5), percentile(&runs.theirs, 0.5));
        let configuration = if on { "TopK filter" } else { "no TopK filter" };
        println!(
            "| ORDER BY k LIMIT 5 | {configuration} | {q:.1} | {d:.1} | {:.2} |",
            q / d
        );
        topk.push(json!({
            "configuration": configuration,
            "quarry_ms": q,
            "datafusion_ms": d,
            "ratio": q / d,
        }));
    }
    let report = json!({
        "topk_query": topk_query,
        "topk": topk,
        "fact_rows": FACT_ROWS,
        "dimension_rows": DIM_ROWS,
        "row_group_rows": ROW_GROUP,
        "executors": suite.executors,
        "iterations": suite.iterations,
        "datafusion_partitions": cores,
        "query": QUERY,
        "runs": rows,
    });
    crate::write_report(suite.results, "adaptive.json", &report)
}
