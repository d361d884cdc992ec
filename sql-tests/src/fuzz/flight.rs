//! The Flight SQL target: every command type with random fields, statements from the SQL
//! generator, tickets and descriptors that are random or damaged copies of real ones,
//! actions (prepared statements, transactions, sessions, cancellation) with random bodies,
//! `DoPut` with broken Arrow IPC, and huge metadata; clients that drop a stream half-read.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionEndTransactionRequest, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate, ProstMessageExt,
    TicketStatementQuery,
};
use arrow_flight::{Action, Criteria, FlightData, FlightDescriptor, HandshakeRequest, Ticket};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use rand::Rng as _;
use tonic::transport::Channel;

use super::draw::{bytes, chance, damage, number, pick, text};
use super::sql::SqlTarget;
use super::{Rng, Sent, Target, excerpt};

const TIMEOUT: Duration = Duration::from_secs(20);
/// Stop reading a stream after this many bytes (a client that has seen enough).
const READ_CAP: usize = 8 << 20;

pub struct FlightTarget {
    runtime: tokio::runtime::Runtime,
    address: String,
    client: Option<FlightServiceClient<Channel>>,
    statements: SqlTarget,
    /// Real tickets and prepared-statement handles seen, to damage and replay.
    tickets: Vec<Bytes>,
    handles: Vec<Bytes>,
}

impl FlightTarget {
    /// `address` is the Flight SQL port (`host:port`); `rest` and `root` feed the statement
    /// generator.
    pub fn new(address: &str, rest: &str, root: &str) -> Self {
        FlightTarget {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            address: address.to_string(),
            client: None,
            statements: SqlTarget::new(rest, root),
            tickets: Vec::new(),
            handles: Vec::new(),
        }
    }
}

fn any<M: ProstMessageExt>(message: M) -> Bytes {
    Bytes::from(message.as_any().encode_to_vec())
}

fn maybe(rng: &mut Rng) -> Option<String> {
    chance(rng, 0.6).then(|| text(rng))
}

/// Which call one input makes.
enum Call {
    Info(FlightDescriptor),
    Schema(FlightDescriptor),
    Poll(FlightDescriptor),
    Get(Ticket),
    Action(Action),
    Put(Vec<FlightData>),
    Handshake(Bytes),
    List(Bytes),
    ListActions,
    Exchange(Vec<FlightData>),
}

impl FlightTarget {
    fn command(&mut self, rng: &mut Rng) -> Bytes {
        let sql = self.statements.statement(rng);
        let transaction = chance(rng, 0.1).then(|| Bytes::from(bytes(rng)));
        match rng.random_range(0..18) {
            0..=3 => any(CommandStatementQuery {
                query: sql,
                transaction_id: transaction,
            }),
            4 => any(CommandStatementUpdate {
                query: sql,
                transaction_id: transaction,
            }),
            5 => any(CommandGetCatalogs {}),
            6 => any(CommandGetDbSchemas {
                catalog: maybe(rng),
                db_schema_filter_pattern: maybe(rng),
            }),
            7 => any(CommandGetTables {
                catalog: maybe(rng),
                db_schema_filter_pattern: maybe(rng),
                table_name_filter_pattern: maybe(rng),
                table_types: (0..rng.random_range(0..3)).map(|_| text(rng)).collect(),
                include_schema: chance(rng, 0.5),
            }),
            8 => any(CommandGetTableTypes {}),
            9 => any(CommandGetSqlInfo {
                info: (0..rng.random_range(0..6))
                    .map(|_| number(rng) as u32)
                    .collect(),
            }),
            10 => any(CommandGetXdbcTypeInfo {
                data_type: chance(rng, 0.5).then(|| number(rng) as i32),
            }),
            11 => any(CommandGetPrimaryKeys {
                catalog: maybe(rng),
                db_schema: maybe(rng),
                table: text(rng),
            }),
            12 => any(CommandGetExportedKeys {
                catalog: maybe(rng),
                db_schema: maybe(rng),
                table: text(rng),
            }),
            13 => any(CommandGetImportedKeys {
                catalog: maybe(rng),
                db_schema: maybe(rng),
                table: text(rng),
            }),
            14 => any(CommandGetCrossReference {
                pk_catalog: maybe(rng),
                pk_db_schema: maybe(rng),
                pk_table: text(rng),
                fk_catalog: maybe(rng),
                fk_db_schema: maybe(rng),
                fk_table: text(rng),
            }),
            15 => {
                let handle = self.handle(rng);
                any(CommandPreparedStatementQuery {
                    prepared_statement_handle: handle,
                })
            }
            16 => any(CommandStatementSubstraitPlan::default()),
            _ => {
                // A well-formed Any of an unknown or mismatched type, or bytes.
                if chance(rng, 0.5) {
                    Bytes::from(
                        Any {
                            type_url: text(rng),
                            value: Bytes::from(bytes(rng)),
                        }
                        .encode_to_vec(),
                    )
                } else {
                    Bytes::from(bytes(rng))
                }
            }
        }
    }

