//! Managed tables: CREATE TABLE AS SELECT into partitioned Delta tables written by the
//! executors, INSERT, reads back through Quarry and through the `deltalake` package,
//! and what a bad write leaves behind (nothing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::{TestCluster, python, run_sql, sql, sql_error};

/// The tutorial's raw orders: date, city, revenue, one CSV file per half of the month.
fn write_orders(dir: &Path) -> (usize, f64) {
    let cities = ["Lyon", "Paris", "New York", "Oslo"];
    let mut total = 0.0;
    let mut rows = 0;
    for half in 0..2 {
        let mut text = String::from("order_id,date,city,revenue\n");
        for i in 0..300 {
            let day = 1 + half * 5 + i % 5;
            let revenue = (i * 7 % 101) as f64 + 0.5;
            total += revenue;
            rows += 1;
            text.push_str(&format!(
                "{},2024-03-{day:02},{},{revenue}\n",
                half * 1000 + i,
                cities[i % cities.len()]
            ));
        }
        std::fs::write(dir.join(format!("orders-{half}.csv")), text).expect("csv");
    }
    (rows, total)
}

fn int(batches: &[RecordBatch], column: usize) -> i64 {
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let col = b.column(column);
            if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
                a.value(0)
            } else if let Some(a) = col.as_any().downcast_ref::<UInt64Array>() {
                a.value(0) as i64
            } else {
                panic!("not an integer column: {:?}", col.data_type())
            }
        })
        .sum()
}

fn float(batches: &[RecordBatch], column: usize) -> f64 {
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            b.column(column)
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("a float column")
                .value(0)
        })
        .sum()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

