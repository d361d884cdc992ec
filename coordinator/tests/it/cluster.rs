//! Executors joining and leaving, data locality, and work bigger than executor memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, Int64Array};
use futures::TryStreamExt;
use quarry_coordinator::local_cluster::ExecutorSetup;
use quarry_coordinator::service::QueryProfile;
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::TestCluster;

async fn run(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    sql: &str,
) -> (Vec<arrow::array::RecordBatch>, QueryProfile) {
    let (batches, record) = crate::harness::run_sql(engine, session, sql).await;
    // Statements that ran no stages have no profile.
    (
        batches,
        serde_json::from_value(record.profile).unwrap_or_default(),
    )
}

/// Spills by every operator of every task of the query.
fn spill_count(profile: &QueryProfile) -> u64 {
    profile
        .stages
        .iter()
        .flat_map(|s| s.tasks.iter().flat_map(|t| t.operators.iter()))
        .map(|o| o.spill_count)
        .sum()
}

fn i64s(batches: &[arrow::array::RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64")
                .clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_register_and_leave() {
    let mut cluster = TestCluster::start(2).await;
    let membership = Arc::clone(&cluster.cluster.coordinator.cluster);
    assert_eq!(membership.active().len(), 2);
    assert_eq!(membership.total_slots(), 2);
    cluster
        .cluster
        .add_executor(ExecutorSetup {
            slots: 3,
            ..ExecutorSetup::default()
        })
        .await
        .expect("third executor");
    assert!(
        membership
            .wait_for_executors(3, Duration::from_secs(10))
            .await
    );
    assert_eq!(membership.total_slots(), 5);
    // A graceful stop deregisters at once.
    let leaving = cluster.cluster.executors.remove(0);
    leaving.shutdown().await.expect("shutdown");
    let active: Vec<String> = membership
        .active()
        .into_iter()
        .map(|e| e.executor_id)
        .collect();
    assert_eq!(
        active,
        vec!["executor-2".to_string(), "executor-3".to_string()]
    );
    // A silent one is declared lost after missed heartbeats.
    let silent = cluster.cluster.executors.remove(0);
    silent.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while membership.active().len() > 1 {
        assert!(Instant::now() < deadline, "a silent executor stayed active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.cluster.shutdown().await;
}

/// A query that runs long enough to change the cluster under it.
const SLOW_QUERY: &str = "SELECT a.city, count(*) AS n, sum(b.revenue) AS revenue \
     FROM demo.orders a JOIN demo.orders b ON a.order_id = b.order_id \
     GROUP BY a.city ORDER BY a.city";

async fn wait_for_first_task(job: &quarry_coordinator::service::JobHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while job.record().tasks_done < 1 {
        assert!(Instant::now() < deadline, "the query did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_joining_mid_query_gets_tasks_and_one_leaving_drains() {
    let mut cluster = TestCluster::start(2).await;
    let engine = cluster.cluster.coordinator.service();
    quarry_coordinator::demo::install(
        &cluster.cluster.coordinator.engine,
        &cluster.dir.path().join("demo"),
        300_000,
    )
    .await
    .expect("demo");
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    // The query runs as tasks every time: not on the coordinator, nor from the cache.
    run(&engine, &session, "SET quarry.local_execution = false").await;
    run(
        &engine,
        &session,
        "SET quarry.results_cache.enabled = false",
    )
    .await;
    let (expected, _) = run(&engine, &session, SLOW_QUERY).await;

    // Join: a third executor arrives while the first stage runs.
    let job = engine
        .submit(&session, SLOW_QUERY, None)
        .await
        .expect("submit");
    wait_for_first_task(&job).await;
    cluster
        .cluster
        .add_executor(ExecutorSetup {
            slots: 1,
            ..ExecutorSetup::default()
        })
        .await
        .expect("executor-3");
    let record = job.finished().await.expect("the query");
    let got: Vec<arrow::array::RecordBatch> =
        job.results(0, None).try_collect().await.expect("rows");
    assert_eq!(i64s(&got, 1), i64s(&expected, 1));
    let profile: QueryProfile = serde_json::from_value(record.profile).expect("profile");
    let newcomer_tasks: Vec<u32> = profile
        .stages
        .iter()
        .flat_map(|s| {
            s.tasks
                .iter()
                .filter(|t| t.executor_id == "executor-3")
                .map(move |_| s.stage_id)
        })
        .collect();
    assert!(
        !newcomer_tasks.is_empty(),
        "executor-3 got no task: {profile:?}"
    );

    // Leave: executor-1 stops gracefully while the query runs; its running task finishes.
    let job = engine
        .submit(&session, SLOW_QUERY, None)
        .await
        .expect("submit");
    wait_for_first_task(&job).await;
    let leaving = cluster.cluster.executors.remove(0);
    assert_eq!(leaving.executor_id, "executor-1");
    leaving.shutdown().await.expect("a graceful stop");
    let record = job.finished().await.expect("the query");
    let got: Vec<arrow::array::RecordBatch> =
        job.results(0, None).try_collect().await.expect("rows");
    assert_eq!(i64s(&got, 1), i64s(&expected, 1));
    let profile: QueryProfile = serde_json::from_value(record.profile).expect("profile");
    for stage in &profile.stages {
        for task in &stage.tasks {
            assert!(
                task.failed_attempts
                    .iter()
                    .all(|f| !f.contains("on executor-1")),
                "a task of the leaving executor failed instead of finishing: {:?}",
                task.failed_attempts
            );
        }
    }
    cluster.cluster.shutdown().await;
}

fn write_events(path: &Path, ids: std::ops::Range<i64>) {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("value", arrow::datatypes::DataType::Float64, false),
    ]));
    let values: Vec<f64> = ids.clone().map(|i| (i % 10) as f64).collect();
    let batch = arrow::array::RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(Float64Array::from(values)),
        ],
    )
    .expect("batch");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let file = std::fs::File::create(path).expect("file");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_scanned_by_the_executor_holding_them() {
    let mut cluster = TestCluster::start(0).await;
    // Six files over three executors' data directories, two each, interleaved so that
    // neighbouring files (which a plain scan would group together) live apart.
    let mut holder: BTreeMap<String, String> = BTreeMap::new();
    for e in 1..=3 {
        let dir = cluster.dir.path().join(format!("data-{e}"));
        for f in 0..2 {
            let n = f * 3 + (e - 1);
            write_events(
                &dir.join(format!("events/part-{n}.parquet")),
                n * 1000..(n + 1) * 1000,
            );
            holder.insert(format!("events/part-{n}.parquet"), format!("executor-{e}"));
        }
        cluster
            .cluster
            .add_executor(ExecutorSetup {
                slots: 1,
                data_dir: Some(dir),
                ..ExecutorSetup::default()
            })
            .await
            .expect("executor");
    }
    let engine = cluster.cluster.coordinator.service();
    assert!(
        cluster
            .cluster
            .coordinator
            .cluster
            .wait_for_executors(3, Duration::from_secs(10))
            .await
    );
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    run(&engine, &session, "CREATE SOURCE nodes TYPE cluster").await;
    // Scans run on the executors however small their files (this test is about which).
    run(&engine, &session, "SET quarry.local_execution = false").await;
    run(
        &engine,
        &session,
        "CREATE TABLE events FROM nodes 'events' FORMAT parquet",
    )
    .await;
    let (nodes, _) = run(
        &engine,
        &session,
        "SELECT CAST(sum(local_files) AS BIGINT) FROM sys.nodes",
    )
    .await;
    assert_eq!(i64s(&nodes, 0), vec![6]);

    let (rows, profile) = run(
        &engine,
        &session,
        "SELECT sum(id), count(*) FROM events WHERE value >= 0",
    )
    .await;
    assert_eq!(i64s(&rows, 0), vec![(0..6000).sum::<i64>()]);
    assert_eq!(i64s(&rows, 1), vec![6000]);

    let scan = profile
        .stages
        .iter()
        .find(|s| s.plan.contains("DataSourceExec"))
        .expect("a scan stage");
    let mut scanned = BTreeSet::new();
    for task in &scan.tasks {
        let source = task
            .operators
            .iter()
            .find(|o| o.operator.starts_with("DataSourceExec"))
            .expect("the task's scan");
        // file_groups={3 groups: [[a, b], [c, d], [e, f]]}: task p reads group p.
        let groups: Vec<&str> = source
            .operator
            .split("[[")
            .nth(1)
            .and_then(|rest| rest.split("]]").next())
            .map(|groups| groups.split("], [").collect())
            .unwrap_or_default();
        let group = groups
            .get(task.partition as usize)
            .copied()
            .unwrap_or_default();
        for file in holder
            .keys()
            .filter(|f| group.split(", ").any(|g| g == f.as_str()))
        {
            assert_eq!(
                holder[file], task.executor_id,
                "{file} was scanned by {} but is held by {}",
                task.executor_id, holder[file]
            );
            scanned.insert(file.clone());
        }
        assert_eq!(
            source.output_rows, 2000,
            "each executor scans its own two files"
        );
    }
    assert_eq!(scanned.len(), 6, "every file was scanned once: {scanned:?}");
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_and_aggregations_bigger_than_executor_memory_spill_and_finish() {
    let cluster = TestCluster::start_with(2, |c| {
        c.executor_memory_limit = Some(24 * 1024 * 1024);
    })
    .await;
    let engine = cluster.cluster.coordinator.service();
    quarry_coordinator::demo::install(
        &cluster.cluster.coordinator.engine,
        &cluster.dir.path().join("demo"),
        400_000,
    )
    .await
    .expect("demo");
    let session = quarry_coordinator::service::in_process_session(&engine, "test");

    let (rows, profile) = run(
        &engine,
        &session,
        "SELECT order_id, city, product_category, gender, date, customer_age, quantity, rating, revenue FROM demo.orders ORDER BY revenue DESC, order_id",
    )
    .await;
    let ids = i64s(&rows, 0);
    assert_eq!(ids.len(), 400_000);
    let revenue: Vec<f64> = rows
        .iter()
        .flat_map(|b| {
            let a = b
                .column(8)
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("revenue")
                .clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect();
    assert!(
        revenue.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending"
    );
    let spilled = spill_count(&profile);
    assert!(
        spilled > 0,
        "the sort should have spilled under a 24 MB limit"
    );

    let (rows, profile) = run(
        &engine,
        &session,
        "SELECT order_id, count(*) AS n, sum(revenue), min(city), max(product_category), avg(customer_age) FROM demo.orders GROUP BY order_id",
    )
    .await;
    assert_eq!(i64s(&rows, 1).len(), 400_000);
    assert_eq!(i64s(&rows, 1).iter().sum::<i64>(), 400_000);
    let spilled = spill_count(&profile);
    assert!(
        spilled > 0,
        "the aggregation should have spilled under a 24 MB limit"
    );

    // Nothing is left behind: memory is given back, spill files are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: Vec<_> = cluster
            .cluster
            .executors
            .iter()
            .map(|e| e.status())
            .filter(|s| s.memory_used_bytes > 0 || s.spill_files > 0 || s.exchange_entries > 0)
            .collect();
        if busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "executors kept resources: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_an_executor_is_registered() {
    let mut cluster = TestCluster::start(0).await;
    let readyz = format!("{}/readyz", cluster.http());
    let client = reqwest::Client::new();
    let answer = client.get(&readyz).send().await.expect("readyz");
    assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["ready"], false, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("executor")),
        "{body}"
    );
    // Alive all the same.
    let health = client
        .get(format!("{}/healthz", cluster.http()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), reqwest::StatusCode::OK);

    cluster
        .cluster
        .add_executor(ExecutorSetup::default())
        .await
        .expect("executor");
    assert!(
        cluster
            .cluster
            .coordinator
            .cluster
            .wait_for_executors(1, Duration::from_secs(10))
            .await
    );
    let answer = client.get(&readyz).send().await.expect("readyz");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["executors"], 1, "{body}");
    cluster.cluster.shutdown().await;
}
