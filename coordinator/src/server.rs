//! Starting a coordinator: its state under one directory and its three listeners —
//! Flight SQL for clients, HTTP for REST and the console, internal Flight for executors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use quarry_catalog::Catalog;
use quarry_common::QuarryError;
use quarry_common::action_service::action_service;
use quarry_common::cluster_secret::ClusterSecret;
use quarry_common::connections::{Counted, LimitedListener, Refusal};
use quarry_common::flight_channels::{FlightChannels, grpc_incoming};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::AccessControl;
use crate::access::auth::Auth;
use crate::cluster::Cluster;
use crate::cluster::files::ClusterFileStore;
use crate::cluster::internal::MembershipService;
use crate::datasets::Datasets;
use crate::engine::{Engine, EngineLimits, base_config};
use crate::error::CoordinatorError;
use crate::frontend::flight_sql::FlightSqlFrontend;
use crate::frontend::rest::{AppState, router};
use crate::jobs::Jobs;
use crate::jobs::admission::Admission;
use crate::limits::Limits;
use crate::scheduler::Scheduler;
use crate::service::QueryService;
use crate::system::SystemTables;
use crate::tasks::Tasks;
use crate::tls::{TlsFiles, TlsListener};
use quarry_common::protocol::CLUSTER_FILES_URL;

// The settings `CoordinatorConfig` is made of, for `main.rs` and tests.
pub use crate::datasets::location::Location;
pub use crate::engine::parse_duration;
pub use crate::jobs::admission::{AdmissionConfig, DEFAULT_MAX_QUEUED, DEFAULT_MAX_RUNNING};

enum Either<L, R> {
    Left(L),
    Right(R),
}

/// Plain HTTP connections, at most `--max-connections` open at once.
struct HttpListener(LimitedListener);

impl axum::serve::Listener for HttpListener {
    type Io = Counted<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// How long a Flight SQL client has to start reading results it asked for.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Catalog, job results and scratch space live here.
    pub dir: PathBuf,
    /// Require logins on Flight SQL and REST.
    pub auth: bool,
    /// Create (or reset) the `admin` user with this password at start.
    pub admin_password: Option<String>,
    /// Allow listening beyond loopback without authentication.
    pub insecure: bool,
    /// Executors must show this to join; the internal service refuses callers without it.
    pub cluster_secret: Option<ClusterSecret>,
    /// Serve Flight SQL and HTTP over TLS with this certificate and key.
    pub tls: Option<TlsFiles>,
    pub heartbeat_interval: Duration,
    /// Silence after which an executor is declared lost.
    pub lost_after: Duration,
    /// Limits on queries running on the executors and waiting to.
    pub admission: AdmissionConfig,
    /// A Flight SQL query whose results no client starts reading this soon is cancelled.
    pub fetch_timeout: Duration,
    /// Offer `sys.test_stall` (a source that never yields), for tests of the watchdog.
    pub test_sources: bool,
    /// Where managed tables created without a source live; `<dir>/warehouse` when None.
    pub warehouse: Option<Location>,
    /// Where reflections' materializations live; `<dir>/reflections` when None.
    pub reflection_store: Option<Location>,
    /// What one request may ask (see [`crate::limits`]).
    pub limits: Limits,
    /// Memory for the queries the coordinator runs itself; operators spill past it.
    pub query_memory: usize,
    /// Bytes of results the results cache keeps (0: no cache).
    pub results_cache_size: usize,
}

impl CoordinatorConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CoordinatorConfig {
            dir: dir.into(),
            auth: false,
            admin_password: None,
            insecure: false,
            cluster_secret: None,
            tls: None,
            heartbeat_interval: Duration::from_secs(1),
            lost_after: Duration::from_millis(3500),
            admission: AdmissionConfig::default(),
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            test_sources: false,
            warehouse: None,
            reflection_store: None,
            limits: Limits::default(),
            query_memory: DEFAULT_QUERY_MEMORY,
            results_cache_size: DEFAULT_RESULTS_CACHE_SIZE,
        }
    }
}

