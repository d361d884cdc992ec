//! Clusters of real processes for tests: a `quarry coordinator` and `quarry executor`s
//! of this build, each its own process, talked to over REST (and Flight SQL by tests).
//! Dropping a process kills it (SIGKILL), so nothing outlives a test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde_json::{Value, json};

/// The `quarry` binary of this build (built with the workspace): next to a binary such as
/// `quarry-bench`, or one folder up from a test binary in `deps/`.
pub fn quarry_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe.with_file_name("quarry");
    if beside.exists() {
        return beside;
    }
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join("quarry")
}

pub struct Process(pub Child);

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// How the process ended, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A process's stderr, kept in `dir/NAME.log` so a crash leaves its message behind.
fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The secret the processes of a test cluster share.
pub const CLUSTER_SECRET: &str = "test-cluster-secret";

/// A coordinator and executors, each a `quarry` process.
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub internal: u16,
    pub flight: String,
    pub rest: Rest,
    /// `host:port` of the PostgreSQL door.
    pub pg: String,
    /// Slots of each executor started by [`ProcessCluster::add_executor`].
    pub slots: usize,
    /// Extra flags every executor gets.
    pub executor_args: Vec<String>,
    pub executors: BTreeMap<String, Process>,
    pub coordinator: Process,
}

impl ProcessCluster {
    /// Start a coordinator (with `coordinator_args`) and `executors` executors of
    /// `slots` slots each, and wait until they have joined.
    pub fn start(executors: usize, slots: usize, coordinator_args: &[&str]) -> Self {
        Self::start_with(executors, slots, coordinator_args, &[])
    }

    pub fn start_with(
        executors: usize,
        slots: usize,
        coordinator_args: &[&str],
        executor_args: &[&str],
    ) -> Self {
        assert!(
            quarry_bin().exists(),
            "build the workspace first: {} is missing",
            quarry_bin().display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let internal = free_port();
        let ready_path = dir.path().join("coordinator.ready");
        let child = Command::new(quarry_bin())
            .args([
                "coordinator",
                "--flight",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--pg",
                "127.0.0.1:0",
            ])
            .arg("--internal")
            .arg(format!("127.0.0.1:{internal}"))
            .arg("--dir")
            .arg(dir.path().join("coordinator"))
            .arg("--ready-file")
            .arg(&ready_path)
            .env("QUARRY_CLUSTER_SECRET", CLUSTER_SECRET)
            .args(coordinator_args)
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "coordinator"))
            .spawn()
            .expect("coordinator starts");
        let coordinator = Process(child);
        // The coordinator writes its addresses to the ready file once it listens.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                break serde_json::from_str(&text).expect("ready file is JSON");
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let field = |name: &str| ready[name].as_str().unwrap_or_default().to_string();
        let (flight, http, pg) = (field("flight"), field("http"), field("pg"));
        let mut cluster = ProcessCluster {
            dir,
            internal,
            flight,
            rest: Rest::new(http),
            pg,
            slots,
            executor_args: executor_args.iter().map(|s| s.to_string()).collect(),
            executors: BTreeMap::new(),
            coordinator,
        };
        for i in 1..=executors {
            cluster.add_executor(&format!("executor-{i}"));
        }
        cluster.rest.wait_for_executors(executors);
        cluster
    }

    /// Start (or restart) executor `id`.
    pub fn add_executor(&mut self, id: &str) {
        self.add_executor_with(id, &[]);
    }

    /// Start (or restart) executor `id` with `extra` flags besides the cluster's.
    pub fn add_executor_with(&mut self, id: &str, extra: &[&str]) {
        let child = Command::new(quarry_bin())
            .args(["executor", "--slots", &self.slots.to_string(), "--id", id])
            .arg("--coordinator")
            .arg(format!("http://127.0.0.1:{}", self.internal))
            .arg("--dir")
            .arg(self.dir.path().join(id))
            .env("QUARRY_CLUSTER_SECRET", CLUSTER_SECRET)
            .args(&self.executor_args)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), id))
            .spawn()
            .expect("executor starts");
        self.executors.insert(id.to_string(), Process(child));
    }

    /// SIGKILL executor `id`.
    pub fn kill_executor(&mut self, id: &str) {
        drop(self.executors.remove(id));
    }

    /// The Flight SQL listener as `host:port` (`flight` is a `grpc://` URL).
    pub fn flight_address(&self) -> &str {
        self.flight.trim_start_matches("grpc://")
    }

    /// Every process: its name (`coordinator`, or the executor's id) and pid.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids = vec![("coordinator".to_string(), self.coordinator.pid())];
        for (id, process) in &self.executors {
            pids.push((id.clone(), process.pid()));
        }
        pids
    }

    /// Processes that have exited, each with its status and the end of its log.
    pub fn dead(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        if let Some(status) = self.coordinator.exited() {
            dead.push(format!(
                "the coordinator exited ({status}): {}",
                self.log_tail("coordinator")
            ));
        }
        let exited: Vec<(String, std::process::ExitStatus)> = self
            .executors
            .iter_mut()
            .filter_map(|(id, p)| p.exited().map(|s| (id.clone(), s)))
            .collect();
        for (id, status) in exited {
            dead.push(format!(
                "executor {id} exited ({status}): {}",
                self.log_tail(&id)
            ));
        }
        dead
    }

    /// The end of a process's log, where a panic or abort message is.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(6).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Register the TPC-H tables in `data`.
    pub fn create_tpch_tables(&self, data: &Path) {
        for sql in crate::tpch::create_tables_sql(data) {
            let reply = self.rest.sql(&sql, false);
            assert_eq!(reply["state"], "COMPLETED", "{sql}: {reply}");
        }
    }
}

