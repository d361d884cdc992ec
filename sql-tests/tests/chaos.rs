//! Executors killed with SIGKILL in the middle of TPC-H queries, with real processes: a
//! coordinator and three executors, each its own `quarry` process.
//!
//! For each of the 22 queries, spread over the executors as stages, one executor is
//! killed once the query's first stage has started; the answer must still equal
//! in-process DataFusion's. The killed executor is started again before the next query.
//! Then queries that run whole on one executor lose two of the three executors while they
//! run. At the end every executor is killed during a query, which must then fail within
//! 30 seconds, and the survivors of earlier kills must hold no tasks, outputs, memory or
//! spill files.

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::tpch;

const SF: f64 = 0.1;

/// At SF 0.1 a query would run whole on one executor: spread it over the executors.
const SPREAD: &str = "SET quarry.one_executor_max_bytes = 0; ";

#[test]
fn killing_one_slot_executors_mid_query_keeps_answers_right() {
    kill_executors_mid_query(1);
}

/// Executors on real machines run a task per core: the same with two slots each.
#[test]
fn killing_two_slot_executors_mid_query_keeps_answers_right() {
    kill_executors_mid_query(2);
}

/// A cluster of `executors` processes with `slots` slots each over TPC-H at SF, and
/// DataFusion's answers to the 22 queries.
fn tpch_cluster(executors: usize, slots: usize) -> (ProcessCluster, Vec<Vec<String>>) {
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, 3).expect("TPC-H data");
    let cluster = ProcessCluster::start(executors, slots, &[]);
    let expected = cluster
        .rest
        .runtime
        .block_on(tpch::datafusion_answers(&data, 3))
        .expect("DataFusion's answers");
    cluster.create_tpch_tables(&data);
    (cluster, expected)
}

fn kill_executors_mid_query(slots: usize) {
    let (mut cluster, expected) = tpch_cluster(3, slots);

    let mut report = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n);
        let id = cluster.rest.start(&format!("{SPREAD}{sql}"));
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

    // A query on one executor runs as one task: killing two of the three executors as it
    // starts kills that task's executor two times in three, and the task runs again on
    // the survivor.
    for (round, n) in [21, 9, 18].into_iter().enumerate() {
        let sql = tpch::query(n);
        let id = cluster.rest.start(&sql);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            cluster.rest.job(&id)["state"].as_str(),
            Some("RUNNING" | "COMPLETED")
        ) {
            assert!(Instant::now() < deadline, "Q{n} never started running");
            std::thread::sleep(Duration::from_millis(2));
        }
        let victims: Vec<String> = (1..=3)
            .filter(|e| *e != round + 1)
            .map(|e| format!("executor-{e}"))
            .collect();
        for victim in &victims {
            cluster.kill_executor(victim);
        }
        let (job, took) = cluster.rest.wait_job(&id, Duration::from_secs(120));
        assert_eq!(
            job["state"], "COMPLETED",
            "Q{n} failed after {victims:?} were killed: {job}"
        );
        assert_eq!(
            cluster.rest.answer(&id, &sql),
            expected[n - 1],
            "Q{n} on one executor answered differently after {victims:?} were killed"
        );
        eprintln!("Q{n} on one executor, {victims:?} killed: {took:?}");
        cluster.rest.wait_until_idle(Duration::from_secs(10));
        for victim in &victims {
            cluster.add_executor(victim);
        }
        cluster.rest.wait_for_executors(3);
    }

    // Killing every executor fails the query cleanly, within 30 seconds. The query joins
    // lineitem with itself on the supplier (hundreds of millions of pairs), so it is
    // still running when the executors die.
    let sql = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey";
    let id = cluster.rest.start(&format!("{SPREAD}{sql}"));
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