async fn start_with_orders() -> (
    TestCluster,
    Arc<dyn QueryService>,
    SessionHandle,
    usize,
    f64,
) {
    let cluster = TestCluster::start_with(2, |c| c.slots_per_executor = 2).await;
    let data = cluster.dir.path().join("data");
    std::fs::create_dir_all(data.join("orders")).expect("data dir");
    let (rows, total) = write_orders(&data.join("orders"));
    let root = data.canonicalize().expect("root").display().to_string();
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    sql(
        &engine,
        &session,
        &format!("CREATE SOURCE files TYPE local WITH (root = '{root}')"),
    )
    .await;
    sql(&engine, &session, "CREATE SCHEMA raw").await;
    sql(
        &engine,
        &session,
        "CREATE TABLE raw.orders FROM files 'orders/' FORMAT csv WITH (header = true)",
    )
    .await;
    sql(&engine, &session, "CREATE SCHEMA mart").await;
    (cluster, engine, session, rows, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctas_writes_a_partitioned_delta_table_that_other_engines_read() {
    let (cluster, engine, session, rows, total) = start_with_orders().await;
    let created = sql(
        &engine,
        &session,
        "CREATE TABLE mart.daily PARTITION BY (date) AS \
         SELECT date, city, sum(revenue) AS revenue, count(*) AS orders \
         FROM raw.orders GROUP BY date, city",
    )
    .await;
    // 10 days x 4 cities.
    assert_eq!(int(&created, 0), 40, "rows written");

    let back = sql(
        &engine,
        &session,
        "SELECT sum(orders), sum(revenue), count(*) FROM mart.daily",
    )
    .await;
    assert_eq!(int(&back, 0), rows as i64);
    assert!((float(&back, 1) - total).abs() < 1e-6, "revenue read back");
    assert_eq!(int(&back, 2), 40);

    // Hive folders under the warehouse, one commit after the create.
    let table_dir = cluster.dir.path().join("quarry/warehouse/mart/daily");
    let files = files_under(&table_dir);
    let data_files: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!data_files.is_empty(), "{files:?}");
    assert!(
        data_files.iter().all(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|d| d.to_string_lossy().starts_with("date=2024-03-"))
        }),
        "{data_files:?}"
    );
    assert!(
        table_dir
            .join("_delta_log/00000000000000000001.json")
            .exists()
    );

    // A filter on the partition column reads that day's files only.
    let explained = sql(
        &engine,
        &session,
        "EXPLAIN SELECT city, revenue FROM mart.daily WHERE date = DATE '2024-03-02'",
    )
    .await;
    let text: String = explained
        .iter()
        .flat_map(|b| {
            let plans = b
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("plan text");
            (0..plans.len())
                .map(|i| plans.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(text.contains("date=2024-03-02"), "{text}");
    assert!(!text.contains("date=2024-03-03"), "{text}");
    let day = sql(
        &engine,
        &session,
        "SELECT count(*), sum(orders) FROM mart.daily WHERE date = DATE '2024-03-02'",
    )
    .await;
    assert_eq!(int(&day, 0), 4);

    // INSERT adds a version; the count is the real number of rows.
    let inserted = sql(
        &engine,
        &session,
        "INSERT INTO mart.daily VALUES (DATE '2024-04-01', 'Lyon', 10.0, 1), \
         (DATE '2024-04-01', 'Oslo', 5.0, 2)",
    )
    .await;
    assert_eq!(int(&inserted, 0), 2);
    let after = sql(
        &engine,
        &session,
        "SELECT count(*), sum(orders) FROM mart.daily",
    )
    .await;
    assert_eq!(int(&after, 0), 42);
    assert_eq!(int(&after, 1), rows as i64 + 3);

    // The deltalake package reads the same rows.
    let script = format!(
        "import deltalake\n\
         t = deltalake.DeltaTable({path:?})\n\
         data = t.to_pyarrow_table()\n\
         print(t.version(), data.num_rows, sum(data.column('orders').to_pylist()), \
         sorted(t.metadata().partition_columns), flush=True)\n\
         import os\n\
         os._exit(0)  # the package's threads can abort a normal interpreter exit\n",
        path = table_dir.display().to_string()
    );
    let output = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(printed, format!("2 42 {} ['date']", rows + 3));

    // SHOW TABLES and DESCRIBE know it like any table.
    let described = sql(&engine, &session, "DESCRIBE mart.daily").await;
    assert_eq!(described.iter().map(|b| b.num_rows()).sum::<usize>(), 4);

    sql(&engine, &session, "DROP TABLE mart.daily").await;
    assert!(
        files_under(&table_dir).is_empty(),
        "the data goes with the table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_refused_and_leave_nothing() {
    let (cluster, engine, session, _, _) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "CREATE TABLE mart.people (id INT NOT NULL, name VARCHAR)",
    )
    .await;
    let error = sql_error(
        &engine,
        &session,
        "INSERT INTO mart.people VALUES (1, 'a'), (NULL, 'b')",
    )
    .await;
    assert!(error.contains("'id'") && error.contains("row 2"), "{error}");
    let empty = sql(&engine, &session, "SELECT count(*) FROM mart.people").await;
    assert_eq!(int(&empty, 0), 0, "nothing of the failed insert is visible");
    let table_dir = cluster.dir.path().join("quarry/warehouse/mart/people");
    let mut leftovers = Vec::new();
    for _ in 0..50 {
        leftovers = files_under(&table_dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        if leftovers.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        leftovers.is_empty(),
        "files of the failed write: {leftovers:?}"
    );

    // Values that do not fit their column are refused by row and column, nothing kept.
    for (statement, row, column, value) in [
        (
            "INSERT INTO mart.people VALUES (1, 'a'), (2, 'b'), ('three', 'c')",
            "row 3",
            "'id'",
            "three",
        ),
        (
            "INSERT INTO mart.people VALUES (1, 'a'), (3000000000, 'b')",
            "row 2",
            "'id'",
            "3000000000",
        ),
        (
            "INSERT INTO mart.people (name, id) SELECT city, CAST(order_id AS BIGINT) * 10000000 \
             FROM raw.orders ORDER BY order_id",
            "row ",
            "'id'",
            "0000000",
        ),
    ] {
        let error = sql_error(&engine, &session, statement).await;
        assert!(
            error.contains(row) && error.contains(column) && error.contains(value),
            "{statement}: {error}"
        );
        assert!(error.contains("does not fit"), "{error}");
    }
    let empty = sql(&engine, &session, "SELECT count(*) FROM mart.people").await;
    assert_eq!(
        int(&empty, 0),
        0,
        "nothing of the refused inserts is visible"
    );
    for (statement, expected) in [
        (
            "INSERT INTO mart.people (nope) VALUES (1)",
            "no column 'nope'",
        ),
        (
            "INSERT INTO mart.people (id, id) VALUES (1, 2)",
            "named twice",
        ),
        (
            "INSERT INTO mart.people VALUES (1)",
            "1 values for 2 columns",
        ),
        (
            "INSERT INTO mart.people (name) VALUES ('x')",
            "NULL in NOT NULL column 'id'",
        ),
    ] {
        let error = sql_error(&engine, &session, statement).await;
        assert!(error.contains(expected), "{statement}: {error}");
    }
    // Named columns in any order; the others get NULL.
    sql(
        &engine,
        &session,
        "INSERT INTO mart.people (name, id) VALUES ('z', 26)",
    )
    .await;
    let named = sql(
        &engine,
        &session,
        "SELECT count(*) FROM mart.people WHERE id = 26 AND name = 'z'",
    )
    .await;
    assert_eq!(int(&named, 0), 1);
    sql(&engine, &session, "DELETE FROM mart.people").await;

    // A CTAS whose query fails while it runs leaves no table.
    let failed = sql_error(
        &engine,
        &session,
        "CREATE TABLE mart.broken AS SELECT CAST(city AS INT) AS x FROM raw.orders",
    )
    .await;
    assert!(
        failed.contains("Lyon") || failed.contains("cast"),
        "{failed}"
    );
    let gone = sql_error(&engine, &session, "SELECT * FROM mart.broken").await;
    assert!(gone.contains("not found"), "{gone}");
    assert!(files_under(&cluster.dir.path().join("quarry/warehouse/mart/broken")).is_empty());

    let exists = sql_error(&engine, &session, "CREATE TABLE mart.people (x INT)").await;
    assert!(exists.contains("already exists"), "{exists}");
    sql(
        &engine,
        &session,
        "CREATE TABLE IF NOT EXISTS mart.people (x INT)",
    )
    .await;

    let read_only = sql_error(
        &engine,
        &session,
        "INSERT INTO raw.orders SELECT * FROM raw.orders",
    )
    .await;
    assert!(read_only.contains("read-only"), "{read_only}");

    // OVERWRITE replaces the rows; an append after it adds to them.
    sql(
        &engine,
        &session,
        "INSERT INTO mart.people VALUES (1, 'a'), (2, 'b')",
    )
    .await;
    sql(
        &engine,
        &session,
        "INSERT OVERWRITE mart.people SELECT 3, 'c'",
    )
    .await;
    let names = sql(
        &engine,
        &session,
        "SELECT count(*), max(id) FROM mart.people",
    )
    .await;
    assert_eq!(int(&names, 0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_each_land_once() {
    let (_cluster, engine, session, _, _) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "CREATE TABLE mart.events (client INT, n INT)",
    )
    .await;
    let mut tasks = Vec::new();
    for client in 0..4 {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            let session = quarry_coordinator::service::in_process_session(&engine, "test");
            for n in 0..10 {
                run_sql(
                    &engine,
                    &session,
                    &format!("INSERT INTO mart.events VALUES ({client}, {n})"),
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let counts = sql(
        &engine,
        &session,
        "SELECT count(*), count(DISTINCT client * 100 + n) FROM mart.events",
    )
    .await;
    assert_eq!(int(&counts, 0), 40);
    assert_eq!(int(&counts, 1), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_writes_plain_files_into_a_writable_source_only() {
    let (cluster, engine, session, rows, _) = start_with_orders().await;
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let root = out.canonicalize().expect("root").display().to_string();
    sql(
        &engine,
        &session,
        &format!("CREATE SOURCE exports TYPE local WITH (root = '{root}', writable = true)"),
    )
    .await;
    let copied = sql(
        &engine,
        &session,
        "COPY (SELECT order_id, city, date FROM raw.orders) TO exports 'by_city' \
         WITH (FORMAT csv, PARTITION BY (city))",
    )
    .await;
    assert_eq!(int(&copied, 0), rows as i64);
    let folders: Vec<String> = std::fs::read_dir(out.join("by_city"))
        .expect("copied folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders.len(), 4, "{folders:?}");
    assert!(
        folders.iter().all(|f| f.starts_with("city=")),
        "{folders:?}"
    );
    let csv_rows: usize = files_under(&out.join("by_city"))
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .expect("csv file")
                .lines()
                .skip(1)
                .count()
        })
        .sum();
    assert_eq!(csv_rows, rows);

    // A table copied as Parquet reads back as a table over the files.
    sql(
        &engine,
        &session,
        "COPY raw.orders TO exports 'orders_parquet' WITH (COMPRESSION snappy)",
    )
    .await;
    sql(
        &engine,
        &session,
        "CREATE TABLE raw.copied FROM exports 'orders_parquet/' FORMAT parquet",
    )
    .await;
    let back = sql(&engine, &session, "SELECT count(*) FROM raw.copied").await;
    assert_eq!(int(&back, 0), rows as i64);

    let read_only = sql_error(&engine, &session, "COPY raw.orders TO files 'x'").await;
    assert!(read_only.contains("read-only"), "{read_only}");
    let escape = sql_error(&engine, &session, "COPY raw.orders TO exports '../x'").await;
    assert!(escape.contains("leaves the root"), "{escape}");
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b
                .column(column)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("a text column");
            (0..col.len())
                .map(|i| col.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The plan text of `EXPLAIN statement`.
async fn explain(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    statement: &str,
) -> String {
    let explained = sql(engine, session, &format!("EXPLAIN {statement}")).await;
    strings(&explained, 1).join("\n")
}

/// Each file's logged bounds keep a scan (and a DELETE) off files that cannot match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_statistics_prune_scans_and_deletes() {
    let (_cluster, engine, session, _, _) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "CREATE TABLE mart.ranges (id BIGINT, tag VARCHAR)",
    )
    .await;
    for block in 0..4 {
        let values: Vec<String> = (0..100)
            .map(|i| format!("({}, 't{block}')", block * 100 + i))
            .collect();
        let statement = format!("INSERT INTO mart.ranges VALUES {}", values.join(", "));
        sql(&engine, &session, &statement).await;
    }
    // Distinct files named in the plan (EXPLAIN prints the plan more than once).
    let files = |plan: &str| {
        plan.split(['[', ']', ',', ' '])
            .filter(|token| token.ends_with(".parquet"))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let all = explain(&engine, &session, "SELECT * FROM mart.ranges").await;
    assert_eq!(files(&all), 4, "{all}");
    for (filter, expected_files, expected_rows) in [
        ("id >= 350", 1, 50),
        ("id BETWEEN 150 AND 250", 2, 101),
        ("id = 999", 0, 0),
        ("tag = 't2'", 1, 100),
        ("id < 10 OR tag = 't3'", 2, 110),
        // Bounds say nothing about a function of the column: every file is read.
        ("id % 100 = 0", 4, 4),
    ] {
        let query = format!("SELECT * FROM mart.ranges WHERE {filter}");
        let plan = explain(&engine, &session, &query).await;
        assert_eq!(files(&plan), expected_files, "{filter}: {plan}");
        let counted = sql(
            &engine,
            &session,
            &format!("SELECT count(*) FROM mart.ranges WHERE {filter}"),
        )
        .await;
        assert_eq!(int(&counted, 0), expected_rows, "{filter}");
    }
    // A DELETE rewrites only the file that may hold its rows.
    let deleted = sql(&engine, &session, "DELETE FROM mart.ranges WHERE id = 120").await;
    assert_eq!(int(&deleted, 0), 1);
    let history = sql(&engine, &session, "DESCRIBE HISTORY mart.ranges").await;
    let last = history
        .iter()
        .rev()
        .find(|b| b.num_rows() > 0)
        .expect("history");
    let column = |i: usize| {
        last.column(i)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("a count")
            .value(last.num_rows() - 1)
    };
    assert_eq!(
        (column(3), column(4)),
        (1, 1),
        "one file written again, one removed"
    );
    let left = sql(
        &engine,
        &session,
        "SELECT count(*), sum(id) FROM mart.ranges",
    )
    .await;
    assert_eq!(
        (int(&left, 0), int(&left, 1)),
        (399, (0..400).sum::<i64>() - 120)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_time_travel_read_older_versions() {
    let (_cluster, engine, session, _, _) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "CREATE TABLE mart.t (id INT, city VARCHAR) PARTITION BY (city)",
    )
    .await;
    sql(
        &engine,
        &session,
        "INSERT INTO mart.t VALUES (1, 'a'), (2, 'a'), (3, 'b')",
    )
    .await;
    sql(&engine, &session, "INSERT INTO mart.t VALUES (4, 'b')").await;
    // A row inside a file: the file is written again without it.
    let one = sql(&engine, &session, "DELETE FROM mart.t WHERE id = 2").await;
    assert_eq!(int(&one, 0), 1);
    // A whole partition: its files are dropped, nothing is rewritten.
    let two = sql(&engine, &session, "DELETE FROM mart.t WHERE city = 'b'").await;
    assert_eq!(int(&two, 0), 2);
    let now = sql(&engine, &session, "SELECT count(*), sum(id) FROM mart.t").await;
    assert_eq!((int(&now, 0), int(&now, 1)), (1, 1));

    for (version, count, sum) in [(1, 3, 6), (2, 4, 10), (3, 3, 8), (4, 1, 1)] {
        let old = sql(
            &engine,
            &session,
            &format!("SELECT count(*), sum(id) FROM mart.t VERSION AS OF {version}"),
        )
        .await;
        assert_eq!(
            (int(&old, 0), int(&old, 1)),
            (count, sum),
            "version {version}"
        );
    }
    let latest = sql(
        &engine,
        &session,
        "SELECT count(*) FROM mart.t TIMESTAMP AS OF '2999-01-01 00:00:00'",
    )
    .await;
    assert_eq!(int(&latest, 0), 1);
    let history = sql(&engine, &session, "DESCRIBE HISTORY mart.t").await;
    assert_eq!(
        strings(&history, 2),
        ["CREATE TABLE", "WRITE", "WRITE", "DELETE", "DELETE"]
    );

    let missing = sql_error(&engine, &session, "SELECT * FROM mart.t VERSION AS OF 99").await;
    assert!(missing.contains("no version 99"), "{missing}");
    let unversioned = sql_error(
        &engine,
        &session,
        "SELECT * FROM raw.orders VERSION AS OF 1",
    )
    .await;
    assert!(unversioned.contains("has no versions"), "{unversioned}");

    // A table whose own name looks like a version is itself, not mart.orders at version 2.
    sql(&engine, &session, "CREATE TABLE mart.orders (id INT)").await;
    sql(&engine, &session, "INSERT INTO mart.orders VALUES (1)").await;
    sql(&engine, &session, "INSERT INTO mart.orders VALUES (2)").await;
    sql(
        &engine,
        &session,
        r#"CREATE TABLE mart."orders@v2" (id INT)"#,
    )
    .await;
    sql(
        &engine,
        &session,
        r#"INSERT INTO mart."orders@v2" VALUES (7)"#,
    )
    .await;
    let itself = sql(&engine, &session, r#"SELECT sum(id) FROM mart."orders@v2""#).await;
    assert_eq!(int(&itself, 0), 7);
    let at_one = sql(
        &engine,
        &session,
        r#"SELECT sum(id) FROM mart."orders@v2" VERSION AS OF 1"#,
    )
    .await;
    assert_eq!(int(&at_one, 0), 7);
    let orders_v2 = sql(
        &engine,
        &session,
        "SELECT sum(id) FROM mart.orders VERSION AS OF 2",
    )
    .await;
    assert_eq!(int(&orders_v2, 0), 3);

    let everything = sql(&engine, &session, "DELETE FROM mart.t").await;
    assert_eq!(int(&everything, 0), 1);
    let empty = sql(&engine, &session, "SELECT count(*) FROM mart.t").await;
    assert_eq!(int(&empty, 0), 0);
}

/// Many small INSERTs each land (one version each); OPTIMIZE then leaves a handful of
/// files with the same rows, and VACUUM removes the files no version needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_inserts_then_optimize_and_vacuum() {
    let (cluster, engine, session, _, _) = start_with_orders().await;
    sql(
        &engine,
        &session,
        "CREATE TABLE mart.ticks (n INT, kind VARCHAR) PARTITION BY (kind)",
    )
    .await;
    let inserts = 1000;
    for n in 0..inserts {
        let kind = if n % 2 == 0 { "even" } else { "odd" };
        sql(
            &engine,
            &session,
            &format!("INSERT INTO mart.ticks VALUES ({n}, '{kind}')"),
        )
        .await;
    }
    let table_dir = cluster.dir.path().join("quarry/warehouse/mart/ticks");
    // Data files: checkpoints in _delta_log are Parquet too.
    let parquet = |dir: &Path| {
        files_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .filter(|p| !p.to_string_lossy().contains("_delta_log"))
            .count()
    };
    assert_eq!(parquet(&table_dir), inserts);
    let before = sql(&engine, &session, "SELECT count(*), sum(n) FROM mart.ticks").await;
    let compacted = sql(&engine, &session, "OPTIMIZE TABLE mart.ticks").await;
    assert_eq!(int(&compacted, 0), inserts as i64, "files compacted");
    let after = sql(&engine, &session, "SELECT count(*), sum(n) FROM mart.ticks").await;
    assert_eq!(
        (int(&after, 0), int(&after, 1)),
        (int(&before, 0), int(&before, 1))
    );
    let explained = sql(&engine, &session, "EXPLAIN SELECT n FROM mart.ticks").await;
    let plan = strings(&explained, 1).join("\n");
    let listed = plan.matches(".zstd.parquet").count();
    assert!(listed <= 4, "a handful of files after OPTIMIZE: {plan}");
    // Old files stay for time travel until VACUUM removes them.
    let old = sql(
        &engine,
        &session,
        "SELECT count(*) FROM mart.ticks VERSION AS OF 5",
    )
    .await;
    assert_eq!(int(&old, 0), 5);
    let vacuumed = sql(&engine, &session, "VACUUM mart.ticks RETAIN 0 HOURS").await;
    assert_eq!(
        strings(&vacuumed, 0),
        [format!("Removed {inserts} files from mart.ticks")]
    );
    assert!(parquet(&table_dir) <= 4, "{}", parquet(&table_dir));
    let still = sql(&engine, &session, "SELECT count(*) FROM mart.ticks").await;
    assert_eq!(int(&still, 0), inserts as i64);
}

/// A Delta table another engine writes: registered from a source, read at its latest
/// version on each query, never written or deleted by Quarry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_delta_tables_are_read_at_their_latest_version() {
    let (cluster, engine, session, _, _) = start_with_orders().await;
    let folder = cluster.dir.path().join("data/ext");
    let write = |rows: &str| {
        let script = format!(
            "import deltalake, pyarrow as pa, os\n\
             t = pa.table({{'id': [{rows}], 'part': ['x'] * len([{rows}])}})\n\
             deltalake.write_deltalake({path:?}, t, mode='append', partition_by=['part'])\n\
             os._exit(0)\n",
            path = folder.display().to_string()
        );
        let output = Command::new(python())
            .args(["-c", &script])
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    write("1, 2, 3");
    sql(
        &engine,
        &session,
        "CREATE TABLE raw.ext FROM files 'ext' FORMAT delta",
    )
    .await;
    let first = sql(&engine, &session, "SELECT count(*), sum(id) FROM raw.ext").await;
    assert_eq!((int(&first, 0), int(&first, 1)), (3, 6));
    write("10");
    let second = sql(&engine, &session, "SELECT count(*), sum(id) FROM raw.ext").await;
    assert_eq!(
        (int(&second, 0), int(&second, 1)),
        (4, 16),
        "the latest version"
    );
    let old = sql(
        &engine,
        &session,
        "SELECT count(*) FROM raw.ext VERSION AS OF 0",
    )
    .await;
    assert_eq!(int(&old, 0), 3);
    let refused = sql_error(&engine, &session, "INSERT INTO raw.ext VALUES (5, 'x')").await;
    assert!(refused.contains("read-only"), "{refused}");
    sql(&engine, &session, "DROP TABLE raw.ext").await;
    assert!(
        folder.join("_delta_log").exists(),
        "dropping a registered table leaves its files"
    );
}

/// One executor with one slot: a scan of one file group has no exchange above it, and
/// the commit above must still stay on the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_one_slot_executor() {
    let cluster = TestCluster::start(1).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    sql(&engine, &session, "CREATE TABLE public.t AS SELECT 1 AS id").await;
    sql(&engine, &session, "INSERT INTO public.t VALUES (2)").await;
    let copied = sql(
        &engine,
        &session,
        "INSERT INTO public.t SELECT id + 10 FROM public.t",
    )
    .await;
    assert_eq!(int(&copied, 0), 2);
    let deleted = sql(&engine, &session, "DELETE FROM public.t WHERE id = 1").await;
    assert_eq!(int(&deleted, 0), 1);
    sql(&engine, &session, "OPTIMIZE TABLE public.t").await;
    let out = cluster.dir.path().join("out");
    let copy = sql(
        &engine,
        &session,
        &format!("COPY public.t TO '{}/' WITH (FORMAT json)", out.display()),
    )
    .await;
    assert_eq!(int(&copy, 0), 3);
    let left = sql(&engine, &session, "SELECT count(*), sum(id) FROM public.t").await;
    assert_eq!((int(&left, 0), int(&left, 1)), (3, 25));
}
