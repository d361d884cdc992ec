//! Clients that go away in the middle of a query: the query is cancelled, and within
//! seconds every executor holds no task, exchange output, memory or spill file of it.
//! Task outputs go to disk here (`--exchange-memory 0`), so there are files to free.

use std::time::Duration;

use quarry_sql_tests::processes::{ProcessCluster, Rest};
use serde_json::Value;

use crate::flight::FlightSql;
use crate::shapes::data;

/// Runs for many seconds at SF0.1: lineitem joined with itself on the supplier, spread
/// over the executors as stages (whole on one executor it would have no outputs to free).
fn long_query(marker: &str) -> String {
    format!(
        "SET quarry.one_executor_max_bytes = 0; SELECT count(*) AS pairs, '{marker}' AS marker FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey"
    )
}

fn cluster(coordinator_args: &[&str]) -> ProcessCluster {
    let cluster = ProcessCluster::start_with(2, 2, coordinator_args, &["--exchange-memory", "0"]);
    cluster.create_tpch_tables(&data());
    cluster
}

/// The first job whose SQL carries `marker` that `ready` accepts (its `sys.jobs` row).
fn job_where(rest: &Rest, marker: &str, ready: impl Fn(&Value) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = rest.sql(
            &format!(
                "SELECT job_id, state, tasks_done FROM sys.jobs WHERE sql LIKE '%''{marker}''%' AND sql NOT LIKE '%sys.jobs%'"
            ),
            false,
        );
        if let Some(row) = reply["rows"].as_array().and_then(|r| r.first()) {
            if ready(row) {
                return row["job_id"].as_str().unwrap_or_default().to_string();
            }
            assert_ne!(
                row["state"], "COMPLETED",
                "the long query finished too soon"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job carrying {marker} got ready: {reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id of the job whose SQL carries `marker`, in whatever state.
fn job_with(rest: &Rest, marker: &str) -> String {
    job_where(rest, marker, |_| true)
}

/// The job whose SQL carries `marker`, once it is running with some tasks done.
fn running_job(rest: &Rest, marker: &str) -> String {
    job_where(rest, marker, |row| {
        row["state"] == "RUNNING" && row["tasks_done"].as_u64().unwrap_or(0) > 0
    })
}

/// Whether the executors report work of the query within a few heartbeats.
fn holds_work(rest: &Rest) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let busy = rest.active_executors().iter().any(|e: &Value| {
            e["running_tasks"] != 0 && (e["exchange_outputs"] != 0 || e["spill_files"] != 0)
        });
        if busy {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn assert_freed(rest: &Rest, id: &str, how: &str) {
    let job = rest.wait_state(id, "CANCELED", Duration::from_secs(15));
    let freed = rest.wait_until_idle(Duration::from_secs(10));
    eprintln!(
        "{how}: cancelled ({}), executors idle {freed:?} later",
        job["error"]["message"]
    );
}

#[test]
fn a_dropped_doget_stream_cancels_the_query_and_frees_everything() {
    let cluster = cluster(&[]);
    let rest = &cluster.rest;
    let marker = "dropped-doget";
    let flight = cluster.flight.clone();
    let sql = long_query(marker);
    let stream = rest.runtime.block_on(async {
        let mut client = FlightSql::connect(&flight).await.expect("connect");
        let info = client.0.execute(sql, None).await.expect("execute");
        let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
        let stream = client.0.do_get(ticket).await.expect("do_get");
        (client, stream)
    });
    let id = running_job(rest, marker);
    assert!(
        holds_work(rest),
        "the query holds nothing on the executors yet"
    );
    // The client goes away: its stream and connection close.
    drop(stream);
    assert_freed(rest, &id, "DoGet dropped mid-way");
}

#[test]
fn results_nobody_fetches_are_cancelled_after_the_fetch_timeout() {
    let cluster = cluster(&["--fetch-timeout", "2s"]);
    let rest = &cluster.rest;
    let marker = "never-fetched";
    let flight = cluster.flight.clone();
    let sql = long_query(marker);
    let client = rest.runtime.block_on(async {
        let mut client = FlightSql::connect(&flight).await.expect("connect");
        client.0.execute(sql, None).await.expect("execute");
        client
    });
    // It may be cancelled before it has done much: only its end matters here.
    let id = job_with(rest, marker);
    assert_freed(rest, &id, "never fetched (fetch timeout 2 s)");
    let job = rest.job(&id);
    assert!(
        job["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fetched")),
        "{job}"
    );
    drop(client);
}

#[test]
fn a_rest_request_whose_client_gave_up_cancels_the_query() {
    let cluster = cluster(&[]);
    let rest = &cluster.rest;
    let marker = "rest-gave-up";
    let sql = long_query(marker);
    let base = rest.base.clone();
    // The client's deadline passes: it closes the connection.
    let request = rest.runtime.spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/sql"))
            .timeout(Duration::from_secs(600))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
    });
    let id = running_job(rest, marker);
    assert!(
        holds_work(rest),
        "the query holds nothing on the executors yet"
    );
    request.abort();
    assert_freed(rest, &id, "REST sync request closed");
}
