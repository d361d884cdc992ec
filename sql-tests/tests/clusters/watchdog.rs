//! The watchdog, a safety net under the scheduler: a query that stalls on purpose (its
//! scan never yields) fails with an error naming the stage, and frees its slots so the
//! next query runs.

use std::time::Duration;

use quarry_sql_tests::processes::ProcessCluster;

#[test]
fn a_stalled_query_fails_naming_its_stage_and_frees_its_slots() {
    let cluster = ProcessCluster::start(2, 2, &["--test-sources"]);
    let rest = &cluster.rest;
    let id = rest.start("SET quarry.stall_timeout = '2s';\nSELECT count(*) FROM sys.test_stall");
    let (job, took) = rest.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["state"], "FAILED", "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("stage 1 made no progress") && message.contains("StallExec"),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "failed before the timeout: {took:?}"
    );
    eprintln!("stalled query failed after {took:?}: {message}");
    // Every slot is free again.
    rest.wait_until_idle(Duration::from_secs(10));

    // Without the watchdog setting the default (5 min) leaves the query running.
    let id = rest.start("SELECT count(*) FROM sys.test_stall");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rest.job(&id)["state"], "RUNNING");
    let cancelled = rest.runtime.block_on(async {
        rest.client
            .post(format!("{}/api/v1/jobs/{id}/cancel", rest.base))
            .send()
            .await
            .map(|r| r.status())
    });
    assert!(cancelled.is_ok_and(|s| s.is_success()));
    rest.wait_until_idle(Duration::from_secs(10));
}
