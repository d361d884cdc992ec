//! Quarry's executor: a Flight service that runs plan fragments and serves exchange data.
//!
//! ```text
//!  coordinator ──do_action(RUN_TASK: plan bytes)──► ExecutorService ──► run_task
//!                                                        │ decode plan (QuarryCodec; one per
//!                                                        │   stage attempt, shared by its tasks)
//!                                                        │ execute one partition
//!                                                        ▼ split output by hash
//!                                                   ExchangeStore  ◄──do_get(ticket)── other tasks
//! ```
//!
//! An executor registers with the coordinator's internal service and heartbeats to it;
//! it holds task outputs until the coordinator releases the query.

mod compact;
mod data_dir;
pub mod error;
mod exchange;
mod http;
mod membership;
mod metrics;
mod running;
mod service;
mod shared_plans;
mod task;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use object_store::local::LocalFileSystem;
use quarry_common::action_service::action_service;
use quarry_common::cluster_secret::ClusterSecret;
use quarry_common::flight_channels::{FlightChannels, grpc_incoming};
use quarry_common::protocol::CLUSTER_FILES_URL;
use quarry_common::protocol::{ExecutorRegistration, ExecutorStatus, Heartbeat};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use data_dir::DataDir;
pub use error::ExecutorError;
pub use exchange::ExchangeStore;
pub use service::ExecutorService;

/// How an executor is set up.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Stable id; a random one when absent.
    pub executor_id: Option<String>,
    /// The coordinator's internal endpoint, `http://host:port`.
    pub coordinator: String,
    /// Host name others use to reach this executor; the listener's IP when absent.
    pub advertise_host: Option<String>,
    /// Tasks that may run at once.
    pub slots: usize,
    /// Scratch space (spill files).
    pub work_dir: PathBuf,
    /// A directory of data files this executor serves to scans.
    pub data_dir: Option<PathBuf>,
    /// Memory for query operators, in bytes; unlimited when absent. Sorts, joins and
    /// aggregations spill to `work_dir` past it.
    pub memory_limit: Option<usize>,
    /// Memory for task outputs waiting to be read; past it they go to disk.
    pub exchange_memory: usize,
    /// Shown to the coordinator and peers, and required of every caller.
    pub cluster_secret: Option<ClusterSecret>,
    /// Where to serve `/healthz`, `/readyz` and `/metrics` over HTTP; none when absent.
    pub http: Option<SocketAddr>,
    /// A token `/metrics` then requires as `Authorization: Bearer` (open when absent).
    pub metrics_token: Option<String>,
}

/// Task outputs kept in memory by default before spilling to disk.
pub const DEFAULT_EXCHANGE_MEMORY: usize = 1 << 30;

/// A running executor.
pub struct RunningExecutor {
    pub executor_id: String,
    pub endpoint: String,
    pub address: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, with `http` set.
    pub http_address: Option<SocketAddr>,
    service: Arc<ExecutorService>,
    /// Stops the membership loop (deregistration).
    drain: CancellationToken,
    /// Stops the server.
    stop: CancellationToken,
    server: JoinHandle<Result<(), ExecutorError>>,
    membership: JoinHandle<()>,
}

/// How long a graceful stop waits for running tasks.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a stop then waits for open streams to end.
const SERVER_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl RunningExecutor {
    /// What the executor holds right now.
    pub fn status(&self) -> ExecutorStatus {
        self.service.status()
    }

    /// Stop gracefully: deregister (no new tasks come), let the running tasks finish
    /// (for up to `DRAIN_TIMEOUT`), then stop serving.
    pub async fn shutdown(mut self) -> Result<(), ExecutorError> {
        self.drain.cancel();
        let _ = (&mut self.membership).await;
        let left = wait_until_idle(&self.service).await;
        tracing::info!(executor = %self.executor_id, running_tasks = left, "drained; stopping");
        self.stop.cancel();
        // A graceful stop waits for open streams; one a vanished reader left open must not
        // keep the executor from stopping.
        match tokio::time::timeout(SERVER_STOP_TIMEOUT, &mut self.server).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ExecutorError::ServerTask(e)),
            Err(_) => {
                tracing::warn!(executor = %self.executor_id, "streams still open at stop; closing them");
                self.server.abort();
                Ok(())
            }
        }
    }

    /// Stop abruptly: no deregistration, no more heartbeats, no new connections. (Tests of
    /// real crashes kill executor processes; this is the in-process approximation.)
    pub fn abort(self) {
        self.membership.abort();
        self.server.abort();
    }
}

