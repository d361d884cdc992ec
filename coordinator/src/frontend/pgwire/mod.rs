//! The PostgreSQL wire protocol door (`--pg`, default `127.0.0.1:15432`): psql, psycopg,
//! SQLAlchemy, pandas and BI tools connect as they would to PostgreSQL 16.
//!
//! pgwire speaks the protocol; this module turns it into [`QueryService`] calls, so jobs,
//! sessions, grants, admission, cancelling and the job history work as for every door,
//! and jobs record `pgwire` as their frontend. Each connection gets its own handlers
//! ([`Connection`]): its login state, session, settings, cursors and running job live
//! there and go with it.
//!
//! - `startup.rs`: logins (SCRAM-SHA-256 against Quarry's users; a personal access token
//!   as the password of user `token`, over TLS or loopback), the session it opens.
//! - `query.rs`: statements run and answered, the simple protocol, cursors,
//!   `SET`/`SHOW`/transactions; `extended.rs`: parse, describe, bind, execute.
//! - `catalog_sql.rs`: clients' catalog queries rewritten into SQL DataFusion plans.
//! - `statements.rs`: what a statement is (query, command, or answered here).
//! - `encode.rs`: SQLSTATEs and Arrow → PostgreSQL rows.

mod catalog_sql;
mod encode;
mod extended;
mod query;
mod startup;
mod statements;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pgwire::api::cancel::CancelHandler;
use pgwire::api::{
    ClientInfo, ErrorHandler, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::PgWireError;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::service::{QueryService, SessionHandle};

/// The running job of a connection, for cancel requests (they come on another socket).
type Running = Mutex<Option<(SessionHandle, String)>>;

/// Connections by backend key, for cancel requests.
#[derive(Default)]
pub(crate) struct Backends {
    keys: RandomPidSecretKeyGenerator,
    by_pid: Mutex<HashMap<i32, (bytes::Bytes, Weak<Running>)>>,
}

impl Backends {
    fn register(&self, client: &dyn ClientInfo, running: &Arc<Running>) -> (i32, SecretKey) {
        let (pid, key) = self.keys.generate(client);
        lock(&self.by_pid).insert(pid, (key.to_bytes(), Arc::downgrade(running)));
        (pid, key)
    }

    fn forget(&self, pid: i32) {
        lock(&self.by_pid).remove(&pid);
    }

    /// Cancel the job running on the connection with this key, if any.
    fn cancel(&self, service: &dyn QueryService, pid: i32, key: &SecretKey) {
        let running = match lock(&self.by_pid).get(&pid) {
            Some((secret, running)) if *secret == key.to_bytes() => running.upgrade(),
            _ => None,
        };
        let job = running.and_then(|r| lock(&r).clone());
        if let Some((session, id)) = job
            && let Err(e) = service.cancel(&session, &id, "cancelled by the client")
        {
            tracing::debug!("cancel request for job {id}: {e}");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One client connection's handlers and state.
pub(crate) struct Connection {
    me: Weak<Connection>,
    service: Arc<dyn QueryService>,
    backends: Arc<Backends>,
    login: tokio::sync::Mutex<startup::Login>,
    session: Mutex<Option<SessionHandle>>,
    /// PostgreSQL settings the client set (`application_name`, `DateStyle`, ...).
    settings: Mutex<HashMap<String, String>>,
    running: Arc<Running>,
    /// Queries started for a Describe of their portal, by portal name, until Execute.
    started: Mutex<HashMap<String, crate::service::JobHandle>>,
    pid: Mutex<Option<i32>>,
}

impl Connection {
    fn new(service: Arc<dyn QueryService>, backends: Arc<Backends>) -> Arc<Self> {
        Arc::new_cyclic(|me| Connection {
            me: me.clone(),
            service,
            backends,
            login: tokio::sync::Mutex::new(startup::Login::Initial),
            session: Mutex::new(None),
            settings: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(None)),
            started: Mutex::new(HashMap::new()),
            pid: Mutex::new(None),
        })
    }

    /// The session, once logged in.
    fn session(&self) -> Result<SessionHandle, PgWireError> {
        lock(&self.session)
            .clone()
            .ok_or_else(|| encode::fatal("08P01", "not logged in"))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(pid) = *lock(&self.pid) {
            self.backends.forget(pid);
        }
        if let Some(session) = lock(&self.session).take() {
            self.service.close_session(&session);
        }
    }
}

/// What pgwire asks of a connection: every handler is the connection itself.
struct Handlers(Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.0)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

#[async_trait::async_trait]
impl CancelHandler for Connection {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.backends
            .cancel(self.service.as_ref(), request.pid, &request.secret_key);
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        if let PgWireError::IoError(e) = error {
            tracing::debug!(client = %client.socket_addr(), "PostgreSQL client: {e}");
        }
    }
}

/// How the door is set up.
pub(crate) struct PgWireConfig {
    /// Answer SSLRequest with TLS on this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once; one more is refused (SQLSTATE 53300).
    pub max_connections: usize,
}

/// Serve PostgreSQL clients on `listener` until `stop`; connections still open then are
/// closed.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<dyn QueryService>,
    config: PgWireConfig,
    stop: CancellationToken,
) {
    let backends = Arc::new(Backends::default());
    let tls = config
        .tls
        .map(pgwire::tokio::tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(AtomicUsize::new(0));
    // Owned here: dropping the set when serving stops aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (mut socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, do not spin.
                tracing::warn!("PostgreSQL door: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= config.max_connections {
            connections.spawn(async move {
                let refused =
                    tokio::time::timeout(std::time::Duration::from_secs(5), refuse(&mut socket));
                let _ = refused.await;
                let _ = socket.shutdown().await;
            });
            continue;
        }
        let slot = ConnectionSlot::take(&open);
        let connection = Connection::new(Arc::clone(&service), Arc::clone(&backends));
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, Handlers(connection)).await {
                tracing::debug!(%peer, "PostgreSQL connection ended: {e}");
            }
        });
    }
}

/// One of the open connections, counted while it lives.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot(Arc::clone(open))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tell a client over the connection limit why, where it looks for the reason: after
/// its startup packet (declining TLS first, as libpq asks for it before anything else).
async fn refuse(socket: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    const SSL_REQUEST: u32 = 80_877_103;
    const GSS_REQUEST: u32 = 80_877_104;
    let mut head = [0u8; 8];
    socket.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut rest = length.saturating_sub(8).min(10_000);
    if length == 8 && (code == SSL_REQUEST || code == GSS_REQUEST) {
        socket.write_all(b"N").await?;
        socket.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        rest = length.saturating_sub(8).min(10_000);
    }
    let mut startup = vec![0u8; rest];
    socket.read_exact(&mut startup).await?;
    socket.write_all(&too_many_connections()).await
}

/// A FATAL ErrorResponse (53300): clients show it as the reason their connection failed.
fn too_many_connections() -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&body);
    message
}
