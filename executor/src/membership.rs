//! Joining the cluster: register with the coordinator, heartbeat every interval, register
//! again when the coordinator forgot us, and say goodbye on a graceful stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message;
use quarry_common::QuarryError;
use quarry_common::action_service::call_action;
use quarry_common::flight_channels::FlightChannels;
use quarry_common::protocol::{
    self, ACTION_DEREGISTER, ACTION_HEARTBEAT, ACTION_REGISTER, Deregistration,
    ExecutorRegistration, Heartbeat, HeartbeatResponse, LocalFile, RegistrationResponse,
};
use tokio_util::sync::CancellationToken;

/// Heartbeat failures in a row after which we start over with a registration.
const MAX_MISSED_HEARTBEATS: u32 = 3;

/// Heartbeats between looks at the data directory for new or removed files.
const RESCAN_EVERY: u32 = 10;

pub struct Membership {
    pub coordinator: String,
    /// Everything but the files, which are listed afresh at each registration.
    pub registration: ExecutorRegistration,
    pub channels: Arc<FlightChannels>,
    pub heartbeat: Arc<dyn Fn() -> Heartbeat + Send + Sync>,
    pub files: Arc<dyn Fn() -> Vec<LocalFile> + Send + Sync>,
    /// Registered with the coordinator now (what `/readyz` reports).
    pub registered: Arc<AtomicBool>,
}

impl Membership {
    async fn call(&self, action: &str, body: Vec<u8>) -> Result<bytes::Bytes, QuarryError> {
        let mut client = self.channels.client(&self.coordinator)?;
        call_action(&mut client, action, body).await
    }

    async fn register(&self, files: Vec<LocalFile>) -> Result<Duration, QuarryError> {
        let registration = ExecutorRegistration {
            local_files: files,
            ..self.registration.clone()
        };
        let reply = self
            .call(ACTION_REGISTER, registration.encode_to_vec())
            .await?;
        let response: RegistrationResponse = protocol::decode(&reply, "registration response")?;
        Ok(Duration::from_millis(
            response.heartbeat_interval_ms.clamp(100, 60_000),
        ))
    }

    /// Stay registered until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let id = self.registration.executor_id.clone();
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let files = (self.files)();
            let interval = match self.register(files.clone()).await {
                Ok(interval) => {
                    tracing::info!(executor = %id, coordinator = %self.coordinator, "registered");
                    self.registered.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    interval
                }
                Err(e) => {
                    self.registered.store(false, Ordering::Relaxed);
                    tracing::warn!(executor = %id, "registration failed, retrying: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let mut missed = 0;
            let mut beats = 0u32;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                beats += 1;
                if beats.is_multiple_of(RESCAN_EVERY) && (self.files)() != files {
                    tracing::info!(executor = %id, "data directory changed; registering again");
                    break;
                }
                let beat = (self.heartbeat)();
                match self.call(ACTION_HEARTBEAT, beat.encode_to_vec()).await {
                    Ok(reply) => {
                        missed = 0;
                        match protocol::decode::<HeartbeatResponse>(&reply, "heartbeat response") {
                            Ok(r) if r.known => {}
                            _ => {
                                tracing::info!(executor = %id, "coordinator does not know us; registering again");
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        missed += 1;
                        tracing::warn!(executor = %id, missed, "heartbeat failed: {e}");
                        if missed >= MAX_MISSED_HEARTBEATS {
                            break;
                        }
                    }
                }
            }
        }
        self.registered.store(false, Ordering::Relaxed);
        let goodbye = Deregistration { executor_id: id };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.call(ACTION_DEREGISTER, goodbye.encode_to_vec()),
        )
        .await;
    }
}
