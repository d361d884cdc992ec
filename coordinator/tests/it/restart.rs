//! The catalog across restarts: everything acknowledged is still there after a clean
//! stop, and after SIGKILL in the middle of writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_coordinator::local_cluster::{LocalCluster, LocalClusterConfig};
use serde_json::{Value, json};

use crate::harness::QuarryProcess;

async fn sql(
    engine: &Arc<dyn quarry_coordinator::service::QueryService>,
    session: &quarry_coordinator::service::SessionHandle,
    sql: &str,
) -> Vec<arrow::array::RecordBatch> {
    crate::harness::run_sql(engine, session, sql).await.0
}

fn count(batches: &[arrow::array::RecordBatch]) -> i64 {
    use arrow::array::{Array, Int64Array};
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("t.csv"), "k,v\n1,a\n2,b\n3,c\n").expect("csv");
    let root = data.canonicalize().expect("root").display().to_string();
    let state = dir.path().join("quarry");
    {
        let cluster = LocalCluster::start(LocalClusterConfig::new(&state, 1))
            .await
            .expect("start");
        let engine = cluster.coordinator.service();
        let session = quarry_coordinator::service::in_process_session(&engine, "test");
        sql(
            &engine,
            &session,
            &format!("CREATE SOURCE files TYPE local WITH (root = '{root}')"),
        )
        .await;
        sql(&engine, &session, "CREATE SCHEMA s").await;
        sql(&engine, &session, "CREATE TABLE s.t FROM files 't.csv'").await;
        sql(
            &engine,
            &session,
            "CREATE VIEW s.v AS SELECT k FROM s.t WHERE v <> 'b'",
        )
        .await;
        sql(
            &engine,
            &session,
            &format!("CREATE EXTERNAL TABLE s.e STORED AS CSV LOCATION '{root}/t.csv'"),
        )
        .await;
        cluster.shutdown().await;
    }
    let cluster = LocalCluster::start(LocalClusterConfig::new(&state, 1))
        .await
        .expect("restart");
    let engine = cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    assert_eq!(
        count(&sql(&engine, &session, "SELECT count(*) FROM s.t").await),
        3
    );
    assert_eq!(
        count(&sql(&engine, &session, "SELECT count(*) FROM s.v").await),
        2
    );
    assert_eq!(
        count(&sql(&engine, &session, "SELECT count(*) FROM s.e").await),
        3
    );
    // Job history survives too.
    let completed = Some(quarry_coordinator::service::JobState::Completed);
    let jobs = engine.list_jobs(&session, completed, 100).expect("jobs");
    assert!(
        jobs.iter().any(|j| j.sql.contains("CREATE VIEW s.v")),
        "job history was lost"
    );
    cluster.shutdown().await;
}

/// Acknowledged REST writes survive SIGKILL of the real coordinator process.
#[test]
fn kill_nine_during_rest_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().display().to_string();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for cycle in 0..5 {
        let mut quarry = QuarryProcess::spawn(&[
            "coordinator",
            "--dir",
            &dir_arg,
            "--flight",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
            "--internal",
            "127.0.0.1:0",
        ]);
        let http = quarry.http.clone();
        // Everything acknowledged so far is there.
        let known: Vec<String> = acked.lock().expect("lock").clone();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let listed: Value = client
                .get(format!("{http}/api/v1/catalog/schemas/public"))
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            let names: Vec<String> = listed["datasets"]
                .as_array()
                .expect("datasets")
                .iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect();
            for name in &known {
                assert!(
                    names.contains(name),
                    "cycle {cycle}: acknowledged view {name} was lost"
                );
            }
        });
        // Write views as fast as possible and kill the process mid-stream.
        let writer = {
            let acked = Arc::clone(&acked);
            let http = http.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(async move {
                    let client = reqwest::Client::new();
                    for i in 0.. {
                        let name = format!("v{cycle}_{i}");
                        let response = client
                            .post(format!("{http}/api/v1/catalog/schemas/public/datasets"))
                            .json(&json!({"type": "view", "name": name, "sql": "SELECT 1 AS one"}))
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status().as_u16() == 201 => {
                                acked.lock().expect("lock").push(name)
                            }
                            _ => return,
                        }
                    }
                });
            })
        };
        let started = Instant::now();
        while acked
            .lock()
            .expect("lock")
            .iter()
            .filter(|n| n.starts_with(&format!("v{cycle}_")))
            .count()
            < 3
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no writes were acknowledged"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20 * cycle as u64));
        quarry.kill();
        writer.join().expect("writer");
    }
    assert!(acked.lock().expect("lock").len() >= 15);
}

