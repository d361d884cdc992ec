//! Small queries: a plan whose input is small runs on the coordinator, and one whose
//! input is medium runs whole on one executor (EXPLAIN says so and why), with the answer
//! the executors give as stages; a repeated deterministic query is served from the
//! results cache until anything it read changes.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quarry_catalog::JobRecord;
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::{TestCluster, explained, run_sql, sql, two_by_two, write_parquet_file};
use crate::reflections::lines;

/// `rows` rows (id, city) in a Parquet file at `path`.
fn write_parquet(path: &Path, first: i64, rows: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
    ]));
    let cities = ["Lyon", "Oslo", "Pune"];
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(first..first + rows)),
            Arc::new(StringArray::from_iter_values(
                (first..first + rows).map(|i| cities[(i % 3) as usize]),
            )),
        ],
    )
    .expect("batch");
    write_parquet_file(path, &batch, None);
}

async fn start() -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    let (cluster, engine, session) = two_by_two().await;
    let root = cluster.dir.path().join("files");
    write_parquet(&root.join("events/part-1.parquet"), 0, 600);
    sql(
        &engine,
        &session,
        &format!(
            "CREATE SOURCE files TYPE local WITH (root = '{}')",
            root.display()
        ),
    )
    .await;
    sql(&engine, &session, "CREATE SCHEMA s").await;
    sql(
        &engine,
        &session,
        "CREATE TABLE s.events FROM files 'events/' FORMAT parquet",
    )
    .await;
    (cluster, engine, session)
}

fn explain_row(explained: &[String], name: &str) -> String {
    explained
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}|")))
        .unwrap_or_else(|| panic!("no {name} row in {explained:?}"))
        .to_string()
}

