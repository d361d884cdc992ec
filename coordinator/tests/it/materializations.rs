//! Replaced materializations: kept while a query planned over them still runs, removed
//! once none does.

use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};

use crate::harness::{TestCluster, sql};
use crate::reflections::orders_on;

async fn location(
    engine: &std::sync::Arc<dyn quarry_coordinator::service::QueryService>,
    session: &quarry_coordinator::service::SessionHandle,
) -> String {
    let batches = sql(
        engine,
        session,
        "SELECT location FROM sys.materializations WHERE reflection = 'by_city'",
    )
    .await;
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text")
        .clone();
    assert_eq!(column.len(), 1);
    column.value(0).to_string()
}

/// The files under a materialization's folder (removing one deletes its files; empty
/// directories may stay on a local disk).
fn files(location: &str) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count(&path) } else { 1 }
                })
                .sum()
        })
    }
    count(std::path::Path::new(
        location.strip_prefix("file://").expect("a local folder"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_materializations_stay_while_a_query_reads_them() {
    let cluster = TestCluster::start_with(2, |c| {
        c.slots_per_executor = 2;
        c.coordinator.test_sources = true;
    })
    .await;
    let (_cluster, engine, session) = orders_on(cluster).await;
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (revenue (SUM))",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let first = location(&engine, &session).await;
    assert!(files(&first) > 0, "{first}");

    // A query answered from it that never ends (its other branch never yields).
    let reader = engine
        .submit(
            &session,
            "SELECT city, sum(revenue) FROM demo.orders GROUP BY city \
             UNION ALL SELECT 'stalled', CAST(count(*) AS DOUBLE) FROM sys.test_stall",
            None,
        )
        .await
        .expect("submit");
    let considered = reader.record().reflections;
    assert!(
        considered.iter().any(|r| r.starts_with("by_city: chosen")),
        "{considered:?}"
    );

    sql(&engine, &session, "ALTER REFLECTION by_city REFRESH").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let now = location(&engine, &session).await;
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "the refresh did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Past the least time an old materialization is kept, the running query holds it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(files(&first) > 0, "removed while read: {first}");
    assert!(files(&second) > 0);

    // Once that query is gone, so is the old data; the new one serves.
    assert!(reader.cancel("test over"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while files(&first) > 0 {
        assert!(
            Instant::now() < deadline,
            "not removed after its reader ended ({}): {first}",
            reader.state()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = sql(
        &engine,
        &session,
        "SELECT count(*) FROM (SELECT city, sum(revenue) FROM demo.orders GROUP BY city)",
    )
    .await;
    assert_eq!(rows[0].num_rows(), 1);
    assert!(files(&second) > 0);
}

/// A query answered from a small materialization runs on the coordinator (no stages on
/// executors); the same query on the base data runs as tasks on executors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_materializations_are_read_on_the_coordinator() {
    let (_cluster, engine, session) = crate::reflections::start_with_orders().await;
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (revenue (SUM))",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let query = "SELECT city, sum(revenue) FROM demo.orders GROUP BY city";
    let (accelerated, record) = crate::harness::run_sql(&engine, &session, query).await;
    assert!(
        crate::harness::chose(&record, "by_city"),
        "{:?}",
        record.reflections
    );
    assert_eq!(record.tasks_total, 0, "{record:?}");
    let explained =
        crate::reflections::lines(&sql(&engine, &session, &format!("EXPLAIN {query}")).await);
    assert!(
        explained
            .iter()
            .any(|l| l.contains("runs on the coordinator: it reads only small materializations")),
        "{explained:?}"
    );
    sql(&engine, &session, "SET quarry.reflections.enabled = false").await;
    sql(&engine, &session, "SET quarry.local_execution = false").await;
    let (raw, record) = crate::harness::run_sql(&engine, &session, query).await;
    assert!(record.tasks_total > 0, "{record:?}");
    assert_eq!(
        crate::reflections::lines(&accelerated),
        crate::reflections::lines(&raw)
    );
}
