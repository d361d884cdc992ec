//! Reflections on a real cluster: definitions, refresh jobs on the executors, queries
//! answered from materializations (the same answers as without them), and the reasons
//! EXPLAIN gives when a reflection does not serve.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::{TestCluster, run_sql, sql, sql_error};

/// Rows as sorted text lines, floats rounded to 9 significant digits.
pub(crate) fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).expect("format").to_string();
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| {
                    let cell = cell.trim();
                    match cell.parse::<f64>() {
                        Ok(v) if cell.contains('.') || cell.contains('e') => format!("{v:.9e}"),
                        _ => cell.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// What EXPLAIN REFLECTIONS says of each reflection.
async fn verdicts(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    query: &str,
) -> Vec<String> {
    let batches = sql(engine, session, &format!("EXPLAIN REFLECTIONS {query}")).await;
    lines(&batches)
}

/// demo.orders: 6,000 orders over 60 days, 4 cities, 3 categories.
pub async fn start_with_orders() -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    orders_on(TestCluster::start_with(2, |c| c.slots_per_executor = 2).await).await
}

/// demo.orders on a cluster started as the caller wants it.
pub async fn orders_on(
    cluster: TestCluster,
) -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    sql(&engine, &session, "CREATE SCHEMA demo").await;
    sql(
        &engine,
        &session,
        "CREATE TABLE demo.orders AS SELECT value AS order_id, \
         arrow_cast(CAST(19723 + value % 60 AS INT), 'Date32') AS date, \
         CASE (value / 7) % 4 WHEN 0 THEN 'Lyon' WHEN 1 THEN 'Paris' WHEN 2 THEN 'Oslo' ELSE 'Rome' END AS city, \
         CASE (value / 11) % 3 WHEN 0 THEN 'books' WHEN 1 THEN 'games' ELSE 'tools' END AS category, \
         CAST(value % 7 AS INT) + 1 AS quantity, \
         CAST(value % 101 AS DOUBLE) + 0.25 AS revenue, \
         CAST(value % 50 + 18 AS INT) AS age \
         FROM range(6000)",
    )
    .await;
    (cluster, engine, session)
}

