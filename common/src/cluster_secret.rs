//! The cluster secret: what every process of one cluster shows the others.
//!
//! The coordinator's internal service and every executor's Flight service refuse a call
//! that does not carry it (in the `x-quarry-cluster-secret` header), so a process that
//! merely says it is an executor receives no task, no data and no credential. Clients made
//! by [`crate::flight_channels::FlightChannels`] send it on every call.

use std::sync::Arc;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// The header the secret travels in.
pub const SECRET_HEADER: &str = "x-quarry-cluster-secret";

#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret; an empty one is refused.
    pub fn new(secret: &str) -> Result<Self, crate::QuarryError> {
        if secret.trim().is_empty() {
            return Err(crate::QuarryError::invalid(
                "the cluster secret cannot be empty",
            ));
        }
        Ok(ClusterSecret(Arc::from(secret.trim())))
    }

    /// A fresh random secret (for `quarry up`, whose processes share it in memory).
    pub fn generate() -> Self {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        ClusterSecret(Arc::from(secret))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does this call carry the secret?
    fn accepts(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get(SECRET_HEADER)
            .is_some_and(|v| same_secret(v.as_bytes(), self.0.as_bytes()))
    }
}

/// Whether two secrets are equal, compared in constant time (for any token a caller shows).
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Refuse a call without the secret, and say so in the log (a misconfigured executor, or
/// someone probing the port).
pub fn check(
    secret: Option<&ClusterSecret>,
    metadata: &MetadataMap,
    service: &str,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), Status> {
    let Some(secret) = secret else {
        return Ok(());
    };
    if secret.accepts(metadata) {
        return Ok(());
    }
    let peer = peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let why = if metadata.contains_key(SECRET_HEADER) {
        "a wrong cluster secret"
    } else {
        "no cluster secret"
    };
    tracing::warn!(%peer, service, "refused a call with {why}");
    Err(Status::unauthenticated(
        "this Quarry cluster requires its cluster secret (--cluster-secret / QUARRY_CLUSTER_SECRET)",
    ))
}
