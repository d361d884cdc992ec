//! The clusters the benchmarks run against: a coordinator and executors, each a `quarry`
//! process from this build, and the Flight SQL client that queries them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A coordinator and executors, each a `quarry` process from this build.
pub struct Cluster {
    _processes: Vec<Process>,
    pub flight: u16,
    _dir: tempfile::TempDir,
}

fn quarry_bin() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("quarry");
    if !bin.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release --bins` first",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

impl Cluster {
    pub fn start(executors: usize, slots: Option<usize>) -> Result<Cluster, Error> {
        let bin = quarry_bin()?;
        let dir = tempfile::tempdir()?;
        let (flight, http, internal) = (free_port()?, free_port()?, free_port()?);
        let mut processes = vec![Process(
            Command::new(&bin)
                .args(["coordinator", "--log", "warn", "--flight"])
                .arg(format!("127.0.0.1:{flight}"))
                .arg("--http")
                .arg(format!("127.0.0.1:{http}"))
                .args(["--pg", "off"])
                .arg("--internal")
                .arg(format!("127.0.0.1:{internal}"))
                .arg("--dir")
                .arg(dir.path().join("coordinator"))
                .stdout(Stdio::null())
                .spawn()?,
        )];
        for i in 1..=executors {
            processes.push(Process(
                Command::new(&bin)
                    .args(["executor", "--log", "warn"])
                    .args(slots.map(|s| format!("--slots={s}")))
                    .arg("--id")
                    .arg(format!("executor-{i}"))
                    .arg("--coordinator")
                    .arg(format!("http://127.0.0.1:{internal}"))
                    .arg("--dir")
                    .arg(dir.path().join(format!("executor-{i}")))
                    .stdout(Stdio::null())
                    .spawn()?,
            ));
        }
        // Wait until every executor has joined.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = std::process::Command::new("curl")
                .args(["-s", "--max-time", "1"])
                .arg(format!("http://127.0.0.1:{http}/healthz"))
                .output();
            if let Ok(out) = health
                && String::from_utf8_lossy(&out.stdout)
                    .contains(&format!("\"executors\":{executors}"))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("the Quarry cluster did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Cluster {
            _processes: processes,
            flight,
            _dir: dir,
        })
    }
}

pub struct FlightSql(FlightSqlServiceClient<Channel>);

impl FlightSql {
    pub async fn connect(port: u16) -> Result<Self, Error> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("", "").await?;
        Ok(FlightSql(client))
    }

    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, Error> {
        let info = self.0.execute(sql.to_string(), None).await?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let mut part: Vec<RecordBatch> = self.0.do_get(ticket).await?.try_collect().await?;
            batches.append(&mut part);
        }
        Ok(batches)
    }
}