/// SIGKILL of the coordinator while INSERTs commit, again and again: after each restart
/// the table is at a whole version (every INSERT adds 100 rows or none), holds every
/// acknowledged INSERT exactly once, and reads.
#[test]
fn kill_nine_during_inserts_leaves_whole_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = Arc::new(Mutex::new(0usize));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sql = |http: &str, text: &str| -> Value {
        runtime.block_on(async {
            reqwest::Client::new()
                .post(format!("{http}/api/v1/sql"))
                .json(&json!({"sql": text, "async": false}))
                .send()
                .await
                .expect("POST /api/v1/sql")
                .json()
                .await
                .expect("json")
        })
    };
    let values: String = (0..100)
        .map(|i| format!("({i}, 'row {i}')"))
        .collect::<Vec<_>>()
        .join(", ");
    for cycle in 0..10 {
        // Executors too: reading the table back scans its files.
        let mut quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "100"]);
        let http = quarry.http.clone();
        if cycle == 0 {
            let created = sql(&http, "CREATE TABLE public.t (i INT, note VARCHAR)");
            assert_eq!(created["state"], "COMPLETED", "{created}");
        }
        let read = sql(
            &http,
            "SELECT count(*) AS n, count(DISTINCT note) AS d FROM public.t",
        );
        assert_eq!(read["state"], "COMPLETED", "cycle {cycle}: {read}");
        let rows = read["rows"][0]["n"].as_u64().expect("count") as usize;
        let known = *acked.lock().expect("lock");
        assert_eq!(rows % 100, 0, "cycle {cycle}: a torn version ({rows} rows)");
        assert!(
            rows / 100 >= known && rows / 100 <= known + 1,
            "cycle {cycle}: {rows} rows for {known} acknowledged inserts"
        );
        // The in-flight INSERT of the last cycle may have committed: count it.
        *acked.lock().expect("lock") = rows / 100;
        let writer = {
            let acked = Arc::clone(&acked);
            let http = http.clone();
            let insert = format!("INSERT INTO public.t VALUES {values}");
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(async move {
                    let client = reqwest::Client::new();
                    loop {
                        let response = client
                            .post(format!("{http}/api/v1/sql"))
                            .json(&json!({"sql": insert, "async": false}))
                            .send()
                            .await;
                        let Ok(response) = response else { return };
                        let Ok(body) = response.json::<Value>().await else {
                            return;
                        };
                        if body["state"] != "COMPLETED" {
                            return;
                        }
                        *acked.lock().expect("lock") += 1;
                    }
                });
            })
        };
        let started = Instant::now();
        let floor = *acked.lock().expect("lock") + 2;
        while *acked.lock().expect("lock") < floor {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no inserts were acknowledged"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(7 * cycle as u64));
        quarry.kill();
        writer.join().expect("writer");
    }
}

/// SIGKILL of the coordinator while a reflection refreshes, three times: after each
/// restart the old materialization still serves (same answer, same data), the unfinished
/// one is removed, and the next refresh succeeds.
#[test]
fn kill_nine_during_a_refresh_keeps_the_old_materialization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sql = |http: &str, text: &str| -> Value {
        runtime.block_on(async {
            reqwest::Client::new()
                .post(format!("{http}/api/v1/sql"))
                .json(&json!({"sql": text, "async": false}))
                .send()
                .await
                .expect("POST /api/v1/sql")
                .json()
                .await
                .expect("json")
        })
    };
    let args = ["--demo-rows", "200000"];
    let mut quarry = QuarryProcess::up(dir.path(), &args);
    for statement in [
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (revenue (SUM, COUNT))",
        "WAIT FOR REFLECTION by_city TIMEOUT 120",
    ] {
        let done = sql(&quarry.http, statement);
        assert_eq!(done["state"], "COMPLETED", "{statement}: {done}");
    }
    let query = "SELECT city, count(*) AS n FROM demo.orders GROUP BY city ORDER BY city";
    let before = sql(&quarry.http, query);
    assert!(before["dataAsOfMs"].is_u64(), "{before}");
    let as_of = before["dataAsOfMs"].as_u64().unwrap_or(0);
    // Materialization folders that still hold files (a local store leaves emptied
    // folders behind).
    fn holds_files(path: &std::path::Path) -> bool {
        std::fs::read_dir(path).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().is_file() || holds_files(&e.path()))
        })
    }
    let folders = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("reflections/by_city"))
            .map(|d| d.flatten().filter(|e| holds_files(&e.path())).count())
            .unwrap_or(0)
    };
    for cycle in 0..3u64 {
        let started = sql(&quarry.http, "ALTER TABLE demo.orders REFRESH REFLECTIONS");
        assert_eq!(started["state"], "COMPLETED", "{started}");
        std::thread::sleep(Duration::from_millis(30 * cycle));
        quarry.kill();
        quarry = QuarryProcess::up(dir.path(), &args);
        let after = sql(&quarry.http, query);
        assert_eq!(after["rows"], before["rows"], "cycle {cycle}: {after}");
        let used = after["reflections"][0].as_str().unwrap_or_default();
        assert!(
            used.starts_with("by_city: chosen"),
            "cycle {cycle}: {after}"
        );
        // The old data, or a refresh that finished before the kill (never at once).
        if cycle == 0 {
            assert_eq!(after["dataAsOfMs"].as_u64(), Some(as_of), "{after}");
        }
        assert!(
            after["dataAsOfMs"].as_u64() >= Some(as_of),
            "cycle {cycle}: {after}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while folders(dir.path()) > 1 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: unfinished folders stay"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let refreshed = sql(&quarry.http, "ALTER TABLE demo.orders REFRESH REFLECTIONS");
    assert_eq!(refreshed["state"], "COMPLETED", "{refreshed}");
    let waited = sql(&quarry.http, "WAIT FOR REFLECTION by_city TIMEOUT 120");
    assert_eq!(waited["state"], "COMPLETED", "{waited}");
    let last = sql(&quarry.http, query);
    assert_eq!(last["rows"], before["rows"]);
    assert!(
        last["dataAsOfMs"].as_u64() > Some(as_of),
        "a new materialization: {last}"
    );
}