/// The same rows with reflections on and off; and whether a reflection was chosen.
async fn same_answer(engine: &Arc<dyn QueryService>, session: &SessionHandle, query: &str) -> bool {
    sql(engine, session, "SET quarry.reflections.enabled = true").await;
    let accelerated = lines(&sql(engine, session, query).await);
    let chosen = verdicts(engine, session, query)
        .await
        .iter()
        .any(|v| v.contains("|chosen"));
    sql(engine, session, "SET quarry.reflections.enabled = false").await;
    let raw = lines(&sql(engine, session, query).await);
    sql(engine, session, "SET quarry.reflections.enabled = true").await;
    assert_eq!(accelerated, raw, "{query}");
    chosen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_reflections_answer_rollups_with_the_same_rows() {
    let (_cluster, engine, session) = start_with_orders().await;
    let created = sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION daily_city \
         USING DIMENSIONS (date BY DAY, city, category) \
         MEASURES (revenue (SUM, COUNT, MIN, MAX), quantity (SUM, COUNT))",
    )
    .await;
    assert!(lines(&created)[0].contains("refresh job"), "{created:?}");
    let ready = sql(
        &engine,
        &session,
        "WAIT FOR REFLECTION daily_city TIMEOUT 60",
    )
    .await;
    assert!(
        lines(&ready)[0].contains("can accelerate (720 rows)"),
        "{ready:?}"
    );

    for query in [
        "SELECT city, sum(revenue), count(*) FROM demo.orders GROUP BY city",
        "SELECT category, avg(revenue), min(revenue), max(revenue) FROM demo.orders GROUP BY category",
        "SELECT date_trunc('month', date) AS m, sum(quantity) FROM demo.orders GROUP BY 1",
        "SELECT city, count(revenue) FROM demo.orders WHERE category = 'books' AND date >= DATE '2024-02-01' GROUP BY city HAVING count(revenue) > 10",
        "SELECT count(DISTINCT city), count(*) FROM demo.orders",
        "SELECT DISTINCT category FROM demo.orders",
        "SELECT city, sum(revenue) AS r FROM demo.orders GROUP BY city ORDER BY r DESC LIMIT 2",
        "SELECT sum(revenue) FROM demo.orders WHERE city = 'Atlantis'",
    ] {
        assert!(
            same_answer(&engine, &session, query).await,
            "not accelerated: {query}"
        );
    }
    for (query, reason) in [
        (
            "SELECT order_id % 2, count(*) FROM demo.orders GROUP BY 1",
            "reads order_id, which is not a dimension",
        ),
        (
            "SELECT city, sum(revenue) FROM demo.orders WHERE age > 30 GROUP BY city",
            "reads age, which is not a dimension",
        ),
        (
            "SELECT city, stddev(revenue) FROM demo.orders GROUP BY city",
            "does not roll up",
        ),
        (
            "SELECT city, sum(revenue * 2) FROM demo.orders GROUP BY city",
            "aggregates an expression",
        ),
        (
            "SELECT city, max(quantity) FROM demo.orders GROUP BY city",
            "needs the measure quantity (MAX)",
        ),
        (
            "SELECT count(DISTINCT revenue) FROM demo.orders",
            "not a dimension",
        ),
    ] {
        let said = verdicts(&engine, &session, query).await;
        assert!(
            said.iter()
                .any(|v| v.contains("not matched") && v.contains(reason)),
            "{query}: {said:?}"
        );
        assert!(!same_answer(&engine, &session, query).await, "{query}");
    }

    // Turned off, excluded or not chosen: the base data answers.
    sql(
        &engine,
        &session,
        "SET quarry.reflections.exclude = 'daily_city'",
    )
    .await;
    let said = verdicts(
        &engine,
        &session,
        "SELECT city, count(*) FROM demo.orders GROUP BY city",
    )
    .await;
    assert!(said.iter().any(|v| v.contains("excluded")), "{said:?}");
    sql(&engine, &session, "SET quarry.reflections.exclude = ''").await;
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders DISABLE AGGREGATE ACCELERATION",
    )
    .await;
    let said = verdicts(
        &engine,
        &session,
        "SELECT city, count(*) FROM demo.orders GROUP BY city",
    )
    .await;
    assert!(said.iter().any(|v| v.contains("disabled")), "{said:?}");
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders ENABLE AGGREGATE ACCELERATION",
    )
    .await;
    assert!(
        same_answer(
            &engine,
            &session,
            "SELECT city, count(*) FROM demo.orders GROUP BY city"
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reflections_serve_scans_of_their_columns() {
    let (cluster, engine, session) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE RAW REFLECTION slim \
         USING DISPLAY (date, city, revenue) PARTITION BY (city) LOCALSORT BY (revenue)",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION slim TIMEOUT 60").await;
    // LOCALSORT BY: every file of the materialization is in revenue order.
    let mut files = Vec::new();
    let mut dirs = vec![cluster.dir.path().join("quarry/reflections/slim")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("materialization").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "one folder per city at least: {files:?}");
    for file in &files {
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(file).expect("file"),
            )
            .expect("parquet")
            .build()
            .expect("reader");
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let column = batch
                .column_by_name("revenue")
                .expect("revenue")
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .expect("doubles")
                .clone();
            values.extend(column.iter().flatten());
        }
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{} is not sorted by revenue",
            file.display()
        );
    }
    for query in [
        "SELECT date, revenue FROM demo.orders WHERE city = 'Oslo' AND revenue > 99",
        "SELECT city, sum(revenue) FROM demo.orders GROUP BY city",
        "SELECT count(*) FROM demo.orders WHERE date = DATE '2024-01-15'",
    ] {
        assert!(
            same_answer(&engine, &session, query).await,
            "not accelerated: {query}"
        );
    }
    // Over HTTP the answer says how old its data is and which reflection gave it; the
    // job record says the same.
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .post(format!("{}/api/v1/sql", cluster.http()))
        .json(
            &serde_json::json!({"sql": "SELECT city, sum(revenue) FROM demo.orders GROUP BY city"}),
        )
        .send()
        .await
        .expect("POST /api/v1/sql")
        .json()
        .await
        .expect("json");
    assert!(answer["dataAsOfMs"].as_u64().is_some(), "{answer}");
    assert!(
        answer["reflections"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("slim: chosen")),
        "{answer}"
    );
    let id = answer["id"].as_str().expect("job id");
    let job: serde_json::Value = client
        .get(format!("{}/api/v1/jobs/{id}", cluster.http()))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("json");
    assert_eq!(job["dataAsOfMs"], answer["dataAsOfMs"], "{job}");
    let said = verdicts(
        &engine,
        &session,
        "SELECT age FROM demo.orders WHERE city = 'Oslo'",
    )
    .await;
    assert!(
        said.iter()
            .any(|v| v.contains("column age is not in the reflection")),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_and_leave_nothing() {
    let (_cluster, engine, session) = start_with_orders().await;
    for (statement, expected) in [
        (
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION r USING DIMENSIONS (nope)",
            "'nope' is not a column",
        ),
        (
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION r USING DIMENSIONS (city) MEASURES (category (SUM))",
            "SUM takes numbers",
        ),
        (
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION r USING DIMENSIONS (city BY DAY)",
            "BY DAY takes a date",
        ),
        (
            "ALTER TABLE demo.orders CREATE RAW REFLECTION r USING DISPLAY (city) PARTITION BY (date)",
            "PARTITION BY 'date'",
        ),
        ("WAIT FOR REFLECTION ghost", "does not exist"),
        (
            "ALTER TABLE demo.nope CREATE RAW REFLECTION r USING DISPLAY (a)",
            "does not exist",
        ),
    ] {
        let error = sql_error(&engine, &session, statement).await;
        assert!(error.contains(expected), "{statement}: {error}");
    }
    let none = sql_error(&engine, &session, "WAIT FOR REFLECTION r TIMEOUT 0").await;
    assert!(
        none.contains("does not exist"),
        "nothing half-created: {none}"
    );
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE RAW REFLECTION r USING DISPLAY (city)",
    )
    .await;
    let twice = sql_error(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE RAW REFLECTION r USING DISPLAY (date)",
    )
    .await;
    assert!(twice.contains("already exists"), "{twice}");
    // Dropping the dataset drops its reflections.
    sql(&engine, &session, "WAIT FOR REFLECTION r TIMEOUT 60").await;
    sql(&engine, &session, "DROP TABLE demo.orders").await;
    let gone = sql_error(&engine, &session, "WAIT FOR REFLECTION r TIMEOUT 1").await;
    assert!(gone.contains("does not exist"), "{gone}");
}

