//! What fuzzing runs against: a cluster of real `quarry` processes with the fixture files
//! registered as tables, and a decoy server that crashes on purpose (to prove the driver
//! notices a crash).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Server;
use crate::processes::{Process, ProcessCluster, Rest, free_port};
use crate::vitals::Vitals;

/// How long a health call may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long held resources may take to drain after the last input.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Open files a process may gain over a run (connection pools, caches) before it is a leak.
const FD_SLACK: usize = 48;

/// POST a JSON body; the status and the reply as JSON (or text), never a panic.
pub fn post(rest: &Rest, path: &str, body: &Value) -> Result<(u16, Value), String> {
    rest.runtime.block_on(async {
        let reply = rest
            .client
            .post(format!("{}{path}", rest.base))
            .json(body)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = reply.status().as_u16();
        let text = reply.text().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    })
}

/// Run each statement over REST, stopping at the first that fails.
pub fn run_statements(rest: &Rest, statements: &[String]) -> Result<(), String> {
    for sql in statements {
        let (status, reply) = post(rest, "/api/v1/sql", &json!({"sql": sql}))?;
        if status != 200 {
            return Err(format!("{sql}: HTTP {status}: {reply}"));
        }
    }
    Ok(())
}

/// The `n` of the first row `sql` answers (`SELECT count(*) AS n ...`).
pub fn count(rest: &Rest, sql: &str) -> Option<u64> {
    post(rest, "/api/v1/sql", &json!({"sql": sql}))
        .ok()
        .and_then(|(_, reply)| reply["rows"][0]["n"].as_u64())
}

/// After a load: `SELECT 1` answers and every job ends within `limit`.
pub fn settled(rest: &Rest, limit: Duration) -> Result<(), String> {
    select_one(rest).and_then(|()| jobs_drain(rest, limit))
}

/// `SELECT 1 AS one` over REST, checked.
pub fn select_one(rest: &Rest) -> Result<(), String> {
    let (status, reply) = post(rest, "/api/v1/sql", &json!({"sql": "SELECT 1 AS one"}))?;
    if status == 200 && reply["rows"][0]["one"] == 1 {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {reply}"))
    }
}

/// Jobs still planning, queued or running (the probe itself aside).
pub fn unfinished_jobs(rest: &Rest) -> Result<(), String> {
    let (status, jobs) = post(
        rest,
        "/api/v1/sql",
        &json!({"sql": "SELECT job_id, state, 'leak check' AS probe, sql FROM sys.jobs WHERE state IN ('PLANNING', 'QUEUED', 'RUNNING') AND sql NOT LIKE '%leak check%'"}),
    )?;
    let jobs = jobs["rows"].as_array().cloned().unwrap_or_default();
    if status != 200 || !jobs.is_empty() {
        return Err(format!(
            "unfinished jobs (HTTP {status}): {}",
            super::excerpt(&Value::Array(jobs).to_string(), 400)
        ));
    }
    Ok(())
}

/// Wait up to `limit` for every job to end.
pub fn jobs_drain(rest: &Rest, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let result = unfinished_jobs(rest);
        if result.is_ok() || started.elapsed() >= limit {
            return result;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Open file descriptors of a process; none once it is gone.
fn open_files(pid: u32) -> usize {
    Vitals::of(pid).map_or(0, |v| v.files)
}

/// A cluster of processes with the fixture data as tables `people`, `events`, `products`,
/// `sales` (source `files`) and a managed table `mart.t`.
pub struct FuzzCluster {
    pub cluster: ProcessCluster,
    /// The `files` source's root, where the files target writes its damaged files.
    pub root: PathBuf,
    fd_baseline: BTreeMap<u32, usize>,
}

impl FuzzCluster {
    pub fn start(executors: usize, slots: usize) -> Result<Self, String> {
        let cluster = ProcessCluster::start(executors, slots, &["--log", "warn"]);
        let (root, _outside) =
            crate::fixtures::write(&cluster.dir.path().join("data")).map_err(|e| e.to_string())?;
        let setup = [
            format!(
                "CREATE SOURCE files TYPE local WITH (root = '{}')",
                root.display()
            ),
            "CREATE TABLE people FROM files 'people.csv'".to_string(),
            "CREATE TABLE events FROM files 'events' FORMAT parquet".to_string(),
            "CREATE TABLE products FROM files 'products.parquet'".to_string(),
            "CREATE TABLE sales FROM files 'sales' FORMAT parquet".to_string(),
            "CREATE SCHEMA mart".to_string(),
            "CREATE TABLE mart.t AS SELECT value AS id, value % 7 AS k, CAST(value AS DOUBLE) / 3 AS x FROM range(1000)".to_string(),
        ];
        run_statements(&cluster.rest, &setup)?;
        Ok(FuzzCluster {
            cluster,
            root,
            fd_baseline: BTreeMap::new(),
        })
    }

    /// Queries still running, executors still holding work, or processes holding more
    /// open files than before.
    fn held(&self) -> Result<(), String> {
        unfinished_jobs(&self.cluster.rest)?;
        let busy = self.cluster.rest.busy_executors();
        if !busy.is_empty() {
            return Err(format!("executors hold work: {busy:?}"));
        }
        for (name, pid) in self.cluster.pids() {
            let now = open_files(pid);
            let before = self.fd_baseline.get(&pid).copied().unwrap_or(0);
            if now > before + FD_SLACK {
                return Err(format!(
                    "{name} holds {now} open files, {before} before the run"
                ));
            }
        }
        Ok(())
    }
}

impl Server for FuzzCluster {
    fn exited(&mut self) -> Option<String> {
        self.cluster.dead().into_iter().next()
    }

    fn select_one(&self) -> Result<(), String> {
        select_one(&self.cluster.rest)
    }

    fn baseline(&mut self) {
        self.fd_baseline = self
            .cluster
            .pids()
            .into_iter()
            .map(|(_, pid)| (pid, open_files(pid)))
            .collect();
    }

    fn leaks(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self.held() {
                Ok(()) => return Ok(()),
                Err(why) if started.elapsed() > DRAIN_TIMEOUT => return Err(why),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}

/// A stand-in for the REST door that aborts when a statement holds `trigger`, to show
/// the driver finds a crash and names the input that caused it.
pub struct Decoy {
    process: Process,
    pub rest: Rest,
}

const DECOY: &str = r#"
import http.server, json, os, sys
trigger = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        try:
            sql = json.loads(body).get('sql', '')
        except Exception:
            sql = ''
        if trigger in str(sql).upper():
            os.abort()
        reply = json.dumps({'state': 'COMPLETED', 'rows': [{'one': 1}]}).encode()
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()
"#;

impl Decoy {
    /// A decoy that aborts on any statement containing `trigger` (upper case).
    pub fn start(trigger: &str) -> Result<Self, String> {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-c", DECOY, &port.to_string(), trigger])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let decoy = Decoy {
            process: Process(child),
            rest: Rest::new(format!("http://127.0.0.1:{port}")),
        };
        let started = Instant::now();
        while select_one(&decoy.rest).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("the decoy did not start".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(decoy)
    }
}

impl Server for Decoy {
    fn exited(&mut self) -> Option<String> {
        self.process
            .exited()
            .map(|s| format!("the decoy exited ({s})"))
    }

    fn select_one(&self) -> Result<(), String> {
        select_one(&self.rest)
    }

    fn baseline(&mut self) {}

    fn leaks(&self) -> Result<(), String> {
        Ok(())
    }
}
