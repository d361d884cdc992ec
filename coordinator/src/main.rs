//! `quarry`: one binary for every part of a Quarry cluster.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use quarry_common::QuarryError;
use quarry_common::cluster_secret::ClusterSecret;
use quarry_coordinator::demo;
use quarry_coordinator::limits::{self, Limits};
use quarry_coordinator::local_cluster::{LocalCluster, LocalClusterConfig};
use quarry_coordinator::server::{
    self, AdmissionConfig, CoordinatorConfig, Listeners, Location, parse_duration,
};
use quarry_executor::ExecutorConfig;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "quarry",
    version,
    about = "Quarry: a distributed SQL query engine for data lakes",
    long_about = "Quarry: a distributed SQL query engine for data lakes.\n\nStart everything on one machine with `quarry up`, or run `quarry coordinator` and any number of `quarry executor` processes. Every flag can also be set with the QUARRY_* environment variable shown in its help, or as a key of a TOML file given with --config (flag > environment > file > default; `quarry config --print coordinator --config quarry.toml` shows the result)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (`info`, `warn`, `quarry_coordinator=debug`, ...).
    #[arg(long, env = "QUARRY_LOG", global = true)]
    log: Option<String>,
    /// Export traces of every query (the job, planning, stages, tasks on the executors) to
    /// this OpenTelemetry collector over OTLP/gRPC (`http://collector:4317`); none without it.
    #[arg(long, env = "QUARRY_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a coordinator and executors in one process, with demo data on first start.
    Up(UpArgs),
    /// Start a coordinator: Flight SQL, REST + console, and the endpoint executors join.
    Coordinator(CoordinatorArgs),
    /// Start an executor that joins a coordinator and runs query tasks.
    Executor(ExecutorArgs),
    /// Write a backup of the catalog to a file, from a running coordinator (`--coordinator
    /// http://HOST:9047`) or a stopped one's directory (`--dir`).
    Backup(cli::backup::BackupArgs),
    /// Rebuild a catalog in `--dir` from a backup file.
    Restore(cli::backup::RestoreArgs),
    /// Show the settings a command would run with (`quarry config --print coordinator
    /// --config quarry.toml`), secrets masked.
    Config(cli::config_file::ConfigArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// A TOML file of settings: every flag of this command as a key (`max-running-queries
    /// = 8`); flags and environment variables override it.
    #[arg(long, env = "QUARRY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the catalog, job results, demo data and spill files.
    #[arg(long, env = "QUARRY_DIR", default_value = "./quarry-data")]
    dir: PathBuf,
    /// Flight SQL address for clients (ADBC, JDBC, qsql).
    #[arg(long, env = "QUARRY_FLIGHT", default_value = "127.0.0.1:32010")]
    flight: String,
    /// HTTP address for the REST API and the console.
    #[arg(long, env = "QUARRY_HTTP", default_value = "127.0.0.1:9047")]
    http: String,
    /// PostgreSQL protocol address for psql, psycopg, SQLAlchemy and BI tools (`off`: none).
    #[arg(long, env = "QUARRY_PG", default_value = "127.0.0.1:15432")]
    pg: String,
    /// Require logins (Flight SQL Basic→Bearer handshake, REST /api/v1/login).
    #[arg(long, env = "QUARRY_AUTH")]
    auth: bool,
    /// Create or reset the `admin` user with this password (with --auth; without it a
    /// password is generated and printed once, on first start).
    #[arg(long, env = "QUARRY_ADMIN_PASSWORD")]
    admin_password: Option<String>,
    /// Listen beyond loopback without --auth (everyone who connects is an admin) or
    /// without a cluster secret.
    #[arg(long, env = "QUARRY_INSECURE")]
    insecure: bool,
    /// Serve Flight SQL and HTTP over TLS with this certificate chain (PEM).
    #[arg(long, env = "QUARRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "QUARRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The secret executors must show to join (and every cluster call carries); `quarry
    /// up` generates one.
    #[arg(long, env = "QUARRY_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Queries that may run on the executors at once; more wait in the queue.
    #[arg(long, env = "QUARRY_MAX_RUNNING_QUERIES", default_value_t = server::DEFAULT_MAX_RUNNING)]
    max_running_queries: usize,
    /// Queries that may wait to run; one more is refused (RESOURCE_EXHAUSTED, HTTP 429).
    #[arg(long, env = "QUARRY_MAX_QUEUED_QUERIES", default_value_t = server::DEFAULT_MAX_QUEUED)]
    max_queued_queries: usize,
    /// Longest a query waits in the queue ('5 min', '30s').
    #[arg(long, env = "QUARRY_QUEUE_TIMEOUT", default_value = "5 min", value_parser = duration)]
    queue_timeout: Duration,
    /// A Flight SQL query whose results no client starts reading this soon is cancelled.
    #[arg(long, env = "QUARRY_FETCH_TIMEOUT", default_value = "60s", value_parser = duration)]
    fetch_timeout: Duration,
    /// When ready, write the listeners' addresses here as JSON (`{"flight", "http", "pg",
    /// "internal"}`), for scripts and tests that bind port 0.
    #[arg(long, env = "QUARRY_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Offer `sys.test_stall`, a source that never yields (for tests of the watchdog).
    #[arg(long, env = "QUARRY_TEST_SOURCES", hide = true)]
    test_sources: bool,
    /// Where managed tables (CREATE TABLE ... AS SELECT) live: a folder or
    /// `s3://bucket/prefix` (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION); `<dir>/warehouse` by default. On a cluster of
    /// several machines a folder must be one they all share.
    #[arg(long, env = "QUARRY_WAREHOUSE")]
    warehouse: Option<String>,
    /// Where reflections' materializations live: a folder or `s3://bucket/prefix` (keys
    /// as for --warehouse); `<dir>/reflections` by default.
    #[arg(long, env = "QUARRY_REFLECTION_STORE")]
    reflection_store: Option<String>,
    /// Memory for the queries the coordinator runs itself (small plans, final stages), in
    /// bytes or with a suffix; sorts, joins and aggregations spill to disk past it.
    #[arg(long, env = "QUARRY_QUERY_MEMORY", default_value = "2GB")]
    query_memory: String,
    /// Memory for the results cache (repeated deterministic queries answered without
    /// running); 0 turns it off.
    #[arg(long, env = "QUARRY_RESULTS_CACHE_SIZE", default_value = "256MB")]
    results_cache_size: String,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What one request may ask; past a limit it is refused with an error naming it.
#[derive(Args, Clone)]
struct LimitArgs {
    /// Longest SQL text of one request, in bytes.
    #[arg(long, env = "QUARRY_MAX_SQL_LENGTH", default_value_t = limits::DEFAULT_SQL_LENGTH)]
    max_sql_length: usize,
    /// Most statements in one request (a script).
    #[arg(long, env = "QUARRY_MAX_STATEMENTS", default_value_t = limits::DEFAULT_STATEMENTS)]
    max_statements: usize,
    /// Deepest nesting of parentheses, brackets, CASE and subqueries (at most 1,000).
    #[arg(long, env = "QUARRY_MAX_NESTING", default_value_t = limits::DEFAULT_NESTING)]
    max_nesting: usize,
    /// Deepest expression: `1+1+...+1` with N terms is N deep (at most 5,000).
    #[arg(long, env = "QUARRY_MAX_EXPRESSION_DEPTH", default_value_t = limits::DEFAULT_EXPRESSION_DEPTH)]
    max_expression_depth: usize,
    /// Most expression nodes in one statement (values of IN lists count).
    #[arg(long, env = "QUARRY_MAX_EXPRESSION_NODES", default_value_t = limits::DEFAULT_EXPRESSION_NODES)]
    max_expression_nodes: usize,
    /// Most operators on one path of a plan, and set operations in one chain (at most 2,000).
    #[arg(long, env = "QUARRY_MAX_PLAN_DEPTH", default_value_t = limits::DEFAULT_PLAN_DEPTH)]
    max_plan_depth: usize,
    /// Most tables and subqueries one statement reads (at most 2,000).
    #[arg(long, env = "QUARRY_MAX_RELATIONS", default_value_t = limits::DEFAULT_RELATIONS)]
    max_relations: usize,
    /// Largest REST request body (16MB, 512KB, ...).
    #[arg(long, env = "QUARRY_MAX_REQUEST_BODY", default_value = "16MB", value_parser = byte_size)]
    max_request_body: usize,
    /// Largest Flight SQL message, either way (64MB, ...).
    #[arg(long, env = "QUARRY_MAX_MESSAGE_SIZE", default_value = "64MB", value_parser = byte_size)]
    max_message_size: usize,
    /// Most connections each client listener (Flight SQL, HTTP) keeps open at once.
    #[arg(long, env = "QUARRY_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_CONNECTIONS)]
    max_connections: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            sql_length: self.max_sql_length,
            statements: self.max_statements,
            nesting: self.max_nesting,
            expression_depth: self.max_expression_depth,
            expression_nodes: self.max_expression_nodes,
            plan_depth: self.max_plan_depth,
            relations: self.max_relations,
            request_body: self.max_request_body,
            message_size: self.max_message_size,
            connections: self.max_connections,
        }
    }
}