/// SIGKILL of an executor in the middle of a CTAS: the write stage's lost tasks run
/// again elsewhere, and the table ends up with exactly the query's rows (none twice,
/// none missing); files of the killed attempts are never committed and are swept.
/// The kill is tried until it lands while write tasks run, each try checked in full.
#[test]
fn killing_an_executor_mid_ctas_writes_each_row_once() {
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, 3).expect("TPC-H data");
    let mut cluster = ProcessCluster::start(3, 2, &[]);
    cluster.create_tpch_tables(&data);
    let expected = cluster
        .rest
        .sql("SELECT count(*) AS n FROM lineitem", false);
    let expected = COPIES * expected["rows"][0]["n"].as_u64().expect("lineitem rows");
    let created = cluster.rest.sql("CREATE SCHEMA w", false);
    assert_eq!(created["state"], "COMPLETED", "{created}");
    let mut retried = 0;
    for attempt in 0..6 {
        let table = format!("li{attempt}");
        retried = ctas_with_a_kill(&mut cluster, &table, expected);
        cluster.add_executor("executor-2");
        cluster.rest.wait_for_executors(3);
        if retried > 0 {
            break;
        }
    }
    assert!(retried > 0, "no kill landed while write tasks ran");
}

/// The CTAS writes lineitem this many times over (each copy numbered): a few million rows.
const COPIES: u64 = 5;