async fn explain(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    query: &str,
) -> Vec<String> {
    lines(&sql(engine, session, &format!("EXPLAIN {query}")).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_plans_run_on_the_coordinator_and_say_why() {
    let (cluster, engine, session) = start().await;
    // Twenty tables of ten rows each, joined in a chain: the kind of plan BI tools send
    // over small dimension tables.
    for t in 1..=20 {
        sql(
            &engine,
            &session,
            &format!(
                "CREATE TABLE s.t{t} AS SELECT value AS a{t}, value AS b{t}, 'x{t}' AS label \
                 FROM range(10)"
            ),
        )
        .await;
    }
    let tables: Vec<String> = (1..=20).map(|t| format!("s.t{t}")).collect();
    let joins: Vec<String> = (1..20).map(|t| format!("a{t} = b{}", t + 1)).collect();
    let twenty = format!(
        "SELECT a1, count(*) AS n FROM {} WHERE {} GROUP BY a1 ORDER BY a1",
        tables.join(", "),
        joins.join(" AND ")
    );
    let grouped =
        "SELECT city, count(*) AS n, sum(id) AS total FROM s.events GROUP BY city ORDER BY city";

    for query in [twenty.as_str(), grouped] {
        let explained = explain(&engine, &session, query).await;
        let placement = explain_row(&explained, "placement");
        assert!(
            placement.starts_with("runs on the coordinator: its input is small:")
                && placement.contains("from file metadata")
                && placement.contains("quarry.local_max_rows = 100000"),
            "{placement}"
        );
        let (local, record) = run_sql(&engine, &session, query).await;
        assert_eq!(record.tasks_total, 0, "ran as tasks: {record:?}");

        // The same query forced onto the executors gives the same answer.
        sql(&engine, &session, "SET quarry.local_execution = false").await;
        let explained = explain(&engine, &session, query).await;
        assert!(
            explain_row(&explained, "placement")
                .starts_with("runs on the executors: quarry.local_execution is off"),
            "{explained:?}"
        );
        let (distributed, record) = run_sql(&engine, &session, query).await;
        assert!(record.tasks_total > 0, "{record:?}");
        assert_eq!(lines(&local), lines(&distributed));
        sql(&engine, &session, "SET quarry.local_execution = true").await;
    }
    assert_eq!(lines(&sql(&engine, &session, &twenty).await).len(), 10);

    // Over the row limit, the plan runs whole on one executor, as one task, and EXPLAIN
    // says why; without a limit for one executor it is spread over them as stages.
    sql(&engine, &session, "SET quarry.local_max_rows = 500").await;
    let explained = explain(&engine, &session, grouped).await;
    let placement = explain_row(&explained, "placement");
    assert!(
        placement.starts_with("runs on one executor: its input is 600 rows")
            && placement.contains("at most quarry.one_executor_max_bytes = 128.0 MB"),
        "{placement}"
    );
    let stages = explained.join("\n");
    assert!(
        stages.contains("Stage 1 (executors, 1 tasks") && !stages.contains("Stage 2"),
        "{stages}"
    );
    let (whole, record) = run_sql(&engine, &session, grouped).await;
    assert_eq!(record.tasks_total, 1, "{record:?}");
    sql(&engine, &session, "SET quarry.one_executor_max_bytes = 0").await;
    let placement = explain_row(&explain(&engine, &session, grouped).await, "placement");
    assert!(
        placement.starts_with("runs on the executors: its input is 600 rows")
            && placement.contains("and quarry.one_executor_max_bytes = 0 B"),
        "{placement}"
    );
    let (spread, record) = run_sql(&engine, &session, grouped).await;
    assert!(record.tasks_total > 4, "{record:?}");
    assert_eq!(lines(&whole), lines(&spread));
    assert_eq!(
        lines(&whole),
        ["Lyon|200|59700", "Oslo|200|59900", "Pune|200|60100"]
    );
    sql(&engine, &session, "RESET quarry.one_executor_max_bytes").await;
    // Writes always go to the executors, however small.
    sql(&engine, &session, "RESET quarry.local_max_rows").await;
    let explained = explain(&engine, &session, "INSERT INTO s.t1 SELECT * FROM s.t2").await;
    assert!(
        explain_row(&explained, "placement").starts_with("runs on the executors: it writes"),
        "{explained:?}"
    );
    cluster.cluster.shutdown().await;
}

fn cached(record: &JobRecord) -> bool {
    record
        .results_cache
        .as_deref()
        .is_some_and(|note| note.starts_with("served from the results cache"))
}

fn unplanned(record: &JobRecord) -> bool {
    record
        .results_cache
        .as_deref()
        .is_some_and(|note| note.starts_with("served from the results cache without planning"))
}

/// Run `query` three times: the first run must miss, the second hit with the same rows
/// after planning, the third without planning (its shortcut was confirmed by the
/// second), so that a change after this must stop a shortcut as well.
async fn miss_then_hit(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    query: &str,
    why: &str,
) -> Vec<String> {
    let (first, record) = run_sql(engine, session, query).await;
    assert!(
        !cached(&record),
        "{why}: the first run was served from the cache"
    );
    let aggregates = record.aggregates.clone();
    let (second, record) = run_sql(engine, session, query).await;
    assert!(cached(&record), "{why}: the repeat ran again: {record:?}");
    assert!(!unplanned(&record), "{why}: {record:?}");
    assert_eq!(record.tasks_total, 0);
    assert_eq!(lines(&first), lines(&second), "{why}");
    let (third, record) = run_sql(engine, session, query).await;
    assert!(
        unplanned(&record),
        "{why}: the third run was planned: {record:?}"
    );
    assert_eq!(lines(&first), lines(&third), "{why}");
    // Its aggregates still count towards reflection recommendations.
    assert!(!aggregates.is_empty(), "{why}: {record:?}");
    assert_eq!(record.aggregates, aggregates, "{why}");
    lines(&second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_served_from_the_results_cache_until_an_input_changes() {
    let (cluster, engine, session) = start().await;
    let root = cluster.dir.path().join("files");
    let query = "SELECT city, count(*) AS n FROM s.events GROUP BY city ORDER BY city";

    // A repeat: identical rows, and the job and EXPLAIN say where they came from.
    let rows = miss_then_hit(&engine, &session, query, "a repeat").await;
    assert_eq!(rows.len(), 3);
    let explained = explain(&engine, &session, query).await;
    assert!(
        explain_row(&explained, "results_cache").starts_with("served from the results cache"),
        "{explained:?}"
    );
    let jobs = lines(
        &sql(
            &engine,
            &session,
            "SELECT results_cache FROM sys.jobs WHERE sql LIKE 'SELECT city%' ORDER BY submitted",
        )
        .await,
    );
    assert_eq!(jobs, ["false", "true", "true"], "{jobs:?}");

    // A new file in the source's folder.
    write_parquet(&root.join("events/part-2.parquet"), 600, 300);
    let after = miss_then_hit(&engine, &session, query, "a new file").await;
    assert_ne!(after, rows);

    // Distributed plans are cached as well.
    sql(&engine, &session, "SET quarry.local_execution = false").await;
    miss_then_hit(&engine, &session, query, "a distributed plan").await;
    sql(&engine, &session, "SET quarry.local_execution = true").await;

    // An INSERT into a managed table.
    sql(
        &engine,
        &session,
        "CREATE TABLE s.managed AS SELECT id, city FROM s.events",
    )
    .await;
    let managed = "SELECT city, count(*) AS n FROM s.managed GROUP BY city ORDER BY city";
    let before = miss_then_hit(&engine, &session, managed, "a managed table").await;
    sql(
        &engine,
        &session,
        "INSERT INTO s.managed VALUES (5000, 'Oslo')",
    )
    .await;
    let after = miss_then_hit(&engine, &session, managed, "after an INSERT").await;
    assert_ne!(before, after);

    // A reflection refresh: the materialization's files change.
    sql(
        &engine,
        &session,
        "ALTER TABLE s.managed CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (id (COUNT))",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let (_, record) = run_sql(&engine, &session, managed).await;
    assert!(crate::harness::chose(&record, "by_city"), "{record:?}");
    assert!(
        !cached(&record),
        "a plan over the materialization is a new entry"
    );
    let (_, record) = run_sql(&engine, &session, managed).await;
    assert!(cached(&record) && crate::harness::chose(&record, "by_city"));
    sql(
        &engine,
        &session,
        "INSERT INTO s.managed VALUES (5001, 'Pune')",
    )
    .await;
    sql(&engine, &session, "ALTER REFLECTION by_city REFRESH").await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let refreshed = miss_then_hit(&engine, &session, managed, "after a refresh").await;
    assert!(
        refreshed.iter().any(|l| l.contains("Pune")),
        "{refreshed:?}"
    );

    // now() and random() are never cached, and EXPLAIN says why.
    for volatile in [
        "SELECT now() AS t, count(*) AS n FROM s.events",
        "SELECT count(*) AS n FROM s.events WHERE random() < 2",
    ] {
        for _ in 0..2 {
            let (_, record) = run_sql(&engine, &session, volatile).await;
            assert!(!cached(&record), "{volatile}");
        }
        let explained = explain(&engine, &session, volatile).await;
        assert!(
            explain_row(&explained, "results_cache").starts_with("not cached: it calls"),
            "{explained:?}"
        );
    }
    // System tables have no snapshot to compare.
    for _ in 0..2 {
        let (_, record) = run_sql(&engine, &session, "SELECT count(*) FROM sys.jobs").await;
        assert!(!cached(&record));
    }
    // The setting turns it off.
    sql(
        &engine,
        &session,
        "SET quarry.results_cache.enabled = false",
    )
    .await;
    let (_, record) = run_sql(&engine, &session, query).await;
    assert!(!cached(&record));
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_metadata_kept_between_queries_follows_a_rewritten_file() {
    let (cluster, engine, session) = start().await;
    let root = cluster.dir.path().join("files");
    // Every run must plan: its row count comes from the file's footer, which the
    // coordinator keeps between queries while the file's size and time are the same.
    sql(
        &engine,
        &session,
        "SET quarry.results_cache.enabled = false",
    )
    .await;
    let count = "SELECT count(*) AS n, max(id) AS top FROM s.events";
    for (rows, expected) in [(600, "600|599"), (900, "900|899"), (300, "300|299")] {
        write_parquet(&root.join("events/part-1.parquet"), 0, rows);
        for _ in 0..2 {
            assert_eq!(lines(&sql(&engine, &session, count).await), [expected]);
        }
        for placement in ["true", "false"] {
            sql(
                &engine,
                &session,
                &format!("SET quarry.local_execution = {placement}"),
            )
            .await;
            assert_eq!(lines(&sql(&engine, &session, count).await), [expected]);
        }
    }
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_the_executors_ran_runs_here_again_once_its_input_is_small() {
    let (cluster, engine, session) = start().await;
    let root = cluster.dir.path().join("files");
    for statement in [
        "SET quarry.results_cache.enabled = false",
        "SET quarry.local_max_rows = 100",
    ] {
        sql(&engine, &session, statement).await;
    }
    let query = "SELECT city, count(*) AS n FROM s.events GROUP BY city ORDER BY city";
    // 600 rows: the executors run it, and the next planning goes to them at once.
    for _ in 0..2 {
        let (rows, record) = run_sql(&engine, &session, query).await;
        assert!(record.tasks_total > 0, "{record:?}");
        assert_eq!(lines(&rows), ["Lyon|200", "Oslo|200", "Pune|200"]);
    }
    let placement = explain_row(&explain(&engine, &session, query).await, "placement");
    assert!(placement.starts_with("runs on one executor"), "{placement}");
    // 30 rows now: planned for the executors first, it is placed here after all.
    write_parquet(&root.join("events/part-1.parquet"), 0, 30);
    for _ in 0..2 {
        let placement = explain_row(&explain(&engine, &session, query).await, "placement");
        assert!(
            placement.starts_with("runs on the coordinator"),
            "{placement}"
        );
        let (rows, record) = run_sql(&engine, &session, query).await;
        assert_eq!(record.tasks_total, 0, "{record:?}");
        assert_eq!(lines(&rows), ["Lyon|10", "Oslo|10", "Pune|10"]);
    }
    cluster.cluster.shutdown().await;
}

/// The root reader's line of EXPLAIN ANALYZE (the coordinator's read of the last stage).
async fn root_reader(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    query: &str,
) -> String {
    let analyzed = explained(engine, session, "EXPLAIN ANALYZE", query).await;
    let root = analyzed
        .split_once("Stage root")
        .unwrap_or_else(|| panic!("no root stage in {analyzed}"))
        .1;
    root.lines()
        .find(|l| l.contains("ShuffleReaderExec"))
        .map(|l| format!("{l}\n{analyzed}"))
        .unwrap_or_else(|| panic!("no root reader in {analyzed}"))
}

/// A small answer comes back with the results of the last stage's tasks, so the
/// coordinator fetches nothing from the executors to read it; a big one is fetched. Both
/// as stages over the executors and whole on one executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_answer_comes_back_with_its_tasks_and_a_big_one_is_fetched() {
    let (cluster, engine, session) = start().await;
    for statement in [
        "SET quarry.results_cache.enabled = false",
        "SET quarry.local_max_rows = 100",
    ] {
        sql(&engine, &session, statement).await;
    }
    let small = "SELECT city, count(*) AS n FROM s.events GROUP BY city ORDER BY city";
    // 360,000 rows of two numbers: over 256 KB from each task.
    let big = "SELECT count(*) FROM (SELECT a.id, b.id AS other FROM s.events a, s.events b \
               ORDER BY 1, 2 LIMIT 400000)";
    for limit in ["0", "134217728"] {
        sql(
            &engine,
            &session,
            &format!("SET quarry.one_executor_max_bytes = {limit}"),
        )
        .await;
        let reader = root_reader(&engine, &session, small).await;
        let line = reader.lines().next().unwrap_or_default();
        assert!(
            line.contains("rows=3") && !line.contains("fetched="),
            "{reader}"
        );
        assert_eq!(
            lines(&sql(&engine, &session, small).await),
            ["Lyon|200", "Oslo|200", "Pune|200"]
        );
        let pairs = "SELECT a.id, b.id AS other FROM s.events a, s.events b";
        let reader = root_reader(&engine, &session, pairs).await;
        let line = reader.lines().next().unwrap_or_default();
        assert!(
            line.contains("rows=360000") && line.contains("fetched="),
            "{reader}"
        );
        assert_eq!(lines(&sql(&engine, &session, big).await), ["360000"]);
    }
    cluster.cluster.shutdown().await;
}