/// Wait until no task runs, for up to `DRAIN_TIMEOUT`; the tasks still running then.
pub(crate) async fn wait_until_idle(service: &ExecutorService) -> u32 {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let running = service.status().running_tasks;
        if running == 0 || std::time::Instant::now() >= deadline {
            return running;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Start an executor serving on `listener`.
pub async fn start(
    listener: TcpListener,
    config: ExecutorConfig,
) -> Result<RunningExecutor, ExecutorError> {
    quarry_common::crypto::install_crypto_provider();
    let address = listener.local_addr().map_err(ExecutorError::Listener)?;
    let host = config
        .advertise_host
        .clone()
        .unwrap_or_else(|| match address.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            ip => ip.to_string(),
        });
    let endpoint = format!("http://{host}:{}", address.port());
    let executor_id = config.executor_id.clone().unwrap_or_else(|| {
        format!(
            "executor-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });

    let spill_dir = config.work_dir.join("spill");
    std::fs::create_dir_all(&spill_dir).map_err(|source| ExecutorError::Directory {
        path: spill_dir.clone(),
        source,
    })?;
    let mut runtime = RuntimeEnvBuilder::new()
        .with_temp_file_path(&spill_dir)
        .with_cache_manager(quarry_common::object_stores::cache_config());
    if let Some(limit) = config.memory_limit {
        // Fair shares between the tasks running at once, so each can spill its part.
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(limit),
            NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
        );
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    let runtime = runtime.build_arc()?;

    let channels = Arc::new(FlightChannels::new().with_secret(config.cluster_secret.clone()));
    let exchange = Arc::new(ExchangeStore::new(
        executor_id.clone(),
        config.work_dir.join("exchange"),
        config.exchange_memory as u64,
    ));
    let metrics = Arc::new(metrics::ExecutorMetrics::new(config.slots.max(1)));
    let http_listener = match config.http {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ExecutorError::HttpListener { address, source })?,
        ),
        None => None,
    };
    let cpu =
        quarry_common::cpu_runtime::CpuRuntime::new(config.slots, &format!("{executor_id}-tasks"))
            .map_err(ExecutorError::TaskRuntime)?;
    let env = Arc::new(task::TaskEnvironment {
        executor_id: executor_id.clone(),
        cpu,
        runtime,
        exchange: Arc::clone(&exchange),
        channels: Arc::clone(&channels),
        object_stores: Default::default(),
        coordinator: config.coordinator.clone(),
        spill_dir: spill_dir.clone(),
        metrics: Arc::clone(&metrics),
        plans: Default::default(),
        template: Default::default(),
    });
    let data_dir = match &config.data_dir {
        Some(dir) => {
            let data = DataDir::open(dir).map_err(|source| ExecutorError::DataDir {
                path: dir.clone(),
                source,
            })?;
            // Scans of `cluster://` files placed here read this directory.
            let store = LocalFileSystem::new_with_prefix(data.root())
                .map_err(|e| datafusion::error::DataFusionError::ObjectStore(Box::new(e)))?;
            let url = url::Url::parse(CLUSTER_FILES_URL)
                .map_err(|e| datafusion::error::DataFusionError::Configuration(e.to_string()))?;
            env.runtime.register_object_store(&url, Arc::new(store));
            Some(data)
        }
        None => None,
    };
    let service = Arc::new(ExecutorService::new(env, data_dir.clone()));
    let stop = CancellationToken::new();

    let heartbeat_service = Arc::clone(&service);
    let registered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let membership = membership::Membership {
        coordinator: config.coordinator.clone(),
        registration: ExecutorRegistration {
            executor_id: executor_id.clone(),
            flight_endpoint: endpoint.clone(),
            slots: config.slots.max(1) as u32,
            data_dir: data_dir
                .as_ref()
                .map(|d| d.root().display().to_string())
                .unwrap_or_default(),
            local_files: Vec::new(),
        },
        files: Arc::new(move || data_dir.as_ref().map(DataDir::files).unwrap_or_default()),
        registered: Arc::clone(&registered),
        channels,
        heartbeat: Arc::new(move || {
            let status = heartbeat_service.status();
            Heartbeat {
                executor_id: status.executor_id,
                running_tasks: status.running_tasks,
                memory_used_bytes: status.memory_used_bytes,
                exchange_bytes: status.exchange_bytes,
                exchange_outputs: status.exchange_entries,
                spill_files: status.spill_files,
                tasks: heartbeat_service.task_reports(),
            }
        }),
    };

    let server_stop = stop.clone();
    let grpc = action_service(
        "executor",
        Arc::clone(&service),
        config.cluster_secret.clone(),
    );
    let drain = CancellationToken::new();
    let membership = tokio::spawn(membership.run(drain.clone()));
    let server = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(grpc)
            .serve_with_incoming_shutdown(grpc_incoming(listener), server_stop.cancelled_owned())
            .await;
        served.map_err(ExecutorError::from)
    });
    let http_address = match http_listener {
        Some(listener) => {
            let address = listener.local_addr().ok();
            let state = http::HttpState {
                service: Arc::clone(&service),
                metrics,
                registered,
                drain: drain.clone(),
                secret: config.cluster_secret.clone(),
                metrics_token: config.metrics_token.clone(),
            };
            let serving = http::serve(listener, state, stop.clone());
            tokio::spawn(async move {
                if let Err(e) = serving.await {
                    tracing::warn!("the executor's HTTP listener stopped: {e}");
                }
            });
            address
        }
        None => None,
    };
    tracing::info!(executor = %executor_id, %endpoint, "executor listening");
    Ok(RunningExecutor {
        executor_id,
        endpoint,
        address,
        http_address,
        service,
        drain,
        stop,
        server,
        membership,
    })
}