    fn handle(&mut self, rng: &mut Rng) -> Bytes {
        if !self.handles.is_empty() && chance(rng, 0.7) {
            let mut handle = pick(rng, &self.handles).to_vec();
            if chance(rng, 0.5) {
                damage(rng, &mut handle);
            }
            return Bytes::from(handle);
        }
        Bytes::from(bytes(rng))
    }

    fn descriptor(&mut self, rng: &mut Rng) -> FlightDescriptor {
        if chance(rng, 0.1) {
            return FlightDescriptor::new_path(
                (0..rng.random_range(0..4)).map(|_| text(rng)).collect(),
            );
        }
        let mut cmd = self.command(rng).to_vec();
        if chance(rng, 0.15) {
            damage(rng, &mut cmd);
        }
        FlightDescriptor::new_cmd(cmd)
    }

    fn ticket(&mut self, rng: &mut Rng) -> Ticket {
        let bytes = match rng.random_range(0..4) {
            0 if !self.tickets.is_empty() => {
                let mut t = pick(rng, &self.tickets).to_vec();
                damage(rng, &mut t);
                Bytes::from(t)
            }
            1 if !self.tickets.is_empty() => pick(rng, &self.tickets).clone(),
            2 => any(TicketStatementQuery {
                statement_handle: Bytes::from(bytes(rng)),
            }),
            _ => Bytes::from(bytes(rng)),
        };
        Ticket { ticket: bytes }
    }

    fn action(&mut self, rng: &mut Rng) -> Action {
        let sql = self.statements.statement(rng);
        let (kind, body) = match rng.random_range(0..9) {
            0..=2 => (
                "CreatePreparedStatement",
                any(ActionCreatePreparedStatementRequest {
                    query: sql,
                    transaction_id: None,
                }),
            ),
            3 => {
                let handle = self.handle(rng);
                (
                    "ClosePreparedStatement",
                    any(ActionClosePreparedStatementRequest {
                        prepared_statement_handle: handle,
                    }),
                )
            }
            4 => ("BeginTransaction", Bytes::from(bytes(rng))),
            5 => (
                "EndTransaction",
                any(ActionEndTransactionRequest {
                    transaction_id: Bytes::from(bytes(rng)),
                    action: number(rng) as i32,
                }),
            ),
            6 => (
                "CancelQuery",
                any(ActionCancelQueryRequest {
                    info: Bytes::from(bytes(rng)),
                }),
            ),
            7 => (
                *pick(
                    rng,
                    &[
                        "CancelFlightInfo",
                        "RenewFlightEndpoint",
                        "SetSessionOptions",
                        "GetSessionOptions",
                        "CloseSession",
                    ],
                ),
                Bytes::from(bytes(rng)),
            ),
            _ => {
                return Action {
                    r#type: text(rng),
                    body: Bytes::from(bytes(rng)),
                };
            }
        };
        let mut body = body.to_vec();
        if chance(rng, 0.15) {
            damage(rng, &mut body);
        }
        Action {
            r#type: kind.to_string(),
            body: Bytes::from(body),
        }
    }

