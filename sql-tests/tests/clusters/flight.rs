//! A Flight SQL client, as BI tools and drivers talk to the coordinator.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct FlightSql(pub FlightSqlServiceClient<Channel>);

impl FlightSql {
    /// Connect to `grpc://host:port` and log in anonymously.
    pub async fn connect(address: &str) -> Result<Self, Error> {
        let url = address.replace("grpc://", "http://");
        let channel = Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("", "").await?;
        Ok(FlightSql(client))
    }

    /// Run `sql` and read every endpoint of its results.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        let info = self
            .0
            .execute(sql.to_string(), None)
            .await
            .map_err(to_status)?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let mut part: Vec<RecordBatch> = self
                .0
                .do_get(ticket)
                .await
                .map_err(to_status)?
                .try_collect()
                .await
                .map_err(to_status)?;
            batches.append(&mut part);
        }
        Ok(batches)
    }
}

/// The gRPC status of a client error (its code is what clients act on).
pub fn to_status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}
