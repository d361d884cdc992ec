//! The Flight SQL connection: log in (which also gives the session a token, so `USE` and
//! `SET` last), run statements, collect their batches.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

pub struct Connection {
    client: FlightSqlServiceClient<Channel>,
    pub address: String,
    pub timing: bool,
}

/// The result of one statement.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// The server's message, without the layers of wrapping around it.
pub fn message(e: FlightError) -> String {
    match e {
        FlightError::Tonic(status) => status.message().to_string(),
        FlightError::Arrow(ArrowError::ExternalError(inner)) => {
            match inner.downcast_ref::<tonic::Status>() {
                Some(status) => status.message().to_string(),
                None => inner.to_string(),
            }
        }
        other => other.to_string(),
    }
}

impl Connection {
    pub async fn open(
        host: &str,
        port: u16,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, String> {
        let address = format!("http://{host}:{port}");
        let channel = Endpoint::from_shared(address.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = FlightSqlServiceClient::new(channel);
        client
            .handshake(user.unwrap_or_default(), password.unwrap_or_default())
            .await
            .map_err(message)?;
        Ok(Connection {
            client,
            address: format!("{host}:{port}"),
            timing: false,
        })
    }

    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, String> {
        let info = self
            .client
            .execute(sql.to_string(), None)
            .await
            .map_err(message)?;
        let schema: SchemaRef = std::sync::Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|e| e.to_string())?,
        );
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let stream = self.client.do_get(ticket).await.map_err(message)?;
            let mut part: Vec<RecordBatch> = stream.try_collect().await.map_err(message)?;
            batches.append(&mut part);
        }
        Ok(QueryResult { schema, batches })
    }
}