fn byte_size(value: &str) -> Result<usize, String> {
    parse_bytes(value).map_err(|e| e.message)
}

fn duration(value: &str) -> Result<Duration, String> {
    parse_duration("the value", value).map_err(|e| e.message)
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Executors to start in this process.
    #[arg(long, env = "QUARRY_EXECUTORS", default_value_t = 2)]
    executors: usize,
    /// Task slots per executor; by default the machine's cores are shared among them.
    #[arg(long, env = "QUARRY_SLOTS")]
    slots: Option<usize>,
    /// Rows of demo orders to generate on first start (0: no demo data).
    #[arg(long, env = "QUARRY_DEMO_ROWS", default_value_t = 5_000_000)]
    demo_rows: usize,
}

#[derive(Args)]
struct CoordinatorArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Address executors register at.
    #[arg(long, env = "QUARRY_INTERNAL", default_value = "127.0.0.1:45678")]
    internal: String,
}

#[derive(Args)]
struct ExecutorArgs {
    /// A TOML file of settings: every flag of this command as a key (`max-running-queries
    /// = 8`); flags and environment variables override it.
    #[arg(long, env = "QUARRY_CONFIG")]
    config: Option<PathBuf>,
    /// The cluster's secret, as the coordinator was given it.
    #[arg(long, env = "QUARRY_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// The coordinator's internal endpoint.
    #[arg(
        long,
        env = "QUARRY_COORDINATOR",
        default_value = "http://127.0.0.1:45678"
    )]
    coordinator: String,
    /// Address of this executor's Flight service (port 0 picks a free port).
    #[arg(long, env = "QUARRY_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Host name others reach this executor by, when it differs from the listen address.
    #[arg(long, env = "QUARRY_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Scratch directory (spill files).
    #[arg(long, env = "QUARRY_DIR", default_value = "./quarry-executor")]
    dir: PathBuf,
    /// A directory of data files this executor holds.
    #[arg(long, env = "QUARRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Tasks this executor runs at once (default: its cores).
    #[arg(long, env = "QUARRY_SLOTS")]
    slots: Option<usize>,
    /// Memory for query operators in bytes, or with a suffix (512MB, 4GB); sorts, joins
    /// and aggregations spill to disk past it.
    #[arg(long, env = "QUARRY_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Memory for task outputs waiting to be read by the next stage; past it they go to disk.
    #[arg(long, env = "QUARRY_EXCHANGE_MEMORY", default_value = "1GB")]
    exchange_memory: String,
    /// A stable id for this executor (default: random).
    #[arg(long, env = "QUARRY_EXECUTOR_ID")]
    id: Option<String>,
    /// Serve /healthz, /readyz and /metrics over HTTP on this address (none when absent).
    #[arg(long, env = "QUARRY_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// Require this token (`Authorization: Bearer`) of /metrics scrapers; open without it.
    #[arg(long, env = "QUARRY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn parse_bytes(text: &str) -> Result<usize, QuarryError> {
    let t = text.trim().to_ascii_uppercase();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .unwrap_or((t.as_str(), ""));
    let n: usize = digits
        .parse()
        .map_err(|_| QuarryError::invalid(format!("not a size: '{text}'")))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => {
            return Err(QuarryError::invalid(format!(
                "unknown size unit '{other}' in '{text}'"
            )));
        }
    };
    Ok(n * scale)
}

