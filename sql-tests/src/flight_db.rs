//! The sqllogictest connection over Flight SQL: the same `.slt` files, sent through the
//! coordinator's Flight SQL port by a real Flight SQL client (arrow-flight's), so every
//! statement passes the frontend, its session handling and its error mapping.

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use quarry_common::{ErrorCode, QuarryError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tonic::transport::Channel;

use crate::{DbError, column_type, rows};

pub struct FlightDb {
    client: FlightSqlServiceClient<Channel>,
}

fn flight_error(e: FlightError) -> DbError {
    let status = match e {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(arrow::error::ArrowError::ExternalError(inner)) => {
            match inner.downcast::<tonic::Status>() {
                Ok(status) => *status,
                Err(other) => tonic::Status::internal(other.to_string()),
            }
        }
        other => tonic::Status::internal(other.to_string()),
    };
    DbError(QuarryError::new(
        ErrorCode::from_grpc(status.code()),
        status.message(),
    ))
}

impl FlightDb {
    /// Connect and open a session (the handshake hands out the token `SET` and `USE`
    /// persist under).
    pub async fn connect(address: &str) -> Result<Self, DbError> {
        let channel = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| DbError(QuarryError::invalid(e.to_string())))?
            .connect()
            .await
            .map_err(|e| DbError(QuarryError::unavailable(e.to_string())))?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("", "").await.map_err(flight_error)?;
        Ok(FlightDb { client })
    }
}

#[async_trait::async_trait]
impl AsyncDB for FlightDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let info = self
            .client
            .execute(sql.to_string(), None)
            .await
            .map_err(flight_error)?;
        let schema = info
            .clone()
            .try_decode_schema()
            .map_err(|e| DbError(QuarryError::internal(e.to_string())))?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let stream = self.client.do_get(ticket).await.map_err(flight_error)?;
            let mut part: Vec<RecordBatch> = stream.try_collect().await.map_err(flight_error)?;
            batches.append(&mut part);
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: rows(&batches).map_err(DbError)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quarry-flight-sql"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}
