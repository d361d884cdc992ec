//! Executors killed with SIGKILL in the middle of TPC-H queries, with real processes: a
//! coordinator and three executors, each its own `quarry` process.
//!
//! For each of the 22 queries one executor is killed once the query's first stage has
//! started; the answer must still equal in-process DataFusion's. The killed executor is
//! started again before the next query. At the end every executor is killed during a
//! query, which must then fail within 30 seconds, and the survivors of earlier kills must
//! hold no tasks, outputs, memory or spill files.

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::tpch;

const SF: f64 = 0.1;

#[test]
fn killing_one_slot_executors_mid_query_keeps_answers_right() {
    kill_executors_mid_query(1);
}

/// Executors on real machines run a task per core: the same with two slots each.
#[test]
fn killing_two_slot_executors_mid_query_keeps_answers_right() {
    kill_executors_mid_query(2);
}

fn kill_executors_mid_query(slots: usize) {
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, 3).expect("TPC-H data");
    let mut cluster = ProcessCluster::start(3, slots, &[]);
    let expected = cluster
        .rest
        .runtime
        .block_on(tpch::datafusion_answers(&data, 3))
        .expect("DataFusion's answers");
    cluster.create_tpch_tables(&data);

    let mut report = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n);
        let id = cluster.rest.start(&sql);
        // Kill one executor once the first stage has started; for even queries wait
        // until some tasks have finished, so outputs they made are lost with it.
        let finished_tasks = if n % 2 == 0 { 1 } else { 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = cluster.rest.job(&id);
            let state = job["state"].as_str().unwrap_or("").to_string();
            let done = job["progress"]["tasksDone"].as_u64().unwrap_or(0);
            if state == "RUNNING" && done >= finished_tasks || state == "COMPLETED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Q{n} never started running: {job}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let victim = format!("executor-{}", (n - 1) % 3 + 1);
        cluster.kill_executor(&victim);
        let (job, took) = cluster.rest.wait_job(&id, Duration::from_secs(120));
        assert_eq!(
            job["state"], "COMPLETED",
            "Q{n} failed after {victim} was killed: {job}"
        );
        let got = cluster.rest.answer(&id, &sql);
        assert_eq!(
            got,
            expected[n - 1],
            "Q{n} answered differently after {victim} was killed"
        );
        let attempts = cluster.rest.sql(
            &format!("SELECT count(*) AS retried FROM sys.tasks WHERE job_id = '{id}' AND (attempt > 0 OR failed_attempts > 0)"),
            false,
        );
        report.push(format!(
            "Q{n}: killed {victim}, {took:?}, retried tasks {}",
            attempts["rows"][0]["retried"]
        ));
        // The survivors let go of the query.
        cluster.rest.wait_until_idle(Duration::from_secs(10));
        cluster.add_executor(&victim);
        cluster.rest.wait_for_executors(3);
    }
    eprintln!("{slots} slot(s) per executor:\n{}", report.join("\n"));

    // Killing every executor fails the query cleanly, within 30 seconds. The query joins
    // lineitem with itself on the supplier (hundreds of millions of pairs), so it is
    // still running when the executors die.
    let sql = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey";
    let id = cluster.rest.start(sql);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.rest.job(&id)["state"] != "RUNNING" {
        assert!(Instant::now() < deadline, "the query never started running");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    cluster.executors.clear();
    let (job, took) = cluster.rest.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["error"]["code"], "UNAVAILABLE", "{job}");
    eprintln!(
        "with every executor killed the query failed in {took:?}: {}",
        job["error"]["message"]
    );
}
