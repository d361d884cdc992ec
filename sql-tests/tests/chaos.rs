//! Executors killed with SIGKILL in the middle of TPC-H queries, with real processes: a
//! coordinator and three executors, each its own `quarry` process.
//!
//! For each of the 22 queries one executor is killed once the query's first stage has
//! started; the answer must still equal in-process DataFusion's. The killed executor is
//! started again before the next query. At the end every executor is killed during a
//! query, which must then fail within 30 seconds, and the survivors of earlier kills must
//! hold no tasks, outputs, memory or spill files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quarry_sql_tests::tpch;
use serde_json::{Value, json};

const SF: f64 = 0.1;

/// The `quarry` binary of this build (built with the workspace).
fn quarry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    dir.join("quarry")
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Start the coordinator; returns it and its HTTP address.
fn coordinator(dir: &Path, internal: u16) -> (Process, String) {
    let mut child = Command::new(quarry_bin())
        .args([
            "coordinator",
            "--flight",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--internal",
        ])
        .arg(format!("127.0.0.1:{internal}"))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coordinator starts");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the coordinator prints its HTTP address");
        if let Some(addr) = line.trim().strip_prefix("HTTP:") {
            return (process, addr.trim().to_string());
        }
    }
}

fn executor(dir: &Path, internal: u16, id: &str) -> Process {
    let child = Command::new(quarry_bin())
        .args(["executor", "--slots", "1", "--id", id, "--coordinator"])
        .arg(format!("http://127.0.0.1:{internal}"))
        .arg("--dir")
        .arg(dir.join(id))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("executor starts");
    Process(child)
}

struct Rest {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Rest {
    fn get(&self, path: &str) -> Value {
        self.runtime.block_on(async {
            let response = self.client.get(format!("{}{path}", self.base)).send().await;
            match response {
                Ok(r) => r.json().await.unwrap_or_else(|e| panic!("GET {path}: {e}")),
                Err(e) => panic!("GET {path}: {e}"),
            }
        })
    }

    fn sql(&self, sql: &str, asynchronous: bool) -> Value {
        self.runtime.block_on(async {
            let response = self
                .client
                .post(format!("{}/api/v1/sql", self.base))
                .json(&json!({"sql": sql, "async": asynchronous}))
                .send()
                .await;
            match response {
                Ok(r) => r.json().await.unwrap_or_else(|e| panic!("POST {sql}: {e}")),
                Err(e) => panic!("POST {sql}: {e}"),
            }
        })
    }

    fn active_executors(&self) -> Vec<Value> {
        let nodes = self.sql("SELECT executor_id, running_tasks, exchange_bytes, memory_used_bytes, spill_files FROM sys.nodes WHERE state = 'ACTIVE'", false);
        nodes["rows"].as_array().cloned().unwrap_or_default()
    }

    fn wait_for_executors(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/healthz")["executors"].as_u64() != Some(n as u64) {
            assert!(Instant::now() < deadline, "{n} executors did not join");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    fn wait_job(&self, id: &str, limit: Duration) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let job = self.job(id);
            if ["COMPLETED", "FAILED", "CANCELED"].contains(&job["state"].as_str().unwrap_or("")) {
                return (job, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "job {id} did not end within {limit:?}: {job}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answer(&self, id: &str, sql: &str) -> Vec<String> {
        let bytes = self.runtime.block_on(async {
            self.client
                .get(format!("{}/api/v1/jobs/{id}/results", self.base))
                .header("accept", "application/vnd.apache.arrow.stream")
                .send()
                .await
                .expect("results")
                .bytes()
                .await
                .expect("body")
        });
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .expect("an Arrow stream");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
        tpch::answer(sql, &batches).expect("rows")
    }
}

#[test]
fn killing_executors_mid_query_keeps_answers_right() {
    assert!(
        quarry_bin().exists(),
        "build the workspace first: {} is missing",
        quarry_bin().display()
    );
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, 3).expect("TPC-H data");
    let dir = tempfile::tempdir().expect("tempdir");
    let internal = free_port();
    let (_coordinator, http) = coordinator(&dir.path().join("coordinator"), internal);
    let rest = Rest {
        base: http.clone(),
        client: reqwest::Client::new(),
        runtime: tokio::runtime::Runtime::new().expect("runtime"),
    };
    let mut executors: BTreeMap<String, Process> = BTreeMap::new();
    for i in 1..=3 {
        let id = format!("executor-{i}");
        executors.insert(id.clone(), executor(dir.path(), internal, &id));
    }
    let expected = rest
        .runtime
        .block_on(tpch::datafusion_answers(&data, 3))
        .expect("DataFusion's answers");
    rest.wait_for_executors(3);
    for sql in tpch::create_tables_sql(&data) {
        let reply = rest.sql(&sql, false);
        assert_eq!(reply["state"], "COMPLETED", "{sql}: {reply}");
    }

    let mut report = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n);
        let started = rest.sql(&sql, true);
        let id = started["id"]
            .as_str()
            .unwrap_or_else(|| panic!("Q{n} did not start: {started}"))
            .to_string();
        // Kill one executor once the first stage has started; for even queries wait
        // until some tasks have finished, so outputs they made are lost with it.
        let finished_tasks = if n % 2 == 0 { 1 } else { 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = rest.job(&id);
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
        drop(executors.remove(&victim));
        let (job, took) = rest.wait_job(&id, Duration::from_secs(120));
        assert_eq!(
            job["state"], "COMPLETED",
            "Q{n} failed after {victim} was killed: {job}"
        );
        let got = rest.answer(&id, &sql);
        assert_eq!(
            got,
            expected[n - 1],
            "Q{n} answered differently after {victim} was killed"
        );
        let attempts = rest.sql(
            &format!("SELECT count(*) AS retried FROM sys.tasks WHERE job_id = '{id}' AND (attempt > 0 OR failed_attempts > 0)"),
            false,
        );
        report.push(format!(
            "Q{n}: killed {victim}, {took:?}, retried tasks {}",
            attempts["rows"][0]["retried"]
        ));
        // The survivors let go of the query.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let busy: Vec<Value> = rest
                .active_executors()
                .into_iter()
                .filter(|e| {
                    e["running_tasks"] != 0
                        || e["exchange_bytes"] != 0
                        || e["spill_files"] != 0
                        || e["memory_used_bytes"] != 0
                })
                .collect();
            if busy.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after Q{n} executors still hold work: {busy:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        executors.insert(victim.clone(), executor(dir.path(), internal, &victim));
        rest.wait_for_executors(3);
    }
    eprintln!("{}", report.join("\n"));

    // Killing every executor fails the query cleanly, within 30 seconds. The query joins
    // lineitem with itself on the supplier (hundreds of millions of pairs), so it is
    // still running when the executors die.
    let sql = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey";
    let started = rest.sql(sql, true);
    let id = started["id"].as_str().expect("job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest.job(&id)["state"] != "RUNNING" {
        assert!(Instant::now() < deadline, "the query never started running");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    executors.clear();
    let (job, took) = rest.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["error"]["code"], "UNAVAILABLE", "{job}");
    eprintln!(
        "with every executor killed the query failed in {took:?}: {}",
        job["error"]["message"]
    );
}
