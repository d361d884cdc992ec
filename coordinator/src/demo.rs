//! Demo data: the e-commerce orders of the tutorial Quarry grew from, generated on the
//! first `quarry up`. The same seed gives the same rows on every machine.
//!
//! `orders/month=YYYY-MM/part-0.parquet` (hive-partitioned Parquet) and
//! `orders_csv/orders.csv` (one CSV copy) under the demo directory, registered as the
//! tables `demo.orders` and `demo.orders_csv` of source `demo`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quarry_catalog::SourceConfig;
use quarry_common::QuarryError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::Engine;
use crate::engine::catalog_ops::{CreateMode, TableRequest};
use crate::error::{CoordinatorError, catalog_error};

pub const DEMO_SCHEMA: &str = "demo";
pub const DEMO_SOURCE: &str = "demo";

const CITIES: [&str; 10] = [
    "Mumbai",
    "Delhi",
    "Bangalore",
    "Hyderabad",
    "Chennai",
    "Kolkata",
    "Pune",
    "Ahmedabad",
    "Jaipur",
    "Lucknow",
];
/// Categories with a typical unit price range (rupees).
const CATEGORIES: [(&str, f64, f64); 8] = [
    ("Electronics", 999.0, 89_999.0),
    ("Fashion", 299.0, 4_999.0),
    ("Home & Kitchen", 199.0, 14_999.0),
    ("Books", 99.0, 1_499.0),
    ("Beauty", 149.0, 2_999.0),
    ("Sports", 249.0, 9_999.0),
    ("Toys", 199.0, 3_999.0),
    ("Groceries", 49.0, 1_999.0),
];
const GENDERS: [&str; 3] = ["Female", "Male", "Other"];
/// 2024-01-01 as days since the Unix epoch.
const YEAR_START: i32 = 19_723;
const DAYS_IN_MONTH: [i32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const ROW_GROUP_ROWS: usize = 128 * 1024;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("date", DataType::Date32, false),
        Field::new("customer_age", DataType::Int32, false),
        Field::new("gender", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("product_category", DataType::Utf8, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("unit_price", DataType::Float64, false),
        Field::new("revenue", DataType::Float64, false),
        Field::new("rating", DataType::Int32, false),
        Field::new("returned", DataType::Boolean, false),
    ]))
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The orders of one month: ids `first_id..first_id + rows`, dates spread over the month.
fn month_batch(month: usize, first_id: i64, rows: usize) -> Result<RecordBatch, QuarryError> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5157_4152_5259 + month as u64);
    let month_start = YEAR_START + DAYS_IN_MONTH[..month].iter().sum::<i32>();
    let days = DAYS_IN_MONTH[month];
    let mut order_id = Int64Builder::with_capacity(rows);
    let mut date = Date32Builder::with_capacity(rows);
    let mut age = Int32Builder::with_capacity(rows);
    let mut gender = StringBuilder::with_capacity(rows, rows * 6);
    let mut city = StringBuilder::with_capacity(rows, rows * 8);
    let mut category = StringBuilder::with_capacity(rows, rows * 10);
    let mut quantity = Int32Builder::with_capacity(rows);
    let mut unit_price = Float64Builder::with_capacity(rows);
    let mut revenue = Float64Builder::with_capacity(rows);
    let mut rating = Int32Builder::with_capacity(rows);
    let mut returned = BooleanBuilder::with_capacity(rows);
    for i in 0..rows {
        order_id.append_value(first_id + i as i64);
        // Orders arrive in id order through the month.
        date.append_value(month_start + ((i as i64 * days as i64) / rows.max(1) as i64) as i32);
        age.append_value(rng.random_range(18..=70));
        gender.append_value(GENDERS[rng.random_range(0..GENDERS.len())]);
        // Bigger cities order more: weight by position.
        let c = (rng.random_range(0.0f64..1.0).powf(1.6) * CITIES.len() as f64) as usize;
        city.append_value(CITIES[c.min(CITIES.len() - 1)]);
        let (name, low, high) = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        category.append_value(name);
        let q = rng.random_range(1..=5);
        let price = cents(rng.random_range(low..high));
        quantity.append_value(q);
        unit_price.append_value(price);
        revenue.append_value(cents(price * q as f64));
        rating.append_value(rng.random_range(1..=5));
        returned.append_value(rng.random_range(0..100) < 7);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(order_id.finish()),
        Arc::new(date.finish()),
        Arc::new(age.finish()),
        Arc::new(gender.finish()),
        Arc::new(city.finish()),
        Arc::new(category.finish()),
        Arc::new(quantity.finish()),
        Arc::new(unit_price.finish()),
        Arc::new(revenue.finish()),
        Arc::new(rating.finish()),
        Arc::new(returned.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(CoordinatorError::batch("demo data"))
        .map_err(QuarryError::from)
}

fn io(path: &Path, e: std::io::Error) -> QuarryError {
    CoordinatorError::io(format_args!("writing demo data {}", path.display()), e).into()
}

/// A Parquet or CSV writer's failure, which is a failure to write the file.
fn written(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> QuarryError {
    io(path, std::io::Error::other(e))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), QuarryError> {
    let file = File::create(path).map_err(|e| io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| written(path, e))?;
    writer.write(batch).map_err(|e| written(path, e))?;
    writer.close().map_err(|e| written(path, e))?;
    Ok(())
}

/// Rows per month, in proportion to the month's days, adding up to `rows`.
fn month_rows(rows: usize) -> Vec<usize> {
    let mut out: Vec<usize> = DAYS_IN_MONTH
        .iter()
        .map(|d| rows * *d as usize / 366)
        .collect();
    let assigned: usize = out.iter().sum();
    out[11] += rows - assigned;
    out
}

/// Write the demo files under `dir`; returns the directory.
pub fn generate(dir: &Path, rows: usize) -> Result<PathBuf, QuarryError> {
    let orders = dir.join("orders");
    let csv_dir = dir.join("orders_csv");
    std::fs::create_dir_all(&orders).map_err(|e| io(&orders, e))?;
    std::fs::create_dir_all(&csv_dir).map_err(|e| io(&csv_dir, e))?;
    let counts = month_rows(rows);
    let mut first_ids = Vec::with_capacity(12);
    let mut next = 1i64;
    for count in &counts {
        first_ids.push(next);
        next += *count as i64;
    }
    let csv_path = csv_dir.join("orders.csv");
    let csv_file = File::create(&csv_path).map_err(|e| io(&csv_path, e))?;
    let mut csv = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::io::BufWriter::new(csv_file));
    // Two months at a time in parallel; the CSV is appended in month order.
    for pair in (0..12).collect::<Vec<usize>>().chunks(2) {
        let batches: Vec<Result<RecordBatch, QuarryError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pair
                .iter()
                .map(|&month| {
                    let orders = orders.clone();
                    let (first_id, count) = (first_ids[month], counts[month]);
                    scope.spawn(move || {
                        let batch = month_batch(month, first_id, count)?;
                        let folder = orders.join(format!("month=2024-{:02}", month + 1));
                        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
                        write_parquet(&folder.join("part-0.parquet"), &batch)?;
                        Ok(batch)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CoordinatorError::crashed("demo data", "a thread panicked").into())
                    })
                })
                .collect()
        });
        for batch in batches {
            csv.write(&batch?).map_err(|e| written(&csv_path, e))?;
        }
    }
    drop(csv);
    Ok(dir.to_path_buf())
}

