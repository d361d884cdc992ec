//! TPC-H: data generated with `tpchgen-arrow` into Parquet, the 22 queries (from
//! `bench/tpch/queries`), and answers in a form two engines can be compared by.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

macro_rules! queries {
    ($($n:literal),*) => {
        [$(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/tpch/queries/q", $n, ".sql"))),*]
    };
}

/// The 22 queries, `QUERIES[0]` being Q1.
pub const QUERIES: [&str; 22] = queries!(
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17",
    "18", "19", "20", "21", "22"
);

/// Query `n` (1-based), without its comment line and final semicolon.
pub fn query(n: usize) -> String {
    QUERIES[n - 1]
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .trim_end_matches(';')
        .to_string()
}

/// How an answer differs from the expected one, for a test's report (None when equal).
pub fn mismatch(what: &str, got: &[String], expected: &[String]) -> Option<String> {
    (got != expected).then(|| {
        format!(
            "{what}: {} rows vs DataFusion's {}\n  quarry:     {:?}\n  datafusion: {:?}",
            got.len(),
            expected.len(),
            got.iter().take(3).collect::<Vec<_>>(),
            expected.iter().take(3).collect::<Vec<_>>()
        )
    })
}

/// Whether a query's result order is part of its answer.
pub fn is_ordered(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("order by")
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>;

fn table_parts(table: &str, sf: f64, part: i32, parts: i32) -> Batches {
    const BATCH: usize = 8192;
    match table {
        "nation" => {
            Box::new(NationArrow::new(NationGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "region" => {
            Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "part" => {
            Box::new(PartArrow::new(PartGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "supplier" => Box::new(
            SupplierArrow::new(SupplierGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "partsupp" => Box::new(
            PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "customer" => Box::new(
            CustomerArrow::new(CustomerGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "orders" => {
            Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        _ => Box::new(
            LineItemArrow::new(LineItemGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
    }
}

/// Write scale factor `sf` under `dir/<table>/part-<n>.parquet`, the big tables in
/// `parts` files each (nation and region in one).
pub fn generate(dir: &Path, sf: f64, parts: usize) -> Result<(), Box<dyn std::error::Error>> {
    for table in TABLES {
        let folder = dir.join(table);
        std::fs::create_dir_all(&folder)?;
        let parts = if matches!(table, "nation" | "region") {
            1
        } else {
            parts.max(1)
        };
        for part in 1..=parts {
            let mut batches = table_parts(table, sf, part as i32, parts as i32).peekable();
            let Some(first) = batches.peek() else {
                continue;
            };
            let schema = match first {
                Ok(b) => b.schema(),
                Err(e) => return Err(e.to_string().into()),
            };
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let path = folder.join(format!("part-{part}.parquet"));
            let mut writer = ArrowWriter::try_new(File::create(&path)?, schema, Some(props))?;
            for batch in batches {
                writer.write(&batch?)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}

/// Generated data shared by every test of this build: `base/tpch-sf<sf>-<parts>`,
/// made once (other processes wait for it).
pub fn cached(base: &Path, sf: f64, parts: usize) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = base.join(format!("tpch-sf{sf}-{parts}"));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(base)?;
    let lock = base.join(format!("tpch-sf{sf}-{parts}.lock"));
    if std::fs::create_dir(&lock).is_ok() {
        let result = (|| {
            let _ = std::fs::remove_dir_all(&dir);
            generate(&dir, sf, parts)?;
            std::fs::write(&done, "")?;
            Ok::<(), Box<dyn std::error::Error>>(())
        })();
        let _ = std::fs::remove_dir(&lock);
        result?;
    } else {
        let deadline = Instant::now() + Duration::from_secs(600);
        while !done.exists() {
            if Instant::now() > deadline {
                return Err("waited too long for TPC-H data".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(dir)
}

/// SQL creating a source over `dir` and a table per TPC-H table.
pub fn create_tables_sql(dir: &Path) -> Vec<String> {
    let mut sql = vec![format!(
        "CREATE SOURCE IF NOT EXISTS tpch TYPE local WITH (root = '{}')",
        dir.display()
    )];
    for table in TABLES {
        sql.push(format!(
            "CREATE TABLE IF NOT EXISTS {table} FROM tpch '{table}' FORMAT parquet"
        ));
    }
    sql
}

/// Each row's cells as text, NULL for nulls.
pub fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, ArrowError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Rows as text, one string per row, for comparing answers.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<String>, ArrowError> {
    Ok(cells(batches)?
        .into_iter()
        .map(|row| row.join(" | "))
        .collect())
}

/// In-process DataFusion over the TPC-H files in `dir`, with `partitions` partitions.
pub async fn datafusion_context(
    dir: &Path,
    partitions: usize,
) -> datafusion::error::Result<SessionContext> {
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    for table in TABLES {
        ctx.register_parquet(
            table,
            dir.join(table).to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    }
    Ok(ctx)
}

/// In-process DataFusion's answers to the 22 queries, the reference for Quarry's.
pub async fn datafusion_answers(
    dir: &Path,
    partitions: usize,
) -> Result<Vec<Vec<String>>, Box<dyn std::error::Error>> {
    let ctx = datafusion_context(dir, partitions).await?;
    let mut answers = Vec::new();
    for n in 1..=22 {
        let sql = query(n);
        let batches = ctx.sql(&sql).await?.collect().await?;
        answers.push(answer(&sql, &batches)?);
    }
    Ok(answers)
}

/// The answer as compared: in order when the query orders it, sorted otherwise.
pub fn answer(sql: &str, batches: &[RecordBatch]) -> Result<Vec<String>, ArrowError> {
    let mut rows = rows(batches)?;
    if !is_ordered(sql) {
        rows.sort();
    }
    Ok(rows)
}