/// One generated dashboard query over demo.orders: grouping keys (sometimes a ROLLUP),
/// aggregates (some that roll up, some that do not), filters on dimensions and not,
/// HAVING, ORDER BY / LIMIT.
fn random_query(rng: &mut impl rand::Rng) -> String {
    const KEYS: &[&str] = &[
        "city",
        "category",
        "date",
        "date_trunc('month', date)",
        "date_trunc('week', date)",
        "date_trunc('quarter', date)",
        "date_trunc('year', date)",
        "extract(day from date)",
        "upper(city)",
        "category || '-' || city",
        "city = 'Lyon'",
        // Not dimensions.
        "age",
    ];
    const AGGREGATES: &[&str] = &[
        "sum(revenue)",
        "count(*)",
        "count(revenue)",
        "min(revenue)",
        "max(revenue)",
        "avg(revenue)",
        "sum(quantity)",
        "count(quantity)",
        "avg(quantity)",
        "min(quantity)",
        "max(quantity)",
        "count(DISTINCT city)",
        "count(DISTINCT category)",
        "max(category)",
        "min(date)",
        "sum(revenue) / count(*)",
        "count(*) * 2",
        "approx_distinct(age)",
        "approx_distinct(city)",
        // These do not roll up.
        "stddev(revenue)",
        "sum(revenue * 2)",
        "count(DISTINCT age)",
        "approx_distinct(quantity)",
    ];
    const FILTERS: &[&str] = &[
        "city = 'Lyon'",
        "category <> 'tools'",
        "date >= DATE '2024-01-20'",
        "date < DATE '2024-02-10'",
        "city IN ('Oslo', 'Rome')",
        "date BETWEEN DATE '2024-01-05' AND DATE '2024-01-25'",
        "(city = 'Paris' OR category = 'books')",
        "upper(category) LIKE 'G%'",
        // Not on dimensions.
        "revenue > 50",
    ];
    let mut pick = |from: &[&'static str], most: usize| -> Vec<&'static str> {
        let n = rng.random_range(0..=most);
        let mut chosen: Vec<&str> = Vec::new();
        for _ in 0..n {
            let item = from[rng.random_range(0..from.len())];
            if !chosen.contains(&item) {
                chosen.push(item);
            }
        }
        chosen
    };
    let keys = pick(KEYS, 3);
    let mut aggregates = pick(AGGREGATES, 3);
    if aggregates.is_empty() {
        aggregates.push("count(*)");
    }
    let filters = pick(FILTERS, 2);
    let having = rng.random_bool(0.2);
    let limit = rng.random_bool(0.3);
    let rollup = rng.random_bool(0.15);
    let mut select: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    select.extend(aggregates.iter().map(|a| a.to_string()));
    let mut sql = format!("SELECT {} FROM demo.orders", select.join(", "));
    if !filters.is_empty() {
        sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
    }
    if !keys.is_empty() {
        let positions: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
        if rollup {
            sql.push_str(&format!(" GROUP BY ROLLUP ({})", keys.join(", ")));
        } else {
            sql.push_str(&format!(" GROUP BY {}", positions.join(", ")));
        }
        if having {
            sql.push_str(" HAVING count(*) > 3");
        }
        if limit {
            sql.push_str(&format!(" ORDER BY {} LIMIT 7", positions.join(", ")));
        }
    }
    sql
}

/// 1,000 generated queries give the same rows with reflections on and off, and at least
/// half of them are answered by a reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_queries_answer_the_same_with_reflections() {
    use rand::SeedableRng;
    let (_cluster, engine, session) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION daily_city \
         USING DIMENSIONS (date BY DAY, city, category) \
         MEASURES (revenue (SUM, COUNT, MIN, MAX), quantity (SUM, COUNT, MIN, MAX), \
         age (APPROX_COUNT_DISTINCT))",
    )
    .await;
    sql(
        &engine,
        &session,
        "WAIT FOR REFLECTION daily_city TIMEOUT 60",
    )
    .await;
    let off = quarry_coordinator::service::in_process_session(&engine, "test");
    sql(&engine, &off, "SET quarry.reflections.enabled = false").await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261202);
    let (mut served, total) = (0, 1000);
    let started = std::time::Instant::now();
    for _ in 0..total {
        let query = random_query(&mut rng);
        let (accelerated, record) = run_sql(&engine, &session, &query).await;
        let (raw, plain) = run_sql(&engine, &off, &query).await;
        assert!(
            plain.reflections.is_empty(),
            "{query}: {:?}",
            plain.reflections
        );
        assert_eq!(lines(&accelerated), lines(&raw), "{query}");
        if record.reflections.iter().any(|r| r.contains(": chosen")) {
            assert!(record.data_as_of_ms.is_some(), "{query}: {record:?}");
            served += 1;
        }
    }
    eprintln!(
        "{total} random queries in {:?}: {served} answered by the reflection",
        started.elapsed()
    );
    assert!(
        served * 2 >= total,
        "only {served} of {total} were accelerated"
    );
}