/// One CTAS with executor-2 killed as soon as it runs; the number of tasks run again.
fn ctas_with_a_kill(cluster: &mut ProcessCluster, table: &str, expected: u64) -> u64 {
    let copies: Vec<String> = (0..COPIES)
        .map(|copy| format!("SELECT *, {copy} AS copy_no FROM lineitem"))
        .collect();
    let id = cluster.rest.start(&format!(
        "CREATE TABLE w.{table} PARTITION BY (l_returnflag) AS {}",
        copies.join(" UNION ALL ")
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = cluster.rest.job(&id);
        if job["state"] == "RUNNING" || job["state"] == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "the CTAS never ran: {job}");
        std::thread::sleep(Duration::from_millis(1));
    }
    cluster.kill_executor("executor-2");
    let (job, took) = cluster.rest.wait_job(&id, Duration::from_secs(180));
    assert_eq!(job["state"], "COMPLETED", "the CTAS failed: {job}");
    let counted = cluster.rest.sql(
        &format!(
            "SELECT count(*) AS n, count(DISTINCT (l_orderkey * 10 + l_linenumber) * {COPIES} + copy_no) AS d FROM w.{table}"
        ),
        false,
    );
    let (n, d) = (
        counted["rows"][0]["n"].as_u64(),
        counted["rows"][0]["d"].as_u64(),
    );
    assert_eq!(n, Some(expected), "rows written: {counted}");
    assert_eq!(d, Some(expected), "distinct rows: {counted}");
    // Only committed files remain once the sweep after the write has run.
    let folder = cluster
        .dir
        .path()
        .join(format!("coordinator/warehouse/w/{table}"));
    let history = cluster
        .rest
        .sql(&format!("DESCRIBE HISTORY w.{table}"), false);
    let committed = history["rows"][1]["files_added"]
        .as_u64()
        .expect("files added");
    let deadline = Instant::now() + Duration::from_secs(20);
    while data_files(&folder) as u64 != committed {
        assert!(
            Instant::now() < deadline,
            "{} files on disk, {committed} committed",
            data_files(&folder)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let retried = cluster.rest.sql(
        &format!("SELECT count(*) AS n FROM sys.tasks WHERE job_id = '{id}' AND (attempt > 0 OR failed_attempts > 0)"),
        false,
    );
    let retried = retried["rows"][0]["n"].as_u64().unwrap_or(0);
    eprintln!(
        "CTAS of {expected} rows with executor-2 killed: {took:?}, {committed} files, {retried} tasks retried"
    );
    retried
}

/// Parquet files of a table, its log left out.
fn data_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("_delta_log") {
                n += data_files(&path);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

/// SIGKILL of an executor while a reflection of lineitem refreshes: its tasks run again
/// elsewhere, the refresh completes, and the reflection answers exactly as lineitem does.
/// Tried until the kill lands while refresh tasks run.
#[test]
fn killing_an_executor_mid_refresh_still_builds_the_reflection() {
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, 3).expect("TPC-H data");
    let mut cluster = ProcessCluster::start(3, 2, &[]);
    cluster.create_tpch_tables(&data);
    let mut retried = 0;
    for attempt in 0..6 {
        retried = refresh_with_a_kill(&mut cluster, &format!("flags{attempt}"));
        cluster.add_executor("executor-2");
        cluster.rest.wait_for_executors(3);
        if retried > 0 {
            break;
        }
    }
    assert!(retried > 0, "no kill landed while refresh tasks ran");
}

/// One reflection built with executor-2 killed once its refresh runs; the tasks retried.
fn refresh_with_a_kill(cluster: &mut ProcessCluster, name: &str) -> u64 {
    let created = cluster.rest.sql(
        &format!(
            "ALTER TABLE lineitem CREATE AGGREGATE REFLECTION {name} USING DIMENSIONS \
             (l_returnflag, l_linestatus, l_shipdate BY DAY) \
             MEASURES (l_quantity (SUM, COUNT), l_extendedprice (SUM, MIN, MAX))"
        ),
        false,
    );
    assert_eq!(created["state"], "COMPLETED", "{created}");
    let message = created["rows"][0]["result"].as_str().unwrap_or_default();
    let job = message
        .rsplit("refresh job ")
        .next()
        .expect("the refresh job's id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = cluster.rest.job(&job)["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state == "RUNNING" || state == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "the refresh never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    cluster.kill_executor("executor-2");
    let (done, took) = cluster.rest.wait_job(&job, Duration::from_secs(180));
    assert_eq!(done["state"], "COMPLETED", "the refresh failed: {done}");
    let waited = cluster
        .rest
        .sql(&format!("WAIT FOR REFLECTION {name} TIMEOUT 60"), false);
    assert_eq!(waited["state"], "COMPLETED", "{waited}");
    let query = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS q, count(*) AS n, \
                 max(l_extendedprice) AS m FROM lineitem \
                 WHERE l_shipdate <= DATE '1998-09-02' GROUP BY 1, 2 ORDER BY 1, 2";
    let accelerated = cluster.rest.sql(
        &format!("SET quarry.reflections.choose = '{name}'; {query}"),
        false,
    );
    let used = accelerated["reflections"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| {
            r.as_str()
                .is_some_and(|r| r.starts_with(&format!("{name}: chosen")))
        });
    assert!(used, "{accelerated}");
    let off = cluster.rest.sql(
        &format!("SET quarry.reflections.enabled = false; {query}"),
        false,
    );
    assert!(off["reflections"].is_null(), "{off}");
    assert_eq!(accelerated["rows"], off["rows"]);
    let retried = cluster.rest.sql(
        &format!("SELECT count(*) AS n FROM sys.tasks WHERE job_id = '{job}' AND (attempt > 0 OR failed_attempts > 0)"),
        false,
    );
    let retried = retried["rows"][0]["n"].as_u64().unwrap_or(0);
    eprintln!(
        "refresh of lineitem with executor-2 killed: {took:?}, {retried} tasks retried; {}",
        waited["rows"][0]["result"]
    );
    retried
}

/// Executors drain, as on Kubernetes: on SIGTERM, or on `POST /drain` (the preStop hook)
/// and then SIGTERM, an executor leaves the cluster (no new tasks), lets its running tasks
/// finish and exits cleanly; the queries running across it complete with the right answers.
#[test]
fn draining_executors_mid_query_keeps_answers_right() {
    let (mut cluster, expected) = tpch_cluster(2, 2);
    let http = quarry_sql_tests::processes::free_port();
    let http_flag = format!("127.0.0.1:{http}");
    let token_flags = [
        "--http",
        http_flag.as_str(),
        "--metrics-token",
        "scrape-token",
    ];
    cluster.add_executor_with("executor-3", &token_flags);
    cluster.rest.wait_for_executors(3);

    let mut report = Vec::new();
    let mut caught_running = 0;
    for (n, by_hook) in [(1, false), (9, true), (18, false), (21, true)] {
        let sql = tpch::query(n);
        let id = cluster.rest.start(&format!("{SPREAD}{sql}"));
        // Drain once the victim runs a task of the query (its own /metrics says so).
        let deadline = Instant::now() + Duration::from_secs(30);
        let caught = loop {
            if running_tasks(&cluster, http) > 0 {
                break true;
            }
            let job = cluster.rest.job(&id);
            if job["state"] == "COMPLETED" {
                break false;
            }
            assert!(Instant::now() < deadline, "Q{n} never started: {job}");
            std::thread::sleep(Duration::from_millis(2));
        };
        caught_running += usize::from(caught);
        let victim = "executor-3";
        let started = Instant::now();
        if by_hook {
            let reply: serde_json::Value = cluster.rest.runtime.block_on(async {
                let url = format!("http://127.0.0.1:{http}/drain");
                let client = reqwest::Client::new();
                let refused = client.post(&url).send().await.expect("drain call");
                assert_eq!(refused.status(), 401, "no secret, no drain");
                let reply = client
                    .post(&url)
                    .bearer_auth(quarry_sql_tests::processes::CLUSTER_SECRET)
                    .send()
                    .await
                    .expect("drain call");
                assert_eq!(reply.status(), 200);
                reply.json().await.expect("JSON")
            });
            assert_eq!(reply["drained"], true, "{reply}");
        }
        let pid = cluster.executors[victim].pid().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exited = loop {
            if let Some(status) = cluster.executors.get_mut(victim).and_then(|p| p.exited()) {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "{victim} did not stop after draining"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            exited.success(),
            "{victim} exited with {exited}: {}",
            cluster.log_tail(victim)
        );
        let (job, took) = cluster.rest.wait_job(&id, Duration::from_secs(120));
        assert_eq!(
            job["state"], "COMPLETED",
            "Q{n} after draining {victim}: {job}"
        );
        assert_eq!(cluster.rest.answer(&id, &sql), expected[n - 1], "Q{n}");
        report.push(format!(
            "Q{n}: drained {victim} by {}{} in {:?}, query done {took:?} later",
            if by_hook {
                "POST /drain + SIGTERM"
            } else {
                "SIGTERM"
            },
            if caught {
                " while it ran a task"
            } else {
                " (the query had ended)"
            },
            started.elapsed()
        ));
        cluster.executors.remove(victim);
        cluster.add_executor_with(victim, &token_flags);
        cluster.rest.wait_for_executors(3);
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        caught_running >= 2,
        "drains mostly landed after the queries: {report:?}"
    );

    // The restarted executor's byte counters: a join's stages exchange data across the
    // three executors, so it sends outputs and its tasks read others' (run again, not
    // answered from the results cache: Q9 ran above).
    let sql = format!(
        "{SPREAD}SET quarry.results_cache.enabled = false; {}",
        tpch::query(9)
    );
    let id = cluster.rest.start(&sql);
    let (job, _) = cluster.rest.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job["state"], "COMPLETED", "{job}");
    let text = metrics_text(&cluster, http);
    let counter = |name: &str| metric(&text, name).unwrap_or(0.0);
    assert!(
        counter("quarry_executor_exchange_sent_bytes_total") > 0.0,
        "{text}"
    );
    assert!(
        counter("quarry_executor_exchange_received_bytes_total") > 0.0,
        "{text}"
    );
}

/// Executor-3's /metrics, scraped with its token.
fn metrics_text(cluster: &ProcessCluster, http: u16) -> String {
    cluster.rest.runtime.block_on(async {
        let reply = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{http}/metrics"))
            .bearer_auth("scrape-token")
            .send()
            .await;
        match reply {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

/// Tasks executor-3 runs now, from its own `/metrics`.
/// The value of an unlabelled series in a /metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

fn running_tasks(cluster: &ProcessCluster, http: u16) -> u64 {
    metric(
        &metrics_text(cluster, http),
        "quarry_executor_running_tasks",
    )
    .map_or(0, |v| v as u64)
}
