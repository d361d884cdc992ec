//! Pooled gRPC channels to Flight endpoints (executors, the coordinator's internal service).
//!
//! Two kinds of connection, because HTTP/2 shares one flow-control window among all the
//! streams of a connection:
//! - **control** ([`FlightChannels::client`]): one shared connection per endpoint for calls
//!   whose answers are read as soon as they arrive (run a task, heartbeat, release, status);
//! - **data** ([`FlightChannels::data_client`]): exchange reads. Each stream gets a
//!   connection of its own for as long as it is open ([`DataLease`]), taken from a pool of
//!   idle ones. A consumer may stop reading a stream for a long time (a join reads its
//!   probe side only after its build side; DataFusion starts the inputs of a coalesce
//!   eagerly and they stop at a bounded channel). On a shared connection the data such a
//!   stream has buffered counts against the connection's window, and once a few of them
//!   fill it, every other stream on it stalls — including the one the consumer waits for.
//!   That deadlocked multi-slot clusters (two tasks of one executor reading from the same
//!   peer). With a connection per open stream a stream's buffer can only hold itself up,
//!   exactly as DataFusion's bounded channels do in one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_flight::error::FlightError;
use futures::Stream;
use futures::stream::BoxStream;

use arrow_flight::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

use crate::cluster_secret::{ClusterSecret, SECRET_HEADER};
use crate::error::QuarryError;

/// Large enough for any batch or plan we send; the tonic default (4 MiB) is not.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Connections accepted on `listener` for a gRPC server, with `TCP_NODELAY` set.
///
/// `Server::tcp_nodelay` only applies to listeners tonic binds itself; without it every
/// small response waits for the peer's delayed ACK (about 40 ms per round trip).
pub fn grpc_incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Idle data connections kept per endpoint; more may be open while streams need them.
const IDLE_DATA_CONNECTIONS: usize = 32;

type IdlePool = Arc<Mutex<HashMap<String, Vec<Channel>>>>;

/// One lazily-connected control channel per endpoint, shared by every caller, and a pool
/// of data connections each used by one stream at a time.
#[derive(Debug, Default)]
pub struct FlightChannels {
    channels: Mutex<HashMap<String, Channel>>,
    idle: IdlePool,
    /// Where connections do their I/O: the runtime these channels were made on (the one
    /// serving RPCs), not whichever asks first — on an executor that is the task
    /// runtime, whose threads compute.
    io: Option<tokio::runtime::Handle>,
    /// Sent on every call, when the cluster has one.
    secret: Option<ClusterSecret>,
}

/// Spawns connection tasks on one runtime.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for OnRuntime
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

/// A data connection used by one stream; it goes back to the pool only when that stream
/// ended cleanly ([`DataLease::release`]); one dropped mid-way is closed.
#[derive(Debug)]
pub struct DataLease {
    endpoint: String,
    channel: Option<Channel>,
    idle: IdlePool,
}

impl DataLease {
    /// The stream on this connection ended: the connection can carry another.
    pub fn release(mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        if let Ok(mut idle) = self.idle.lock() {
            let pool = idle.entry(std::mem::take(&mut self.endpoint)).or_default();
            if pool.len() < IDLE_DATA_CONNECTIONS {
                pool.push(channel);
            }
        }
    }
}

/// A stream that holds its connection's lease, and returns it when it ends.
pub struct LeasedStream<T> {
    inner: BoxStream<'static, Result<T, FlightError>>,
    lease: Option<DataLease>,
}

impl<T> LeasedStream<T> {
    pub fn new(inner: BoxStream<'static, Result<T, FlightError>>, lease: DataLease) -> Self {
        LeasedStream {
            inner,
            lease: Some(lease),
        }
    }
}

impl<T> Stream for LeasedStream<T> {
    type Item = Result<T, FlightError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            // A stream that failed leaves its connection in an unknown state.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }
}

impl FlightChannels {
    /// Channels whose connections run on the current runtime (when there is one).
    pub fn new() -> Self {
        FlightChannels {
            io: tokio::runtime::Handle::try_current().ok(),
            ..Self::default()
        }
    }

    /// Every client made from here carries the cluster secret.
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> Self {
        self.secret = secret;
        self
    }

    /// A Flight client on `channel` that shows the cluster secret.
    fn flight_client(&self, channel: Channel) -> Result<FlightClient, QuarryError> {
        let mut client = FlightClient::new_from_inner(raw_client(channel));
        if let Some(secret) = &self.secret {
            client
                .add_header(SECRET_HEADER, secret.as_str())
                .map_err(|e| QuarryError::invalid(format!("unusable cluster secret: {e}")))?;
        }
        Ok(client)
    }

    /// A channel to `endpoint` (`http://host:port`), created on first use.
    fn channel(&self, endpoint: &str) -> Result<Channel, QuarryError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| QuarryError::internal("flight channel pool lock poisoned"))?;
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = connect(endpoint, self.io.as_ref())?;
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// A Flight client on a data connection of its own, for one exchange stream; keep the
    /// lease with the stream (see [`LeasedStream`]).
    pub fn data_client(&self, endpoint: &str) -> Result<(FlightClient, DataLease), QuarryError> {
        let reused = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.get_mut(endpoint).and_then(Vec::pop));
        let channel = match reused {
            Some(channel) => channel,
            None => connect(endpoint, self.io.as_ref())?,
        };
        let lease = DataLease {
            endpoint: endpoint.to_string(),
            channel: Some(channel.clone()),
            idle: Arc::clone(&self.idle),
        };
        Ok((self.flight_client(channel)?, lease))
    }

    /// A Flight client to `endpoint` without a message size cap.
    pub fn client(&self, endpoint: &str) -> Result<FlightClient, QuarryError> {
        self.flight_client(self.channel(endpoint)?)
    }

    /// Forget the channel to an endpoint (after its process went away).
    pub fn forget(&self, endpoint: &str) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(endpoint);
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.remove(endpoint);
        }
    }
}

/// A lazily-connected channel to `endpoint`, its I/O on `io` when given.
fn connect(endpoint: &str, io: Option<&tokio::runtime::Handle>) -> Result<Channel, QuarryError> {
    let mut endpoint = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| QuarryError::invalid(format!("bad Flight endpoint {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(io) = io {
        endpoint = endpoint.executor(OnRuntime(io.clone()));
    }
    Ok(endpoint.connect_lazy())
}

/// The generated client on a channel, with Quarry's message limits.
pub fn raw_client(channel: Channel) -> FlightServiceClient<Channel> {
    FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
