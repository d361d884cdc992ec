//! No statement takes the coordinator or an executor down: the shapes that overflowed a
//! stack, or ran without end, get an answer or an error naming the limit, through the
//! engine and over REST, and `SELECT 1` answers afterwards.

use std::time::Duration;

use arrow::array::Int64Array;
use reqwest::StatusCode;
use serde_json::json;

use std::sync::Arc;

use futures::TryStreamExt;
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::{TestCluster, sql};
use crate::rest::Api;

/// The rows of `text`, or the error its client sees (quoting only its start: these
/// statements are long).
async fn outcome(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    text: &str,
) -> Result<Vec<arrow::array::RecordBatch>, String> {
    let job = engine
        .submit(session, text, None)
        .await
        .map_err(|e| e.message)?;
    job.results(0, None)
        .try_collect()
        .await
        .map_err(|e| e.message)
}

async fn sql_error(engine: &Arc<dyn QueryService>, session: &SessionHandle, text: &str) -> String {
    match outcome(engine, session, text).await {
        Ok(_) => panic!("{}... should fail", &text[..text.len().min(80)]),
        Err(e) => e,
    }
}

fn sum(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

fn first_i64(batches: &[arrow::array::RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("an integer")
        .value(0)
}

/// `n + 1 - 1 + 1 ...`: operators alternate, so nothing flattens the chain on its way to
/// the executors (it used to exceed protobuf's 100 levels there).
fn alternating(column: &str, terms: usize) -> String {
    let mut expr = column.to_string();
    for i in 0..terms {
        expr.push_str(if i % 2 == 0 { " + 1" } else { " - 1" });
    }
    expr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_wide_statements_get_answers_or_limit_errors() {
    let test = TestCluster::start(2).await;
    let engine = &test.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(engine, "admin");

    // The 1,000-term sum still answers.
    assert_eq!(first_i64(&sql(engine, &session, &sum(1_000)).await), 1_000);
    for terms in [5_000, 100_000] {
        let e = sql_error(engine, &session, &sum(terms)).await;
        assert!(e.contains("expression depth"), "{terms}: {e}");
        assert!(e.contains("--max-expression-depth"), "{e}");
    }
    let case = format!(
        "SELECT {}1{}",
        "CASE WHEN 1 = 1 THEN ".repeat(5_000),
        " END".repeat(5_000)
    );
    let calls = format!("SELECT {}1{}", "abs(".repeat(5_000), ")".repeat(5_000));
    for deep in [case, calls] {
        let e = sql_error(engine, &session, &deep).await;
        assert!(e.contains("nesting") && e.contains("--max-nesting"), "{e}");
    }
    let union = (0..2_000)
        .map(|i| format!("SELECT {i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let e = sql_error(engine, &session, &union).await;
    assert!(
        e.contains("plan depth") && e.contains("--max-plan-depth"),
        "{e}"
    );
    let joins = |n: usize| {
        let tables: Vec<String> = (0..n)
            .map(|i| format!("(VALUES (1)) AS t{i}(a{i})"))
            .collect();
        format!("SELECT count(*) FROM {}", tables.join(", "))
    };
    // A thousand tables in one FROM list are refused before planning (which grows as the
    // cube of the list); a few hundred are answered.
    let e = sql_error(engine, &session, &joins(1_000)).await;
    assert!(
        e.contains("tables and subqueries") && e.contains("--max-relations"),
        "{e}"
    );
    assert_eq!(first_i64(&sql(engine, &session, &joins(300)).await), 1);
    let e = sql_error(
        engine,
        &session,
        &format!("{}SELECT 1", "EXPLAIN ".repeat(3_000)),
    )
    .await;
    assert!(e.contains("EXPLAIN cannot explain"), "{e}");

    // A deep expression over a table runs where the table's files are: on the executors
    // (a table this small would run on the coordinator by default).
    sql(engine, &session, "SET quarry.local_execution = false").await;
    sql(engine, &session, "CREATE SCHEMA deep").await;
    sql(
        engine,
        &session,
        "CREATE TABLE deep.n AS SELECT * FROM (VALUES (1), (2), (3)) AS v(n)",
    )
    .await;
    let (batches, record) = crate::harness::run_sql(
        engine,
        &session,
        &format!(
            "SELECT count(*) FROM deep.n WHERE {} > 1",
            alternating("n", 300)
        ),
    )
    .await;
    assert_eq!(first_i64(&batches), 2);
    assert!(
        record.tasks_total > 0,
        "the filter ran as tasks on the executors"
    );

    // Views nest up to the planner's bound; the next one is refused by name.
    sql(
        engine,
        &session,
        "CREATE VIEW deep.v0 AS SELECT n FROM deep.n",
    )
    .await;
    let mut refused = None;
    for i in 1..500 {
        let text = format!("CREATE VIEW deep.v{i} AS SELECT n FROM deep.v{}", i - 1);
        if let Err(e) = outcome(engine, &session, &text).await {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("a view nested 500 deep is refused");
    assert!(at > 30, "views nest {at} deep");
    assert!(e.contains("nests views more than"), "{e}");
    let rows = sql(
        engine,
        &session,
        &format!("SELECT count(*) FROM deep.v{}", at - 1),
    )
    .await;
    assert_eq!(first_i64(&rows), 3);

    // Settings DataFusion sizes allocations from are bounded (found by the internal fuzz
    // target: a batch size this large made an executor abort allocating).
    for (key, value) in [
        ("datafusion.execution.batch_size", "1782259218880304056"),
        ("datafusion.execution.target_partitions", "4000000000"),
    ] {
        let e = sql_error(engine, &session, &format!("SET {key} = {value}")).await;
        assert!(e.contains("may be at most"), "{e}");
    }

    assert_eq!(first_i64(&sql(engine, &session, "SELECT 1").await), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_recursive_query_stops_at_the_default_bound() {
    let test = TestCluster::start(1).await;
    let engine = &test.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(engine, "admin");
    let runaway =
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t";
    let started = std::time::Instant::now();
    let e = sql_error(engine, &session, runaway).await;
    assert!(e.contains("quarry.max_recursive_iterations"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // A recursion that ends answers, and the bound is the session's to change.
    let bounded = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 50) \
                   SELECT count(*) FROM t";
    assert_eq!(first_i64(&sql(engine, &session, bounded).await), 50);
    sql(engine, &session, "SET quarry.max_recursive_iterations = 10").await;
    let e = sql_error(engine, &session, bounded).await;
    assert!(e.contains("ran 10 iterations"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_deep_long_and_large_requests_clearly() {
    let test = TestCluster::start_with(1, |config| {
        config.coordinator.limits.request_body = 512 * 1024;
        config.coordinator.limits.connections = 8;
    })
    .await;
    let api = Api::new(test.http());
    for terms in [5_000, 100_000] {
        let (status, body) = api.post("/api/v1/sql", json!({"sql": sum(terms)})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], "INVALID_ARGUMENT");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("expression depth")),
            "{body}"
        );
    }
    // Past the body limit: 413 and a JSON error that does not echo the body.
    let big = format!("SELECT '{}'", "x".repeat(1_000_000));
    let (status, body) = api.post("/api/v1/sql", json!({"sql": big})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("--max-request-body"), "{body}");
    assert!(message.len() < 300, "{message}");

    // Past the connection cap: 429 with the usual JSON error, then service again.
    let addr = test.cluster.coordinator.http_addr;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", test.http()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let text = refused.text().await.unwrap_or_default();
    assert!(text.contains("--max-connections"), "{text}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = api.post("/api/v1/sql", json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_limits_answer_what_the_defaults_refuse() {
    let test = TestCluster::start_with(1, |config| {
        config.coordinator.limits.plan_depth = 2_000;
        config.coordinator.limits.expression_depth = 5_000;
    })
    .await;
    let engine = &test.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(engine, "admin");
    assert_eq!(first_i64(&sql(engine, &session, &sum(5_000)).await), 5_000);
    let union = (0..2_000)
        .map(|i| format!("SELECT {i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows: usize = sql(engine, &session, &union)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 2_000);
}
