//! Admission control: with one query allowed to run and one to wait, a second query is
//! QUEUED (visible in REST and `sys.jobs`), a third is refused at once with
//! RESOURCE_EXHAUSTED (HTTP 429 / gRPC RESOURCE_EXHAUSTED), a queued query gives up after
//! the queue timeout, statements the coordinator answers alone skip the queue, and
//! `quarry.query_timeout` stops a query that runs too long.

use std::time::{Duration, Instant};

use quarry_sql_tests::processes::ProcessCluster;

use crate::flight::FlightSql;

const STALL: &str = "SELECT count(*) FROM sys.test_stall";

#[test]
fn queries_queue_are_refused_past_a_full_queue_and_time_out() {
    let cluster = ProcessCluster::start(
        1,
        2,
        &[
            "--test-sources",
            "--max-running-queries",
            "1",
            "--max-queued-queries",
            "1",
            "--queue-timeout",
            "4s",
        ],
    );
    let rest = &cluster.rest;
    let running = rest.start(STALL);
    rest.wait_state(&running, "RUNNING", Duration::from_secs(10));
    let queued = rest.start(&format!("{STALL} -- the second"));
    rest.wait_state(&queued, "QUEUED", Duration::from_secs(10));
    let listed = rest.sql(
        &format!("SELECT state FROM sys.jobs WHERE job_id = '{queued}'"),
        false,
    );
    assert_eq!(listed["rows"][0]["state"], "QUEUED", "{listed}");
    let health = rest.get("/healthz");
    assert_eq!(health["queries"]["running"], 1, "{health}");
    assert_eq!(health["queries"]["queued"], 1, "{health}");

    // The queue is full: refused at once, over REST and over Flight SQL.
    let (status, body) = rest.runtime.block_on(async {
        let response = rest
            .client
            .post(format!("{}/api/v1/sql", rest.base))
            .json(&serde_json::json!({"sql": STALL, "async": true}))
            .send()
            .await
            .expect("reply");
        let status = response.status().as_u16();
        (
            status,
            response.json::<serde_json::Value>().await.expect("json"),
        )
    });
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("queue is full")),
        "{body}"
    );
    let flight = cluster.flight.clone();
    let refused = rest.runtime.block_on(async {
        let mut client = FlightSql::connect(&flight).await.expect("connect");
        client.query(STALL).await
    });
    let status = refused.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");

    // The coordinator still answers what it answers alone, at once.
    let started = Instant::now();
    let reply = rest.sql("SELECT 1 AS one", false);
    assert_eq!(reply["rows"][0]["one"], 1, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The queued query gives up after the queue timeout.
    let (job, _) = rest.wait_job(&queued, Duration::from_secs(20));
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["error"]["code"], "RESOURCE_EXHAUSTED", "{job}");

    // Once the running query ends, the next one runs.
    let _ = rest.runtime.block_on(
        rest.client
            .post(format!("{}/api/v1/jobs/{running}/cancel", rest.base))
            .send(),
    );
    rest.wait_state(&running, "CANCELED", Duration::from_secs(10));
    let next = rest.start(STALL);
    rest.wait_state(&next, "RUNNING", Duration::from_secs(10));
    let _ = rest.runtime.block_on(
        rest.client
            .post(format!("{}/api/v1/jobs/{next}/cancel", rest.base))
            .send(),
    );
    rest.wait_until_idle(Duration::from_secs(10));
}

#[test]
fn a_query_past_its_time_limit_is_stopped() {
    let cluster = ProcessCluster::start(1, 2, &["--test-sources"]);
    let rest = &cluster.rest;
    let id = rest.start(&format!("SET quarry.query_timeout = '1500ms';\n{STALL}"));
    let (job, took) = rest.wait_job(&id, Duration::from_secs(20));
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["error"]["code"], "DEADLINE_EXCEEDED", "{job}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    rest.wait_until_idle(Duration::from_secs(10));

    let bad = rest.sql("SET quarry.query_timeout = 'soon'", false);
    assert_eq!(bad["code"], "INVALID_ARGUMENT", "{bad}");
}