/// Wait for Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn coordinator_config(serve: &ServeArgs) -> Result<CoordinatorConfig, QuarryError> {
    let mut config = CoordinatorConfig::new(&serve.dir);
    config.auth = serve.auth;
    config.admin_password = serve.admin_password.clone();
    config.insecure = serve.insecure;
    if let (Some(cert), Some(key)) = (&serve.tls_cert, &serve.tls_key) {
        config.tls = Some(quarry_coordinator::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.cluster_secret = serve
        .cluster_secret
        .as_deref()
        .map(ClusterSecret::new)
        .transpose()?;
    config.admission = AdmissionConfig {
        max_running: serve.max_running_queries,
        max_queued: serve.max_queued_queries,
        queue_timeout: serve.queue_timeout,
    };
    config.fetch_timeout = serve.fetch_timeout;
    config.query_memory = parse_bytes(&serve.query_memory)?;
    config.results_cache_size = parse_bytes(&serve.results_cache_size)?;
    config.test_sources = serve.test_sources;
    config.limits = serve.limits.limits();
    config.warehouse = serve
        .warehouse
        .as_deref()
        .map(|text| Location::parse(text, |key| std::env::var(key).ok()))
        .transpose()?;
    config.reflection_store = serve
        .reflection_store
        .as_deref()
        .map(|text| Location::parse(text, |key| std::env::var(key).ok()))
        .transpose()?;
    Ok(config)
}

async fn up(args: UpArgs) -> Result<(), QuarryError> {
    let started = Instant::now();
    let executors = args.executors.max(1);
    let slots = args.slots.unwrap_or_else(|| (cores() / executors).max(1));
    let mut config = LocalClusterConfig::new(&args.serve.dir, executors);
    config.coordinator = coordinator_config(&args.serve)?;
    config.flight = args.serve.flight.clone();
    config.http = args.serve.http.clone();
    config.pg = pg_addr(&args.serve);
    config.slots_per_executor = slots;
    let tls = config.coordinator.tls.is_some();
    let cluster = LocalCluster::start(config).await?;
    let coordinator = &cluster.coordinator;
    if args.demo_rows > 0 {
        let fresh = demo::install(
            &coordinator.engine,
            &args.serve.dir.join("demo"),
            args.demo_rows,
        )
        .await?;
        if fresh {
            println!(
                "Generated {} demo orders in {:.1}s",
                args.demo_rows,
                started.elapsed().as_secs_f64()
            );
        }
    }
    write_ready_file(args.serve.ready_file.as_deref(), coordinator, tls)?;
    println!(
        "Quarry is up ({executors} executors, {slots} slot(s) each), ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    print_doors(coordinator, tls);
    println!("Try:");
    println!(
        "  qsql -h {} -p {} -c \"SELECT city, sum(revenue) AS revenue FROM demo.orders GROUP BY city ORDER BY revenue DESC\"",
        coordinator.flight_addr.ip(),
        coordinator.flight_addr.port()
    );
    println!("Press Ctrl-C to stop.");
    stopped().await;
    println!("Stopping…");
    cluster.shutdown().await;
    Ok(())
}

/// The listeners' addresses as JSON, written whole (to a temporary name, then renamed) so
/// a reader never sees half of it.
fn write_ready_file(
    path: Option<&std::path::Path>,
    coordinator: &server::RunningCoordinator,
    tls: bool,
) -> Result<(), QuarryError> {
    let Some(path) = path else {
        return Ok(());
    };
    let (grpc, http) = if tls {
        ("grpc+tls", "https")
    } else {
        ("grpc", "http")
    };
    let pg = coordinator
        .pg_addr
        .map(|a| format!(", \"pg\": \"{a}\""))
        .unwrap_or_default();
    let ready = format!(
        "{{\"flight\": \"{grpc}://{}\", \"http\": \"{http}://{}\", \"internal\": \"{}\"{pg}}}\n",
        coordinator.flight_addr,
        coordinator.http_addr,
        coordinator.internal_endpoint()
    );
    let partial = path.with_extension("partial");
    std::fs::write(&partial, ready)
        .and_then(|_| std::fs::rename(&partial, path))
        .map_err(|e| QuarryError::invalid(format!("cannot write {}: {e}", path.display())))
}

/// The PostgreSQL door's address, unless it is off.
fn pg_addr(args: &ServeArgs) -> Option<String> {
    (!args.pg.eq_ignore_ascii_case("off") && !args.pg.is_empty()).then(|| args.pg.clone())
}

/// The addresses clients connect to, as `quarry up` and `quarry coordinator` print them.
fn print_doors(coordinator: &server::RunningCoordinator, tls: bool) {
    println!(
        "  Flight SQL:  {}://{}",
        if tls { "grpc+tls" } else { "grpc" },
        coordinator.flight_addr
    );
    println!(
        "  HTTP:        {}://{}",
        if tls { "https" } else { "http" },
        coordinator.http_addr
    );
    if let Some(pg) = coordinator.pg_addr {
        println!(
            "  PostgreSQL:  psql -h {} -p {}{}",
            pg.ip(),
            pg.port(),
            if tls { " (sslmode=require)" } else { "" }
        );
    }
}

async fn coordinator(args: CoordinatorArgs) -> Result<(), QuarryError> {
    let mut listeners =
        Listeners::bind(&args.serve.flight, &args.serve.http, &args.internal).await?;
    if let Some(pg) = pg_addr(&args.serve) {
        listeners = listeners.with_pg(&pg).await?;
    }
    let config = coordinator_config(&args.serve)?;
    let tls = config.tls.is_some();
    let coordinator = server::start(config, listeners).await?;
    write_ready_file(args.serve.ready_file.as_deref(), &coordinator, tls)?;
    println!("Quarry coordinator is up");
    print_doors(&coordinator, tls);
    println!("  Internal:    {}", coordinator.internal_endpoint());
    stopped().await;
    coordinator.shutdown().await;
    Ok(())
}

async fn executor(args: ExecutorArgs) -> Result<(), QuarryError> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| QuarryError::invalid(format!("cannot listen on {}: {e}", args.listen)))?;
    let config = ExecutorConfig {
        executor_id: args.id,
        coordinator: args.coordinator,
        advertise_host: args.advertise_host,
        slots: args.slots.unwrap_or_else(cores),
        work_dir: args.dir,
        data_dir: args.data_dir,
        memory_limit: args.memory_limit.as_deref().map(parse_bytes).transpose()?,
        exchange_memory: parse_bytes(&args.exchange_memory)?,
        cluster_secret: args
            .cluster_secret
            .as_deref()
            .map(ClusterSecret::new)
            .transpose()?,
        http: args.http,
        metrics_token: args.metrics_token,
    };
    let executor = quarry_executor::start(listener, config).await?;
    println!("Quarry executor {} is up", executor.executor_id);
    println!("  Flight:      {}", executor.endpoint);
    if let Some(http) = executor.http_address {
        println!("  HTTP:        http://{http} (/healthz, /readyz, /metrics)");
    }
    stopped().await;
    executor.shutdown().await.map_err(QuarryError::from)
}