    /// Arrow IPC for `DoPut`: a real stream of a small batch, often damaged.
    fn put_stream(&mut self, rng: &mut Rng) -> Vec<FlightData> {
        let descriptor = match rng.random_range(0..4) {
            0 => FlightDescriptor::new_cmd(any(CommandStatementIngest {
                table: text(rng),
                schema: maybe(rng),
                ..Default::default()
            })),
            1 => {
                let handle = self.handle(rng);
                FlightDescriptor::new_cmd(any(CommandPreparedStatementQuery {
                    prepared_statement_handle: handle,
                }))
            }
            2 => {
                let handle = self.handle(rng);
                FlightDescriptor::new_cmd(any(CommandPreparedStatementUpdate {
                    prepared_statement_handle: handle,
                }))
            }
            _ => self.descriptor(rng),
        };
        let rows = rng.random_range(0..50);
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("a", Arc::new(Int64Array::from_iter_values(0..rows))),
            (
                "b",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("v{i}")),
                )),
            ),
        ];
        let mut data = RecordBatch::try_from_iter(columns)
            .ok()
            .and_then(|batch| {
                arrow_flight::utils::batches_to_flight_data(&batch.schema(), vec![batch]).ok()
            })
            .unwrap_or_default();
        for message in data.iter_mut() {
            if chance(rng, 0.3) {
                let mut header = message.data_header.to_vec();
                damage(rng, &mut header);
                message.data_header = Bytes::from(header);
            }
            if chance(rng, 0.3) {
                let mut body = message.data_body.to_vec();
                damage(rng, &mut body);
                message.data_body = Bytes::from(body);
            }
        }
        if chance(rng, 0.2) {
            data.push(FlightData {
                data_header: Bytes::from(bytes(rng)),
                data_body: Bytes::from(bytes(rng)),
                ..Default::default()
            });
        }
        if chance(rng, 0.2) && !data.is_empty() {
            data.remove(rng.random_range(0..data.len()));
        }
        if let Some(first) = data.first_mut() {
            first.flight_descriptor = Some(descriptor);
        } else {
            data.push(FlightData {
                flight_descriptor: Some(descriptor),
                ..Default::default()
            });
        }
        data
    }

    fn call(&mut self, rng: &mut Rng) -> Call {
        match rng.random_range(0..20) {
            0..=5 => Call::Info(self.descriptor(rng)),
            6 => Call::Schema(self.descriptor(rng)),
            7 => Call::Poll(self.descriptor(rng)),
            8..=9 => Call::Get(self.ticket(rng)),
            10..=13 => Call::Action(self.action(rng)),
            14..=16 => Call::Put(self.put_stream(rng)),
            17 => Call::Handshake(Bytes::from(bytes(rng))),
            18 => {
                if chance(rng, 0.5) {
                    Call::ListActions
                } else {
                    Call::List(Bytes::from(bytes(rng)))
                }
            }
            _ => Call::Exchange(self.put_stream(rng)),
        }
    }
}

