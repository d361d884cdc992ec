//! Pooled gRPC channels to Flight endpoints (executors, the coordinator's internal service).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use arrow_flight::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

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

/// One lazily-connected channel per endpoint, shared by every caller.
#[derive(Debug, Default)]
pub struct FlightChannels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl FlightChannels {
    pub fn new() -> Self {
        Self::default()
    }

    /// A channel to `endpoint` (`http://host:port`), created on first use.
    pub fn channel(&self, endpoint: &str) -> Result<Channel, QuarryError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| QuarryError::internal("flight channel pool lock poisoned"))?;
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| QuarryError::invalid(format!("bad Flight endpoint {endpoint}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// A Flight client to `endpoint` without a message size cap.
    pub fn client(&self, endpoint: &str) -> Result<FlightClient, QuarryError> {
        Ok(FlightClient::new_from_inner(raw_client(
            self.channel(endpoint)?,
        )))
    }

    /// Forget the channel to an endpoint (after its process went away).
    pub fn forget(&self, endpoint: &str) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(endpoint);
        }
    }
}

/// The generated client on a channel, with Quarry's message limits.
pub fn raw_client(channel: Channel) -> FlightServiceClient<Channel> {
    FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