/// Generate the demo data (once) and register its source, schema and tables.
pub async fn install(engine: &Engine, data_dir: &Path, rows: usize) -> Result<bool, QuarryError> {
    if engine
        .datasets()
        .catalog()
        .get_dataset(DEMO_SCHEMA, "orders")
        .map_err(catalog_error)?
        .is_some()
    {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let dir = data_dir.to_path_buf();
    let dir = tokio::task::spawn_blocking(move || generate(&dir, rows))
        .await
        .map_err(|e| QuarryError::from(CoordinatorError::crashed("demo data generation", e)))??;
    let root = dir
        .canonicalize()
        .map_err(|e| io(&dir, e))?
        .display()
        .to_string();
    // The coordinator sets up its own demo data.
    let system = crate::access::UserAccess::unrestricted("system");
    engine
        .catalog
        .create_source(
            &system,
            DEMO_SOURCE,
            SourceConfig::Local {
                root,
                writable: false,
            },
            CreateMode::OrReplace,
        )
        .await?;
    engine.catalog.create_schema(&system, DEMO_SCHEMA, true)?;
    for (name, path, format) in [
        ("orders", "orders", "parquet"),
        ("orders_csv", "orders_csv", "csv"),
    ] {
        let request = TableRequest {
            source: Some(DEMO_SOURCE.to_string()),
            path: Some(path.to_string()),
            format: Some(format.to_string()),
            ..TableRequest::default()
        };
        engine
            .catalog
            .create_table(&system, DEMO_SCHEMA, name, request, CreateMode::OrReplace)
            .await?;
    }
    tracing::info!(
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "demo data ready"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_add_up_and_rows_are_deterministic() -> Result<(), QuarryError> {
        assert_eq!(month_rows(5_000_000).iter().sum::<usize>(), 5_000_000);
        let a = month_batch(3, 1, 1000)?;
        let b = month_batch(3, 1, 1000)?;
        assert_eq!(a, b);
        assert_eq!(a.num_rows(), 1000);
        Ok(())
    }
}