/// The command line with its `--config` file applied; on a mistake, the exit code after
/// the error has been printed.
fn parse_cli(args: Vec<std::ffi::OsString>) -> Result<Cli, ExitCode> {
    let parsed = cli::config_file::parse(Cli::command(), args)
        .map_err(cli::config_file::ConfigError::exit_code)?;
    Cli::from_arg_matches(&parsed.matches).map_err(|e| {
        let _ = e.print();
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    quarry_common::crypto::install_crypto_provider();
    quarry_common::stack::configure();
    let cli = match parse_cli(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(quarry_common::cpu_runtime::MAX_BLOCKING_THREADS)
        .thread_stack_size(quarry_common::stack::THREAD_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let otlp = cli.otlp_endpoint.clone();
    let (result, telemetry) = runtime.block_on(async {
        let (default, service) = match &cli.command {
            Command::Up(_) => ("warn", "quarry"),
            Command::Coordinator(_) => ("info", "quarry-coordinator"),
            Command::Executor(_) => ("info", "quarry-executor"),
            _ => ("warn", "quarry"),
        };
        let telemetry =
            match cli::telemetry::init(cli.log.as_deref(), default, otlp.as_deref(), service) {
                Ok(t) => t,
                Err(e) => return (Err(e), None),
            };
        let result = match cli.command {
            Command::Up(args) => up(args).await,
            Command::Coordinator(args) => coordinator(args).await,
            Command::Executor(args) => executor(args).await,
            Command::Config(args) => cli::config_file::print_config(Cli::command(), args),
            Command::Backup(args) => cli::backup::backup(args).await,
            Command::Restore(args) => cli::backup::restore(args).await,
        };
        (result, Some(telemetry))
    });
    // Buffered spans are sent while the runtime still runs.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::FAILURE
        }
    }
}