/// The coordinator's memory for queries it runs itself.
pub const DEFAULT_QUERY_MEMORY: usize = 2 * 1024 * 1024 * 1024;
/// The results cache's size.
pub const DEFAULT_RESULTS_CACHE_SIZE: usize = 256 * 1024 * 1024;

/// The listeners a coordinator serves.
pub struct Listeners {
    pub flight: TcpListener,
    pub http: TcpListener,
    pub internal: TcpListener,
    /// The PostgreSQL protocol door, when it is on.
    pub pg: Option<TcpListener>,
}

impl Listeners {
    /// Bind all three (use port 0 for any free port).
    pub async fn bind(flight: &str, http: &str, internal: &str) -> Result<Self, QuarryError> {
        let bind = |addr: &str| {
            let addr = addr.to_string();
            async move {
                TcpListener::bind(&addr)
                    .await
                    .map_err(|e| QuarryError::invalid(format!("cannot listen on {addr}: {e}")))
            }
        };
        Ok(Listeners {
            flight: bind(flight).await?,
            http: bind(http).await?,
            internal: bind(internal).await?,
            pg: None,
        })
    }

    /// Also serve the PostgreSQL protocol on `addr`.
    pub async fn with_pg(mut self, addr: &str) -> Result<Self, QuarryError> {
        self.pg = Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| QuarryError::invalid(format!("cannot listen on {addr}: {e}")))?,
        );
        Ok(self)
    }
}

pub struct RunningCoordinator {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    /// Where PostgreSQL clients connect, when that door is on.
    pub pg_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    pub cluster: Arc<Cluster>,
}

impl RunningCoordinator {
    /// The engine as every frontend holds it: in-process clients (tests, the in-process
    /// SQL logic tests) go through the same seam.
    pub fn service(&self) -> Arc<dyn QueryService> {
        Arc::new(Arc::clone(&self.engine))
    }

    /// The endpoint executors register at.
    pub fn internal_endpoint(&self) -> String {
        format!("http://{}", self.internal_addr)
    }

