//! A coordinator and executors in one process, talking over real loopback Flight:
//! what `quarry up` runs, and what tests and benchmarks start.

use std::path::PathBuf;
use std::time::Duration;

use quarry_common::QuarryError;
use quarry_common::cluster_secret::ClusterSecret;
use quarry_executor::{ExecutorConfig, RunningExecutor};
use tokio::net::TcpListener;

use crate::error::CoordinatorError;
use crate::server::{self, CoordinatorConfig, Listeners, RunningCoordinator};

/// How one in-process executor is set up.
#[derive(Debug, Clone, Default)]
pub struct ExecutorSetup {
    pub slots: usize,
    pub memory_limit: Option<usize>,
    pub data_dir: Option<PathBuf>,
    /// Serve the executor's `/healthz`, `/readyz` and `/metrics` here.
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    pub coordinator: CoordinatorConfig,
    pub flight: String,
    pub http: String,
    /// The PostgreSQL door's address; None leaves it off.
    pub pg: Option<String>,
    pub executors: usize,
    pub slots_per_executor: usize,
    pub executor_memory_limit: Option<usize>,
    pub exchange_memory: usize,
}

impl LocalClusterConfig {
    /// A cluster on free loopback ports with its state in `dir`.
    pub fn new(dir: impl Into<PathBuf>, executors: usize) -> Self {
        LocalClusterConfig {
            coordinator: CoordinatorConfig::new(dir),
            flight: "127.0.0.1:0".to_string(),
            http: "127.0.0.1:0".to_string(),
            pg: Some("127.0.0.1:0".to_string()),
            executors,
            slots_per_executor: 1,
            executor_memory_limit: None,
            exchange_memory: quarry_executor::DEFAULT_EXCHANGE_MEMORY,
        }
    }
}

pub struct LocalCluster {
    pub coordinator: RunningCoordinator,
    pub executors: Vec<RunningExecutor>,
    dir: PathBuf,
    exchange_memory: usize,
    cluster_secret: Option<ClusterSecret>,
}

impl LocalCluster {
    /// Start the coordinator and the executors, and wait until every executor joined.
    pub async fn start(config: LocalClusterConfig) -> Result<Self, QuarryError> {
        let dir = config.coordinator.dir.clone();
        // Processes of one `quarry up` share a secret nobody else knows.
        let mut config = config;
        let secret = config
            .coordinator
            .cluster_secret
            .get_or_insert_with(ClusterSecret::generate)
            .clone();
        let mut listeners = Listeners::bind(&config.flight, &config.http, "127.0.0.1:0").await?;
        if let Some(pg) = &config.pg {
            listeners = listeners.with_pg(pg).await?;
        }
        let coordinator = server::start(config.coordinator, listeners).await?;
        let mut cluster = LocalCluster {
            coordinator,
            executors: Vec::new(),
            dir,
            exchange_memory: config.exchange_memory,
            cluster_secret: Some(secret),
        };
        for _ in 0..config.executors {
            cluster
                .add_executor(ExecutorSetup {
                    slots: config.slots_per_executor,
                    memory_limit: config.executor_memory_limit,
                    data_dir: None,
                    http: None,
                })
                .await?;
        }
        let joined = cluster
            .coordinator
            .cluster
            .wait_for_executors(config.executors, Duration::from_secs(10))
            .await;
        if !joined {
            return Err(QuarryError::unavailable(
                "the executors did not register with the coordinator within 10 s",
            ));
        }
        Ok(cluster)
    }

    /// Start one more executor in this process.
    pub async fn add_executor(
        &mut self,
        setup: ExecutorSetup,
    ) -> Result<&RunningExecutor, QuarryError> {
        let n = self.executors.len() + 1;
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|source| {
            QuarryError::from(CoordinatorError::Listener {
                what: "executor",
                source,
            })
        })?;
        let config = ExecutorConfig {
            executor_id: Some(format!("executor-{n}")),
            coordinator: self.coordinator.internal_endpoint(),
            advertise_host: None,
            slots: setup.slots.max(1),
            work_dir: self.dir.join("executors").join(n.to_string()),
            data_dir: setup.data_dir,
            memory_limit: setup.memory_limit,
            exchange_memory: self.exchange_memory,
            cluster_secret: self.cluster_secret.clone(),
            http: setup.http,
            metrics_token: None,
        };
        self.executors
            .push(quarry_executor::start(listener, config).await?);
        self.executors
            .last()
            .ok_or_else(|| CoordinatorError::invariant("no executor was started").into())
    }

    /// Every listener of this cluster by what it is: tests check each one refuses
    /// callers without credentials, so a new listener must be added here.
    pub fn listeners(&self) -> Vec<(&'static str, String)> {
        let c = &self.coordinator;
        let mut listeners = vec![
            ("flight_sql", c.flight_addr.to_string()),
            ("http", c.http_addr.to_string()),
            ("internal", c.internal_addr.to_string()),
        ];
        if let Some(pg) = c.pg_addr {
            listeners.push(("pgwire", pg.to_string()));
        }
        for executor in &self.executors {
            listeners.push(("executor", executor.address.to_string()));
        }
        listeners
    }

    pub async fn shutdown(self) {
        for executor in self.executors {
            let _ = executor.shutdown().await;
        }
        self.coordinator.shutdown().await;
    }
}
