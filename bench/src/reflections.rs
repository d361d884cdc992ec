//! Reflections: the tutorial's orders (50 million by default, as Parquet files in a
//! source) and a dashboard of queries, each run on the base data and answered from
//! reflections, over Flight SQL on a cluster of 2 executors, in one run. Also: how long
//! a full refresh takes against the same GROUP BY run raw, an incremental refresh after
//! appending 1% new files against the full one, and what 50 reflections on a dataset add
//! to planning.

use std::time::Instant;

use serde_json::json;

use super::{Cluster, Error, FlightSql, median};

const CITIES: [&str; 10] = [
    "Mumbai",
    "Delhi",
    "Bengaluru",
    "Hyderabad",
    "Chennai",
    "Kolkata",
    "Pune",
    "Ahmedabad",
    "Jaipur",
    "Lucknow",
];
const CATEGORIES: [&str; 8] = [
    "Electronics",
    "Fashion",
    "Home",
    "Books",
    "Sports",
    "Beauty",
    "Toys",
    "Grocery",
];

fn case(expr: &str, values: &[&str]) -> String {
    let arms: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("WHEN {i} THEN '{v}'"))
        .collect();
    format!("CASE {expr} {} END", arms.join(" "))
}

/// Orders `from..to` as a query: deterministic, spread over 2024.
fn orders_sql(from: u64, to: u64) -> String {
    format!(
        "SELECT value AS order_id, \
         arrow_cast(CAST(19723 + ((value * 7919) / 13) % 366 AS INT), 'Date32') AS date, \
         {} AS city, {} AS category, {} AS gender, \
         (value * 2654435761) % 2000000 AS customer_id, \
         CAST(value % 5 + 1 AS INT) AS quantity, \
         CAST((value * 37) % 100000 AS DOUBLE) / 100.0 AS revenue, \
         CAST((value * 17) % 5 + 1 AS INT) AS rating \
         FROM range({from}, {to})",
        case("((value * 2654435761) / 1024) % 10", &CITIES),
        case("((value * 40503) / 7) % 8", &CATEGORIES),
        case("((value * 69069) / 5) % 3", &["Female", "Male", "Other"]),
    )
}

const DASHBOARD: [(&str, &str); 8] = [
    (
        "revenue by category",
        "SELECT category, sum(revenue) AS revenue FROM demo.orders GROUP BY 1 ORDER BY 2 DESC",
    ),
    (
        "daily revenue by city, one month",
        "SELECT date, city, sum(revenue) FROM demo.orders WHERE date >= DATE '2024-03-01' \
         AND date < DATE '2024-04-01' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "monthly rollup",
        "SELECT date_trunc('month', date) AS month, sum(revenue), count(*) FROM demo.orders \
         GROUP BY 1 ORDER BY 1",
    ),
    (
        "average rating by city",
        "SELECT city, avg(rating) FROM demo.orders GROUP BY 1 ORDER BY 1",
    ),
    (
        "approximate distinct customers",
        "SELECT city, approx_distinct(customer_id) FROM demo.orders GROUP BY 1 ORDER BY 1",
    ),
    (
        "category and date range filter",
        "SELECT city, sum(quantity), count(*) FROM demo.orders WHERE category = 'Books' \
         AND date BETWEEN DATE '2024-06-01' AND DATE '2024-08-31' GROUP BY 1 ORDER BY 1",
    ),
    (
        "join with a city dimension table",
        "SELECT c.state, sum(o.revenue) FROM demo.orders o JOIN demo.cities c \
         ON o.city = c.name GROUP BY 1 ORDER BY 1",
    ),
    (
        "raw reflection point filter",
        "SELECT order_id, revenue FROM demo.orders WHERE city = 'Pune' \
         AND date = DATE '2024-05-03' ORDER BY order_id LIMIT 100",
    ),
];

async fn timed(client: &mut FlightSql, sql: &str) -> Result<(f64, usize), Error> {
    let started = Instant::now();
    let batches = client.query(sql).await?;
    Ok((
        started.elapsed().as_secs_f64(),
        batches.iter().map(|b| b.num_rows()).sum(),
    ))
}

/// The `column` of a one-row answer as text.
async fn scalar(client: &mut FlightSql, sql: &str) -> Result<String, Error> {
    let batches = client.query(sql).await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| format!("{sql}: no rows"))?;
    Ok(arrow::util::display::array_value_to_string(
        batch.column(0),
        0,
    )?)
}

async fn duration_of(client: &mut FlightSql, reflection: &str) -> Result<f64, Error> {
    let ms = scalar(
        client,
        &format!("SELECT duration_ms FROM sys.materializations WHERE reflection = '{reflection}'"),
    )
    .await?;
    Ok(ms.parse::<f64>()? / 1000.0)
}