    /// Stop listening, cancel running jobs and wait (a few seconds at most) for every
    /// background task; then flush the catalog.
    pub async fn shutdown(self) {
        self.engine.shutdown(Duration::from_secs(5)).await;
        let _ = self.engine.datasets().catalog().flush();
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, QuarryError> {
    listener.local_addr().map_err(|source| {
        CoordinatorError::Listener {
            what: "coordinator",
            source,
        }
        .into()
    })
}

/// The first admin: `admin` with the given password (reset at every start when given),
/// or, when there is none yet and no password was given, a generated one printed once.
fn bootstrap_admin(
    auth: &Auth,
    access: &AccessControl,
    password: Option<&str>,
) -> Result<(), QuarryError> {
    if let Some(password) = password {
        return auth.bootstrap_admin(password);
    }
    if access.user_exists("admin") {
        return Ok(());
    }
    let password = auth.generate_password()?;
    auth.bootstrap_admin(&password)?;
    // Printed, not logged: it is shown once, to whoever started the coordinator.
    println!(
        "Created user admin with password {password} (shown only now; change it with ALTER USER admin SET PASSWORD '...')"
    );
    Ok(())
}

/// Secure by default: without `--auth` everyone is an admin, so only this machine may
/// connect unless `--insecure` says otherwise.
fn refuse_exposure_without_auth(
    config: &CoordinatorConfig,
    user_facing: &[SocketAddr],
    internal: SocketAddr,
) -> Result<(), QuarryError> {
    if config.insecure {
        return Ok(());
    }
    // The internal port hands out tasks and data: beyond loopback it needs the secret.
    if !internal.ip().is_loopback() && config.cluster_secret.is_none() {
        return Err(QuarryError::invalid(format!(
            "refusing to listen on {internal} for executors without a cluster secret: give \
             every process the same --cluster-secret (QUARRY_CLUSTER_SECRET), or pass \
             --insecure if this network is trusted"
        )));
    }
    if config.auth {
        return Ok(());
    }
    match user_facing
        .iter()
        .chain([&internal])
        .find(|a| !a.ip().is_loopback())
    {
        Some(exposed) => Err(QuarryError::invalid(format!(
            "refusing to listen on {exposed} without authentication: anyone who can reach it \
             would be an admin. Start with --auth (users and passwords), or bind to \
             127.0.0.1, or pass --insecure if this network is trusted"
        ))),
        None => Ok(()),
    }
}

pub async fn start(
    config: CoordinatorConfig,
    listeners: Listeners,
) -> Result<RunningCoordinator, QuarryError> {
    quarry_common::crypto::install_crypto_provider();
    // Refused before anything is opened or created.
    let flight_addr = local_addr(&listeners.flight)?;
    let http_addr = local_addr(&listeners.http)?;
    let internal_addr = local_addr(&listeners.internal)?;
    let mut user_facing = vec![flight_addr, http_addr];
    if let Some(pg) = &listeners.pg {
        user_facing.push(local_addr(pg)?);
    }
    refuse_exposure_without_auth(&config, &user_facing, internal_addr)?;
    config.limits.validate()?;
    std::fs::create_dir_all(&config.dir).map_err(|e| {
        QuarryError::invalid(format!("cannot create {}: {e}", config.dir.display()))
    })?;
    quarry_catalog::observe_durable_writes(crate::metrics::catalog_written);
    let catalog = Catalog::open(&config.dir.join("catalog")).map_err(|e| {
        QuarryError::from(CoordinatorError::from(e)).context(format_args!(
            "cannot open the catalog in {}",
            config.dir.display()
        ))
    })?;
    // Small plans run here (see planner::small_plans); one whose input was smaller on
    // paper than in memory spills instead of taking the coordinator down.
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(config.query_memory),
        std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_temp_file_path(config.dir.join("spill"))
        .with_cache_manager(quarry_common::object_stores::coordinator_cache_config())
        .build_arc()
        .map_err(|e| CoordinatorError::Runtime {
            what: "coordinator runtime",
            detail: e.to_string(),
        })
        .map_err(QuarryError::from)?;
    let warehouse = config
        .warehouse
        .clone()
        .unwrap_or_else(|| Location::Local(config.dir.join("warehouse")));
    let tasks = Tasks::new(CancellationToken::new())?;
    let datasets = Datasets::new(catalog.clone(), runtime, base_config(), tasks.clone())?;
    datasets.set_warehouse(&warehouse)?;
    let reflection_store = config
        .reflection_store
        .clone()
        .unwrap_or_else(|| Location::Local(config.dir.join("reflections")));
    datasets.set_reflection_store(&reflection_store)?;
    let jobs = Jobs::new(catalog.clone(), config.dir.join("results"))?;
    let cluster = Cluster::new(config.heartbeat_interval, config.lost_after);
    let access = AccessControl::new(config.auth, catalog.clone())?;
    let auth = Auth::new(Arc::clone(&access));
    if config.auth {
        bootstrap_admin(&auth, &access, config.admin_password.as_deref())?;
    }
    datasets.set_system_schema(Arc::new(SystemTables::new(
        Arc::clone(&cluster),
        Arc::clone(&jobs),
        Arc::clone(&access),
        catalog.clone(),
        Arc::clone(datasets.reflection_state()),
        config.test_sources,
    )));
    let channels = Arc::new(FlightChannels::new().with_secret(config.cluster_secret.clone()));
    // Files in executors' data directories, for planning scans of them.
    let cluster_files = Arc::new(ClusterFileStore::new(
        Arc::clone(&cluster),
        Arc::clone(&channels),
    ));
    let url = url::Url::parse(CLUSTER_FILES_URL).map_err(|e| {
        QuarryError::from(CoordinatorError::invariant(format!(
            "cluster files URL: {e}"
        )))
    })?;
    datasets
        .runtime()
        .register_object_store(&url, cluster_files);
    let scheduler = Arc::new(Scheduler::new(Arc::clone(&cluster), channels));
    let engine = Engine::new(
        datasets,
        Arc::clone(&auth),
        Arc::clone(&jobs),
        scheduler,
        EngineLimits {
            admission: Admission::new(config.admission),
            request: config.limits.clone(),
            fetch_timeout: config.fetch_timeout,
            results_cache_size: config.results_cache_size,
        },
        tasks.clone(),
    )?;

    let stop = tasks.stopping();
    cluster.spawn_expiry(&tasks);
    jobs.spawn_reaper(Duration::from_millis(500), &tasks);
    engine.spawn_refresh_scheduler(Duration::from_secs(2));

    // Every frontend gets the engine as a QueryService, and nothing else.
    let service: Arc<dyn QueryService> = Arc::new(Arc::clone(&engine));
    let flight =
        FlightSqlFrontend::new(Arc::clone(&service)).into_service(config.limits.message_size);
    let connections = config.limits.connections;
    let flight_listener =
        LimitedListener::new(listeners.flight, connections, "Flight SQL", Refusal::Close);
    let flight_stop = stop.clone();
    let mut flight_server = tonic::transport::Server::builder();
    let mut https = None;
    if let Some(tls) = &config.tls {
        flight_server = flight_server
            .tls_config(tls.tonic_config()?)
            .map_err(|e| QuarryError::invalid(format!("TLS for Flight SQL: {e}")))?;
        https = Some(tls.rustls_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?);
    }
    tasks.spawn(async move {
        let served = flight_server
            .add_service(flight)
            .serve_with_incoming_shutdown(flight_listener.incoming(), flight_stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("Flight SQL server stopped: {e}");
        }
    });

    let internal = action_service(
        "internal",
        Arc::new(MembershipService::new(Arc::clone(&cluster), {
            let datasets = Arc::clone(engine.datasets());
            Arc::new(move |url: &str| datasets.store_spec(url))
        })),
        config.cluster_secret.clone(),
    );
    let internal_stop = stop.clone();
    tasks.spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(internal)
            .serve_with_incoming_shutdown(
                grpc_incoming(listeners.internal),
                internal_stop.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!("internal server stopped: {e}");
        }
    });

