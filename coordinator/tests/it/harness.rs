//! Shared test fixtures: in-process clusters, the real `quarry` binary, and a Python
//! environment with the ADBC Flight SQL driver and moto.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use quarry_catalog::JobRecord;
use quarry_coordinator::local_cluster::{LocalCluster, LocalClusterConfig};
use quarry_coordinator::service::{QueryService, SessionHandle};

/// Did the job's planning choose reflection `name`?
pub fn chose(record: &JobRecord, name: &str) -> bool {
    let chosen = format!("{name}: chosen");
    record.reflections.iter().any(|r| r.starts_with(&chosen))
}

/// Run `sql` in `session` and wait for its job; panics when it fails.
pub async fn run_sql(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    sql: &str,
) -> (Vec<RecordBatch>, JobRecord) {
    let job = engine
        .submit(session, sql, None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches = job
        .results(0, None)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let record = job
        .finished()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (batches, record)
}

/// The rows of `text` run in `session`; panics when it fails.
pub async fn sql(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    text: &str,
) -> Vec<RecordBatch> {
    run_sql(engine, session, text).await.0
}

/// The text of `explain` (EXPLAIN, EXPLAIN ANALYZE) of `query`: every row's plan, in
/// order.
pub async fn explained(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    explain: &str,
    query: &str,
) -> String {
    use arrow::array::{Array, StringArray};
    let batches = sql(engine, session, &format!("{explain} {query}")).await;
    let mut text = String::new();
    for batch in &batches {
        let plans = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("plan column");
        for i in 0..plans.len() {
            text.push_str(plans.value(i));
            text.push('\n');
        }
    }
    text
}

/// The error a statement fails with, as its client sees it; panics when it succeeds.
pub async fn sql_error(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    text: &str,
) -> String {
    let job = match engine.submit(session, text, None).await {
        Ok(job) => job,
        Err(e) => return e.message,
    };
    let read: Result<Vec<RecordBatch>, _> = job.results(0, None).try_collect().await;
    match read {
        Ok(_) => panic!("{text} should fail"),
        Err(e) => e.message,
    }
}

/// An in-process cluster with its own directory.
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start(executors: usize) -> TestCluster {
        Self::start_with(executors, |_| {}).await
    }

    pub async fn start_with(
        executors: usize,
        configure: impl FnOnce(&mut LocalClusterConfig),
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LocalClusterConfig::new(dir.path().join("quarry"), executors);
        configure(&mut config);
        let cluster = LocalCluster::start(config).await.expect("cluster starts");
        TestCluster { cluster, dir }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.cluster.coordinator.http_addr)
    }
}

/// The `quarry` binary built for these tests.
pub fn quarry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quarry"))
}

/// A `quarry` process; killed when dropped.
pub struct QuarryProcess {
    pub child: Child,
    pub flight: String,
    pub http: String,
    /// `host:port` of the PostgreSQL door, when it is on.
    pub pg: Option<String>,
}

impl QuarryProcess {
    /// Start `quarry up` over `dir` on free ports, with `extra` flags.
    pub fn up(dir: &Path, extra: &[&str]) -> QuarryProcess {
        let dir = dir.display().to_string();
        let mut args = vec![
            "up",
            "--dir",
            &dir,
            "--flight",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        QuarryProcess::spawn(&args)
    }

    /// `quarry up` over `dir` with 1,000 demo orders, logins on (`admin` / `pw`) and TLS
    /// with the test certificate ([`test_cert`]).
    pub fn up_secured(dir: &Path) -> QuarryProcess {
        let (server, key) = (test_cert("server.pem"), test_cert("server-key.pem"));
        let args = [
            "--demo-rows",
            "1000",
            "--auth",
            "--admin-password",
            "pw",
            "--tls-cert",
            &server,
            "--tls-key",
            &key,
        ];
        QuarryProcess::up(dir, &args)
    }

    /// Start `quarry <args>` and wait for the addresses it writes to its ready file.
    pub fn spawn(args: &[&str]) -> QuarryProcess {
        let ready = tempfile::NamedTempFile::new().expect("ready file");
        let ready_path = ready.path().with_extension("ready");
        drop(ready);
        let mut child = Command::new(quarry_bin())
            .args(args)
            .arg("--ready-file")
            .arg(&ready_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("quarry starts");
        let stdout = child.stdout.take().expect("stdout");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                drop(line);
            }
        });
        let ready = wait_ready(&mut child, &ready_path, Duration::from_secs(120));
        let _ = std::fs::remove_file(&ready_path);
        let flight = ready["flight"].as_str().unwrap_or_default();
        let flight = flight.split_once("://").map_or(flight, |(_, a)| a);
        QuarryProcess {
            child,
            flight: flight.to_string(),
            http: ready["http"].as_str().unwrap_or_default().to_string(),
            pg: ready["pg"].as_str().map(str::to_string),
        }
    }

    /// Kill with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QuarryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A file of the TLS tests' certificates (`coordinator/tests/tls`).
/// The ready file `child` writes once it serves (`--ready-file`), as JSON; panics when it
/// exits first or takes longer than `limit`.
pub fn wait_ready(child: &mut Child, path: &Path, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).expect("ready file is JSON");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("quarry exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "quarry did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn test_cert(name: &str) -> String {
    workspace()
        .join("coordinator/tests/tls")
        .join(name)
        .display()
        .to_string()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A Python with pyarrow, the ADBC Flight SQL driver, moto, boto3, deltalake, the
/// PostgreSQL clients (psycopg 3, psycopg2, SQLAlchemy, pandas) and Helm's SDK with
/// Kubernetes' schemas (helm-python-sdk, kubernetes-validate): `$QUARRY_TEST_VENV`
/// or `.venv-test` in the workspace, created on first use.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("QUARRY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv-test"));
    let python = venv.join("bin/python");
    // The marker names the package set, so a venv made for an older set is completed.
    let ready = venv.join(".quarry-ready-4");
    if ready.exists() {
        return python;
    }
    // One test process creates it; the others wait for the marker.
    let lock = venv.with_extension("lock");
    if std::fs::create_dir(&lock).is_ok() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "adbc-driver-flightsql",
                "adbc-driver-manager",
                "pyarrow",
                "moto[server]",
                "boto3",
                "deltalake",
                "psycopg[binary]==3.2.*",
                "psycopg2-binary==2.9.*",
                "SQLAlchemy==2.0.*",
                "pandas==2.2.*",
                "helm-python-sdk==0.2.2",
                "kubernetes-validate==1.37.*",
            ])
            .status()
            .expect("pip runs");
        assert!(
            status.success(),
            "installing the test Python packages failed"
        );
        std::fs::write(&ready, "").expect("marker");
        let _ = std::fs::remove_dir(&lock);
    } else {
        let deadline = Instant::now() + Duration::from_secs(600);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "waited too long for the test venv"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    python
}

/// Run a Python script with arguments; panic with its output if it fails.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "python failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `batch` as a Parquet file at `path` (folders made as needed).
pub fn write_parquet_file(
    path: &Path,
    batch: &RecordBatch,
    properties: Option<parquet::file::properties::WriterProperties>,
) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let file = std::fs::File::create(path).expect("file");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), properties).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

/// Two executors of two slots each, and a session of user `test` on the coordinator.
pub async fn two_by_two() -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    let cluster = TestCluster::start_with(2, |c| c.slots_per_executor = 2).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    (cluster, engine, session)
}