fn write_sales(dir: &std::path::Path, part: usize, rows: usize) {
    let mut text = String::from("id,city,amount\n");
    for i in 0..rows {
        let city = ["Lyon", "Oslo", "Rome"][(i + part) % 3];
        text.push_str(&format!("{},{city},{}.5\n", part * 10_000 + i, i % 17));
    }
    std::fs::write(dir.join(format!("sales-{part}.csv")), text).expect("csv");
}

/// Files appended to a source: the stale materialization serves only within its grace
/// period and `max_staleness`; an incremental refresh then serves the new rows with the
/// answer a full refresh gives; a failing refresh marks the reflection failed and
/// queries run on the base data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_files_are_served_fresh_after_an_incremental_refresh() {
    let cluster = TestCluster::start_with(2, |c| c.slots_per_executor = 2).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    let data = cluster.dir.path().join("data/sales");
    std::fs::create_dir_all(&data).expect("data dir");
    write_sales(&data, 0, 300);
    let root = data.parent().expect("root").canonicalize().expect("root");
    for statement in [
        format!(
            "CREATE SOURCE files TYPE local WITH (root = '{}')",
            root.display()
        ),
        "CREATE SCHEMA raw".to_string(),
        "CREATE TABLE raw.sales FROM files 'sales/' FORMAT csv WITH (header = true)".to_string(),
        "ALTER TABLE raw.sales CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (amount (SUM, COUNT), id (APPROX_COUNT_DISTINCT))"
            .to_string(),
        "WAIT FOR REFLECTION by_city TIMEOUT 60".to_string(),
        "ALTER TABLE raw.sales CREATE RAW REFLECTION sales_raw USING DISPLAY (city, amount)"
            .to_string(),
        "WAIT FOR REFLECTION sales_raw TIMEOUT 60".to_string(),
    ] {
        sql(&engine, &session, &statement).await;
    }
    let query =
        "SELECT city, sum(amount), count(*), approx_distinct(id) FROM raw.sales GROUP BY city";
    let chosen = |record: &quarry_catalog::JobRecord| crate::harness::chose(record, "by_city");
    let (before, record) = run_sql(&engine, &session, query).await;
    assert!(chosen(&record), "{:?}", record.reflections);

    write_sales(&data, 1, 120);
    // Within its grace period the old materialization still answers (with old data).
    let (stale, record) = run_sql(&engine, &session, query).await;
    assert!(chosen(&record), "{:?}", record.reflections);
    assert_eq!(lines(&stale), lines(&before));
    assert!(record.data_as_of_ms.is_some());
    // Asking for current data: its inputs changed, so the base data answers.
    sql(
        &engine,
        &session,
        "SET quarry.reflections.max_staleness = '0s'",
    )
    .await;
    let (current, record) = run_sql(&engine, &session, query).await;
    assert!(!chosen(&record), "{:?}", record.reflections);
    assert!(
        record.reflections.iter().any(|r| r.contains("stale")),
        "{:?}",
        record.reflections
    );
    assert_ne!(lines(&current), lines(&before));

    // An incremental refresh reads the new file only and serves current data.
    sql(
        &engine,
        &session,
        "ALTER TABLE raw.sales REFRESH REFLECTIONS",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    sql(
        &engine,
        &session,
        "WAIT FOR REFLECTION sales_raw TIMEOUT 60",
    )
    .await;
    let method = sql(
        &engine,
        &session,
        "SELECT reflection, method, reason, inputs FROM sys.materializations ORDER BY reflection",
    )
    .await;
    let said = lines(&method);
    assert!(
        said[0].starts_with(
            "by_city|INCREMENTAL|incremental: 1 files added, none changed or removed; grouped again"
        ),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("sales_raw|INCREMENTAL|incremental: 1 files added"),
        "{said:?}"
    );
    // Grouped again: one row per city, as a full refresh has (not one per refresh).
    let rows = sql(
        &engine,
        &session,
        "SELECT rows FROM sys.reflections WHERE name = 'by_city'",
    )
    .await;
    assert_eq!(lines(&rows), ["3"]);
    let (fresh, record) = run_sql(&engine, &session, query).await;
    assert!(chosen(&record), "{:?}", record.reflections);
    assert_eq!(lines(&fresh), lines(&current));
    // A full refresh of the same definition answers the same.
    sql(
        &engine,
        &session,
        "ALTER TABLE raw.sales CREATE AGGREGATE REFLECTION by_city_full USING DIMENSIONS (city) \
         MEASURES (amount (SUM, COUNT), id (APPROX_COUNT_DISTINCT))",
    )
    .await;
    sql(
        &engine,
        &session,
        "WAIT FOR REFLECTION by_city_full TIMEOUT 60",
    )
    .await;
    sql(
        &engine,
        &session,
        "SET quarry.reflections.choose = 'by_city_full'",
    )
    .await;
    let (full, record) = run_sql(&engine, &session, query).await;
    assert!(
        crate::harness::chose(&record, "by_city_full"),
        "{:?}",
        record.reflections
    );
    assert_eq!(lines(&full), lines(&fresh));
    // The raw reflection appended to its table, which stays (no longer "replaced").
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    sql(
        &engine,
        &session,
        "SET quarry.reflections.choose = 'sales_raw'",
    )
    .await;
    let scan = "SELECT city, amount FROM raw.sales WHERE amount > 10";
    let (appended, record) = run_sql(&engine, &session, scan).await;
    assert!(
        crate::harness::chose(&record, "sales_raw"),
        "{:?}",
        record.reflections
    );
    sql(&engine, &session, "SET quarry.reflections.enabled = false").await;
    assert_eq!(lines(&appended), lines(&sql(&engine, &session, scan).await));
    sql(&engine, &session, "SET quarry.reflections.enabled = true").await;
    sql(&engine, &session, "SET quarry.reflections.choose = ''").await;
    sql(
        &engine,
        &session,
        "SET quarry.reflections.max_staleness = ''",
    )
    .await;

    // Past its grace period a materialization is never used.
    sql(
        &engine,
        &session,
        "ALTER TABLE raw.sales SET REFLECTION REFRESH NEVER GRACE '1s'",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (expired, record) = run_sql(&engine, &session, query).await;
    assert!(
        record.reflections.iter().all(|r| r.contains("expired")),
        "{:?}",
        record.reflections
    );
    assert_eq!(lines(&expired), lines(&current));
    let status = sql(
        &engine,
        &session,
        "SELECT name, status, refresh_policy FROM sys.reflections ORDER BY name",
    )
    .await;
    assert_eq!(
        lines(&status),
        [
            "by_city_full|EXPIRED|NEVER",
            "by_city|EXPIRED|NEVER",
            "sales_raw|EXPIRED|NEVER"
        ]
    );
}