    let pg_service = Arc::clone(&service);
    let app = router(AppState { service }, &config.limits);
    let http_stop = stop.clone();
    let http_listener = match https {
        Some(tls) => Either::Left(TlsListener::new(
            LimitedListener::new(listeners.http, connections, "HTTPS", Refusal::Close),
            tls,
        )?),
        None => Either::Right(HttpListener(LimitedListener::new(
            listeners.http,
            connections,
            "HTTP",
            Refusal::Http,
        ))),
    };
    tasks.spawn(async move {
        let served = match http_listener {
            Either::Left(tls) => {
                axum::serve(tls, app)
                    .with_graceful_shutdown(http_stop.cancelled_owned())
                    .await
            }
            Either::Right(http) => {
                axum::serve(http, app)
                    .with_graceful_shutdown(http_stop.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!("HTTP server stopped: {e}");
        }
    });

    let pg_addr = match listeners.pg {
        Some(listener) => {
            let addr = local_addr(&listener)?;
            let config = crate::frontend::pgwire::PgWireConfig {
                tls: match &config.tls {
                    Some(tls) => Some(tls.rustls_config(vec![b"postgresql".to_vec()])?),
                    None => None,
                },
                max_connections: connections,
            };
            let (service, pg_stop) = (Arc::clone(&pg_service), stop.clone());
            tasks.spawn(crate::frontend::pgwire::serve(
                listener, service, config, pg_stop,
            ));
            Some(addr)
        }
        None => None,
    };

    tracing::info!(%flight_addr, %http_addr, %internal_addr, ?pg_addr, "coordinator listening");
    Ok(RunningCoordinator {
        flight_addr,
        http_addr,
        internal_addr,
        pg_addr,
        engine,
        cluster,
    })
}