pub async fn run(rows: u64, results: &std::path::Path) -> Result<(), Error> {
    let data = tempfile::tempdir()?;
    let root = data.path().canonicalize()?;
    let cluster = Cluster::start(2, None)?;
    let mut client = FlightSql::connect(cluster.flight).await?;
    eprintln!("Reflections: {rows} orders as Parquet files, 2 executors");
    let started = Instant::now();
    for sql in [
        format!(
            "CREATE SOURCE lake TYPE local WITH (root = '{}', writable = true)",
            root.display()
        ),
        "CREATE SCHEMA demo".to_string(),
        format!(
            "COPY ({}) TO lake 'orders' WITH (FORMAT parquet)",
            orders_sql(0, rows)
        ),
        "CREATE TABLE demo.orders FROM lake 'orders/' FORMAT parquet".to_string(),
        "CREATE TABLE demo.cities AS SELECT * FROM (VALUES ('Mumbai', 'Maharashtra'), \
         ('Delhi', 'Delhi'), ('Bengaluru', 'Karnataka'), ('Hyderabad', 'Telangana'), \
         ('Chennai', 'Tamil Nadu'), ('Kolkata', 'West Bengal'), ('Pune', 'Maharashtra'), \
         ('Ahmedabad', 'Gujarat'), ('Jaipur', 'Rajasthan'), ('Lucknow', 'Uttar Pradesh')) \
         AS t(name, state)"
            .to_string(),
    ] {
        client.query(&sql).await?;
    }
    let counted = scalar(&mut client, "SELECT count(*) FROM demo.orders").await?;
    eprintln!(
        "  {counted} orders written in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if counted != rows.to_string() {
        return Err(format!("{counted} orders written, {rows} asked for").into());
    }

    // The materialization's query, raw: what a full refresh computes.
    let group_by = "SELECT date, city, category, gender, sum(revenue), count(revenue), \
                    min(revenue), max(revenue), sum(quantity), count(quantity), sum(rating), \
                    count(rating), count(*) FROM demo.orders GROUP BY 1, 2, 3, 4";
    let (group_by_raw, _) = timed(
        &mut client,
        &format!("SET quarry.reflections.enabled = false; {group_by}"),
    )
    .await?;
    let started = Instant::now();
    client
        .query(
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION dash \
             USING DIMENSIONS (date BY DAY, city, category, gender) \
             MEASURES (revenue (SUM, COUNT, MIN, MAX), quantity (SUM, COUNT), rating (SUM, COUNT))",
        )
        .await?;
    client
        .query("WAIT FOR REFLECTION dash TIMEOUT 3600")
        .await?;
    let dash_wall = started.elapsed().as_secs_f64();
    let dash_full = duration_of(&mut client, "dash").await?;
    client
        .query(
            "ALTER TABLE demo.orders CREATE RAW REFLECTION slim \
             USING DISPLAY (order_id, date, city, revenue) PARTITION BY (city)",
        )
        .await?;
    client
        .query("WAIT FOR REFLECTION slim TIMEOUT 3600")
        .await?;
    let slim_full = duration_of(&mut client, "slim").await?;
    // Distinct customers keep a HyperLogLog sketch per group (16 KiB when dense): a tile of
    // its own, by city, rather than one per day, city, category and gender.
    client
        .query(
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION customers \
             USING DIMENSIONS (city) MEASURES (customer_id (APPROX_COUNT_DISTINCT))",
        )
        .await?;
    client
        .query("WAIT FOR REFLECTION customers TIMEOUT 3600")
        .await?;
    let dash_rows = scalar(
        &mut client,
        "SELECT rows FROM sys.reflections WHERE name = 'dash'",
    )
    .await?;
    eprintln!(
        "  full refresh of dash: {dash_full:.2}s ({dash_rows} rows; {dash_wall:.2}s to WAIT), \
         the same GROUP BY raw: {group_by_raw:.2}s; slim: {slim_full:.2}s"
    );

    let mut report = Vec::new();
    for (name, sql) in DASHBOARD {
        // The settings are the session's, so the timings are of the tile alone.
        for setting in [
            "SET quarry.results_cache.enabled = false",
            "SET quarry.reflections.enabled = false",
        ] {
            client.query(setting).await?;
        }
        let mut raw = Vec::new();
        for _ in 0..3 {
            raw.push(timed(&mut client, sql).await?.0);
        }
        client
            .query("SET quarry.reflections.enabled = true")
            .await?;
        let mut accelerated = Vec::new();
        for _ in 0..15 {
            accelerated.push(timed(&mut client, sql).await?.0);
        }
        // The same with every plan spread over the executors as stages (none whole on one
        // executor), to show what that choice does to each tile.
        client
            .query("SET quarry.one_executor_max_bytes = 0")
            .await?;
        let mut staged = Vec::new();
        for _ in 0..15 {
            staged.push(timed(&mut client, sql).await?.0);
        }
        client.query("RESET quarry.one_executor_max_bytes").await?;
        // The same tile repeated with the results cache on: the dashboard refreshed.
        client
            .query("SET quarry.results_cache.enabled = true")
            .await?;
        client.query(sql).await?;
        let mut cached = Vec::new();
        for _ in 0..15 {
            cached.push(timed(&mut client, sql).await?.0);
        }
        client
            .query("SET quarry.results_cache.enabled = false")
            .await?;
        let explained = client.query(&format!("EXPLAIN REFLECTIONS {sql}")).await?;
        let chosen: Vec<String> = explained
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).filter_map(move |i| {
                    let outcome =
                        arrow::util::display::array_value_to_string(b.column(1), i).ok()?;
                    let name = arrow::util::display::array_value_to_string(b.column(0), i).ok()?;
                    outcome.starts_with("chosen").then_some(name)
                })
            })
            .collect();
        let (raw_p50, fast_p50, cached_p50) = (median(&raw), median(&accelerated), median(&cached));
        let staged_p50 = median(&staged);
        eprintln!(
            "  {name:<34} raw {:>8.1} ms  accelerated p50 {:>7.1} ms  {:>7.1}x  (as stages {:>7.1} ms)  cached p50 {:>6.2} ms ({})",
            raw_p50 * 1000.0,
            fast_p50 * 1000.0,
            raw_p50 / fast_p50,
            staged_p50 * 1000.0,
            cached_p50 * 1000.0,
            if chosen.is_empty() {
                "no reflection".to_string()
            } else {
                chosen.join(", ")
            }
        );
        report.push(json!({
            "query": name, "sql": sql, "raw_ms": raw_p50 * 1000.0,
            "accelerated_p50_ms": fast_p50 * 1000.0, "speedup": raw_p50 / fast_p50,
            "cached_p50_ms": cached_p50 * 1000.0,
            "accelerated_as_stages_p50_ms": staged_p50 * 1000.0,
            "reflections": chosen,
        }));
    }

    // 1% more orders as new files; an incremental refresh reads only those.
    let appended = rows / 100;
    client
        .query(&format!(
            "COPY ({}) TO lake 'orders' WITH (FORMAT parquet)",
            orders_sql(rows, rows + appended)
        ))
        .await?;
    client
        .query("ALTER TABLE demo.orders REFRESH REFLECTIONS")
        .await?;
    client
        .query("WAIT FOR REFLECTION dash TIMEOUT 3600")
        .await?;
    client
        .query("WAIT FOR REFLECTION slim TIMEOUT 3600")
        .await?;
    let method = scalar(
        &mut client,
        "SELECT method FROM sys.materializations WHERE reflection = 'dash'",
    )
    .await?;
    let dash_incremental = duration_of(&mut client, "dash").await?;
    let slim_incremental = duration_of(&mut client, "slim").await?;
    eprintln!(
        "  after appending {appended} orders: dash {method} {dash_incremental:.2}s \
         ({:.1}% of full), slim {slim_incremental:.2}s ({:.1}% of full)",
        100.0 * dash_incremental / dash_full,
        100.0 * slim_incremental / slim_full
    );

    // Planning with 50 reflections on one dataset.
    client
        .query(&format!(
            "CREATE TABLE demo.small AS {}",
            orders_sql(0, 10_000)
        ))
        .await?;
    for i in 0..50 {
        client
            .query(&format!(
                "ALTER TABLE demo.small CREATE AGGREGATE REFLECTION small{i} \
                 USING DIMENSIONS (city, category, date BY DAY) MEASURES (revenue (SUM))"
            ))
            .await?;
    }
    for i in 0..50 {
        client
            .query(&format!("WAIT FOR REFLECTION small{i} TIMEOUT 600"))
            .await?;
    }
    let probe = "EXPLAIN SELECT city, sum(revenue) FROM demo.small GROUP BY city";
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        with.push(
            timed(
                &mut client,
                &format!("SET quarry.reflections.enabled = true; {probe}"),
            )
            .await?
            .0,
        );
        without.push(
            timed(
                &mut client,
                &format!("SET quarry.reflections.enabled = false; {probe}"),
            )
            .await?
            .0,
        );
    }
    let planning_added = (median(&with) - median(&without)) * 1000.0;
    eprintln!(
        "  planning with 50 reflections: {:.1} ms vs {:.1} ms without (+{planning_added:.1} ms)",
        median(&with) * 1000.0,
        median(&without) * 1000.0
    );

    let out = json!({
        "rows": rows,
        "executors": 2,
        "dashboard": report,
        "full_refresh": {
            "dash_seconds": dash_full, "dash_rows": dash_rows,
            "same_group_by_raw_seconds": group_by_raw,
            "ratio": dash_full / group_by_raw, "slim_seconds": slim_full,
        },
        "incremental_refresh": {
            "appended_rows": appended, "method": method,
            "dash_seconds": dash_incremental, "dash_fraction_of_full": dash_incremental / dash_full,
            "slim_seconds": slim_incremental, "slim_fraction_of_full": slim_incremental / slim_full,
        },
        "planning_50_reflections_ms": {
            "with": median(&with) * 1000.0, "without": median(&without) * 1000.0,
            "added": planning_added,
        },
    });
    let path = results.join(format!("reflections-{}m.json", rows / 1_000_000));
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    eprintln!("  saved {}", path.display());
    Ok(())
}
