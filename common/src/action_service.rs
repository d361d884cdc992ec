//! A Flight service made of two handlers, `do_action` and `do_get`: the shape of both
//! internal services (the coordinator's registration service and every executor's task
//! service). Keeping the gRPC boilerplate here lets each service be just its handlers.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster_secret::{self, ClusterSecret};
use crate::flight_channels::MAX_MESSAGE_BYTES;

pub type ResultStream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
pub trait ActionHandler: Send + Sync + 'static {
    /// Handle one action; the stream's items become the action's results.
    async fn action(&self, action_type: &str, body: Bytes) -> Result<ResultStream<Bytes>, Status>;

    /// Serve the data a ticket names.
    async fn get(&self, _ticket: Bytes) -> Result<ResultStream<FlightData>, Status> {
        Err(Status::unimplemented("this service serves no data"))
    }
}

/// Wraps an [`ActionHandler`] as a tonic Flight service without message size caps; with
/// a secret, calls without it are refused.
pub fn action_service<H: ActionHandler>(
    name: &'static str,
    handler: Arc<H>,
    secret: Option<ClusterSecret>,
) -> FlightServiceServer<ActionService<H>> {
    FlightServiceServer::new(ActionService {
        name,
        handler,
        secret,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub struct ActionService<H> {
    name: &'static str,
    handler: Arc<H>,
    secret: Option<ClusterSecret>,
}

impl<H> ActionService<H> {
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        cluster_secret::check(
            self.secret.as_ref(),
            request.metadata(),
            self.name,
            request.remote_addr(),
        )
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not offered by this service"
    )))
}

#[tonic::async_trait]
impl<H: ActionHandler> FlightService for ActionService<H> {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("list_flights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented("get_flight_info")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented("poll_flight_info")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented("get_schema")
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.admit(&request)?;
        let stream = self.handler.get(request.into_inner().ticket).await?;
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented("do_put")
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.admit(&request)?;
        let action = request.into_inner();
        let results = self.handler.action(&action.r#type, action.body).await?;
        Ok(Response::new(
            results
                .map(|r| r.map(|body| arrow_flight::Result { body }))
                .boxed(),
        ))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("list_actions")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("do_exchange")
    }
}

/// Run one action on a Flight endpoint and return its first result.
pub async fn call_action(
    client: &mut arrow_flight::FlightClient,
    action_type: &str,
    body: Vec<u8>,
) -> Result<Bytes, crate::QuarryError> {
    let mut results = client
        .do_action(Action::new(action_type, body))
        .await
        .map_err(flight_error)?;
    match results.next().await {
        Some(result) => result.map_err(flight_error),
        None => Ok(Bytes::new()),
    }
}

/// A Flight client error as a Quarry error, keeping the gRPC code.
pub fn flight_error(e: arrow_flight::error::FlightError) -> crate::QuarryError {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => crate::QuarryError::from_status(&status),
        other => crate::QuarryError::unavailable(other.to_string()),
    }
}
