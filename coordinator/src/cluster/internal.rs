//! The coordinator's internal Flight service, where executors register and heartbeat.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use quarry_common::action_service::{ActionHandler, ResultStream};
use quarry_common::protocol::{
    self, ACTION_DEREGISTER, ACTION_HEARTBEAT, ACTION_OBJECT_STORE, ACTION_REGISTER,
    Deregistration, ExecutorRegistration, Heartbeat, HeartbeatResponse, ObjectStoreRequest,
    ObjectStoreSpec, RegistrationResponse,
};
use tonic::Status;

use super::Cluster;

/// The full spec of a registered object store, by URL.
pub(crate) type StoreLookup = Arc<dyn Fn(&str) -> Option<ObjectStoreSpec> + Send + Sync>;

pub(crate) struct MembershipService {
    cluster: Arc<Cluster>,
    stores: StoreLookup,
}

impl MembershipService {
    pub(crate) fn new(cluster: Arc<Cluster>, stores: StoreLookup) -> Self {
        MembershipService { cluster, stores }
    }
}

fn reply(message: impl Message) -> ResultStream<Bytes> {
    let body = Bytes::from(message.encode_to_vec());
    futures::stream::once(async move { Ok(body) }).boxed()
}

#[tonic::async_trait]
impl ActionHandler for MembershipService {
    async fn action(&self, action_type: &str, body: Bytes) -> Result<ResultStream<Bytes>, Status> {
        match action_type {
            ACTION_REGISTER => {
                let registration: ExecutorRegistration =
                    protocol::decode(&body, "executor registration")?;
                if registration.executor_id.is_empty() || registration.flight_endpoint.is_empty() {
                    return Err(Status::invalid_argument(
                        "registration needs an executor id and a Flight endpoint",
                    ));
                }
                self.cluster.register(registration);
                Ok(reply(RegistrationResponse {
                    heartbeat_interval_ms: self.cluster.heartbeat_interval().as_millis() as u64,
                }))
            }
            ACTION_HEARTBEAT => {
                let beat: Heartbeat = protocol::decode(&body, "heartbeat")?;
                let known = self.cluster.heartbeat(&beat);
                Ok(reply(HeartbeatResponse { known }))
            }
            ACTION_DEREGISTER => {
                let goodbye: Deregistration = protocol::decode(&body, "deregistration")?;
                self.cluster.deregister(&goodbye.executor_id);
                Ok(futures::stream::empty().boxed())
            }
            // Only callers with the cluster secret get here (the service checks it).
            ACTION_OBJECT_STORE => {
                let request: ObjectStoreRequest = protocol::decode(&body, "object store request")?;
                match (self.stores)(&request.url) {
                    Some(spec) => Ok(reply(spec)),
                    None => Err(Status::not_found(format!(
                        "no object store {} is registered",
                        request.url
                    ))),
                }
            }
            other => Err(Status::invalid_argument(format!(
                "unknown coordinator action '{other}'"
            ))),
        }
    }
}