fn describe(call: &Call) -> String {
    let bytes = |b: &[u8]| excerpt(&String::from_utf8_lossy(b), 300);
    match call {
        Call::Info(d) | Call::Schema(d) | Call::Poll(d) => {
            let kind = match call {
                Call::Info(_) => "GetFlightInfo",
                Call::Schema(_) => "GetSchema",
                _ => "PollFlightInfo",
            };
            format!("{kind} cmd={} path={:?}", bytes(&d.cmd), d.path)
        }
        Call::Get(t) => format!("DoGet ticket={}", bytes(&t.ticket)),
        Call::Action(a) => format!("DoAction {} body={}", a.r#type, bytes(&a.body)),
        Call::Put(data) | Call::Exchange(data) => format!(
            "{} {} messages, descriptor cmd={}",
            if matches!(call, Call::Put(_)) {
                "DoPut"
            } else {
                "DoExchange"
            },
            data.len(),
            data.first()
                .and_then(|m| m.flight_descriptor.as_ref())
                .map(|d| bytes(&d.cmd))
                .unwrap_or_default()
        ),
        Call::Handshake(p) => format!("Handshake payload={}", bytes(p)),
        Call::List(c) => format!("ListFlights criteria={}", bytes(c)),
        Call::ListActions => "ListActions".to_string(),
    }
}

/// Add a huge or odd header to a request.
fn metadata<T>(rng: &mut Rng, mut request: tonic::Request<T>) -> tonic::Request<T> {
    if chance(rng, 0.1) {
        let size = *pick(rng, &[100usize, 8_000, 15_000, 60_000, 1_000_000]);
        let value = "m".repeat(size);
        if let Ok(value) = value.parse() {
            let name = *pick(
                rng,
                &[
                    "x-fuzz",
                    "authorization",
                    "grpc-timeout",
                    "x-quarry-cluster-secret",
                    "grpc-encoding",
                ],
            );
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// Read a stream of replies up to [`READ_CAP`] bytes, or stop early on purpose.
async fn drain<S, T>(stream: S, stop_after: Option<usize>) -> Result<usize, tonic::Status>
where
    S: futures::Stream<Item = Result<T, tonic::Status>> + Unpin,
    T: Message,
{
    let mut stream = stream;
    let (mut read, mut messages) = (0, 0);
    while let Some(item) = stream.next().await {
        read += item?.encoded_len();
        messages += 1;
        if read > READ_CAP || Some(messages) == stop_after {
            break;
        }
    }
    Ok(messages)
}

impl Target for FlightTarget {
    fn name(&self) -> &'static str {
        "flight"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        let call = self.call(rng);
        let input = describe(&call);
        let stop_after = chance(rng, 0.2).then_some(1);
        let fresh = self.client.is_none() || chance(rng, 0.05);
        let headers = metadata(rng, tonic::Request::new(())).metadata().clone();
        let address = self.address.clone();
        let client = self.client.take();
        let result = self.runtime.block_on(async move {
            let mut client = match client {
                Some(client) if !fresh => client,
                _ => {
                    let channel = Channel::from_shared(format!("http://{address}"))
                        .map_err(|e| tonic::Status::internal(e.to_string()))?
                        .connect()
                        .await
                        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    FlightServiceClient::new(channel).max_decoding_message_size(64 << 20)
                }
            };
            let outcome =
                tokio::time::timeout(TIMEOUT, send(&mut client, call, headers, stop_after)).await;
            Ok::<_, tonic::Status>((client, outcome))
        });
        let outcome = match result {
            Err(status) => format!("connect: {:?}", status.code()),
            Ok((client, outcome)) => {
                self.client = Some(client);
                match outcome {
                    Err(_) => "slow: the client gave up".to_string(),
                    Ok(Ok(seen)) => {
                        self.remember(seen);
                        "ok".to_string()
                    }
                    Ok(Err(status)) => format!("gRPC {:?}", status.code()),
                }
            }
        };
        Sent { input, outcome }
    }
}

/// What a successful call showed that later inputs may replay.
#[derive(Default)]
struct Seen {
    tickets: Vec<Bytes>,
    handles: Vec<Bytes>,
}

impl FlightTarget {
    fn remember(&mut self, seen: Seen) {
        for (list, new) in [
            (&mut self.tickets, seen.tickets),
            (&mut self.handles, seen.handles),
        ] {
            list.extend(new);
            if list.len() > 64 {
                list.drain(..list.len() - 64);
            }
        }
    }
}

async fn send(
    client: &mut FlightServiceClient<Channel>,
    call: Call,
    headers: tonic::metadata::MetadataMap,
    stop_after: Option<usize>,
) -> Result<Seen, tonic::Status> {
    fn with<T>(message: T, headers: &tonic::metadata::MetadataMap) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = headers.clone();
        request
    }
    let mut seen = Seen::default();
    match call {
        Call::Info(descriptor) => {
            let info = client
                .get_flight_info(with(descriptor, &headers))
                .await?
                .into_inner();
            for endpoint in info.endpoint {
                if let Some(ticket) = endpoint.ticket {
                    seen.tickets.push(ticket.ticket.clone());
                    let stream = client.do_get(with(ticket, &headers)).await?.into_inner();
                    drain(stream, stop_after).await?;
                }
            }
        }
        Call::Schema(descriptor) => {
            client.get_schema(with(descriptor, &headers)).await?;
        }
        Call::Poll(descriptor) => {
            client.poll_flight_info(with(descriptor, &headers)).await?;
        }
        Call::Get(ticket) => {
            let stream = client.do_get(with(ticket, &headers)).await?.into_inner();
            drain(stream, stop_after).await?;
        }
        Call::Action(action) => {
            let prepared = action.r#type == "CreatePreparedStatement";
            let mut stream = client.do_action(with(action, &headers)).await?.into_inner();
            while let Some(result) = stream.next().await {
                let result = result?;
                if prepared
                    && let Ok(any) = Any::decode(result.body.clone())
                    && let Ok(Some(created)) = any.unpack::<ActionCreatePreparedStatementResult>()
                {
                    seen.handles.push(created.prepared_statement_handle);
                }
            }
        }
        Call::Put(data) => {
            let stream = client
                .do_put(with(futures::stream::iter(data), &headers))
                .await?
                .into_inner();
            drain(stream, stop_after).await?;
        }
        Call::Exchange(data) => {
            let stream = client
                .do_exchange(with(futures::stream::iter(data), &headers))
                .await?
                .into_inner();
            drain(stream, stop_after).await?;
        }
        Call::Handshake(payload) => {
            let request = HandshakeRequest {
                protocol_version: 0,
                payload,
            };
            let stream = client
                .handshake(with(futures::stream::iter(vec![request]), &headers))
                .await?
                .into_inner();
            drain(stream, None).await?;
        }
        Call::List(expression) => {
            let stream = client
                .list_flights(with(Criteria { expression }, &headers))
                .await?
                .into_inner();
            drain(stream, stop_after).await?;
        }
        Call::ListActions => {
            let stream = client
                .list_actions(with(arrow_flight::Empty {}, &headers))
                .await?
                .into_inner();
            drain(stream, None).await?;
        }
    }
    Ok(seen)
}