/// The coordinator's REST API, from synchronous test code.
pub struct Rest {
    pub base: String,
    pub client: reqwest::Client,
    pub runtime: tokio::runtime::Runtime,
}

impl Rest {
    pub fn new(base: String) -> Self {
        Rest {
            base,
            client: reqwest::Client::new(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn get(&self, path: &str) -> Value {
        self.runtime.block_on(async {
            let response = self.client.get(format!("{}{path}", self.base)).send().await;
            match response {
                Ok(r) => r.json().await.unwrap_or_else(|e| panic!("GET {path}: {e}")),
                Err(e) => panic!("GET {path}: {e}"),
            }
        })
    }

    /// POST /api/v1/sql; the reply body (rows, a job id, or an error).
    pub fn sql(&self, sql: &str, asynchronous: bool) -> Value {
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

    /// Start `sql` as an async job; its id.
    pub fn start(&self, sql: &str) -> String {
        let started = self.sql(sql, true);
        started["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{sql} did not start: {started}"))
            .to_string()
    }

    /// The active executors' state from `sys.nodes`.
    pub fn active_executors(&self) -> Vec<Value> {
        let nodes = self.sql(
            "SELECT executor_id, running_tasks, exchange_outputs, exchange_bytes, memory_used_bytes, spill_files FROM sys.nodes WHERE state = 'ACTIVE'",
            false,
        );
        nodes["rows"].as_array().cloned().unwrap_or_default()
    }

    /// Active executors holding tasks, exchange outputs, memory or spill files.
    pub fn busy_executors(&self) -> Vec<Value> {
        self.active_executors()
            .into_iter()
            .filter(|e| {
                [
                    "running_tasks",
                    "exchange_outputs",
                    "exchange_bytes",
                    "spill_files",
                    "memory_used_bytes",
                ]
                .iter()
                .any(|k| e[*k] != 0)
            })
            .collect()
    }

    /// Wait until no active executor holds tasks, outputs, memory or spill files.
    pub fn wait_until_idle(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let busy = self.busy_executors();
            if busy.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "executors still hold work after {limit:?}: {busy:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for_executors(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/healthz")["executors"].as_u64() != Some(n as u64) {
            assert!(Instant::now() < deadline, "{n} executors did not join");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    /// Wait until job `id` ends (panics past `limit`); the job and how long it took.
    pub fn wait_job(&self, id: &str, limit: Duration) -> (Value, Duration) {
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
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until job `id` is in `state` (panics past `limit`).
    pub fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id);
            if job["state"] == state {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} was not {state} within {limit:?}: {job}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A finished job's results, as Arrow batches.
    pub fn batches(&self, id: &str) -> Vec<RecordBatch> {
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
        reader.collect::<Result<_, _>>().expect("batches")
    }

    /// A finished job's answer, as TPC-H answers are compared.
    pub fn answer(&self, id: &str, sql: &str) -> Vec<String> {
        crate::tpch::answer(sql, &self.batches(id)).expect("rows")
    }
}
