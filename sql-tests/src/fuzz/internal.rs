//! The internal target: a confused coordinator, holding the cluster secret. Executors get
//! tasks whose plans are real plans damaged, random bytes, or real plans with odd
//! partitions, output partitionings and settings; exchange tickets and file reads that name
//! nothing or climb out of the data directory; unknown actions. The coordinator's internal
//! service gets heartbeats and object-store requests from executors it does not know.
//! Every task's query is released afterwards, as a coordinator does.

use std::path::Path;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use bytes::Bytes;
use datafusion::physical_plan::Partitioning;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use prost::Message;
use quarry_common::cluster_secret::SECRET_HEADER;
use quarry_common::protocol::{
    ACTION_DEREGISTER, ACTION_HEARTBEAT, ACTION_OBJECT_STORE, ACTION_READ_FILE,
    ACTION_RELEASE_QUERY, ACTION_RUN_TASK, ACTION_STATUS, Deregistration, ExchangeTicket,
    Heartbeat, ObjectStoreRequest, ObjectStoreSpec, ReadFile, ReleaseQuery, Setting,
    TaskDefinition,
};
use rand::Rng as _;
use serde_json::json;
use tonic::transport::Channel;

use super::cluster::post;
use super::draw::{bytes, chance, damage, number, pick, text};
use super::{Rng, Sent, Target, excerpt};
use crate::processes::{CLUSTER_SECRET, Rest};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Queries over the fixture files whose physical plans are damaged and sent as tasks.
const PLANS: &[&str] = &[
    "SELECT kind, count(*), sum(value) FROM events WHERE value > 10 GROUP BY kind",
    "SELECT user_id, value FROM events ORDER BY value DESC LIMIT 5",
    "SELECT e.kind, count(*) FROM events e JOIN events f ON e.user_id = f.user_id WHERE e.event_id < 50 GROUP BY e.kind",
    "SELECT 1 + 2 AS three",
];

pub struct InternalTarget {
    runtime: tokio::runtime::Runtime,
    executors: Vec<String>,
    coordinator: String,
    plans: Vec<Vec<u8>>,
    queries: usize,
}

impl InternalTarget {
    /// `rest` finds the executors (`sys.nodes`); `internal` is the coordinator's internal
    /// address; `root` holds the fixture files the plans read.
    pub fn new(rest: &Rest, internal: &str, root: &Path) -> Result<Self, String> {
        let (_, nodes) = post(
            rest,
            "/api/v1/sql",
            &json!({"sql": "SELECT endpoint FROM sys.nodes WHERE state = 'ACTIVE'"}),
        )?;
        let executors: Vec<String> = nodes["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["endpoint"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if executors.is_empty() {
            return Err(format!("no executors in sys.nodes: {nodes}"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let events = root.join("events");
        let plans = runtime.block_on(async {
            let ctx = SessionContext::new();
            ctx.register_parquet(
                "events",
                &events.display().to_string(),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut plans = Vec::new();
            for sql in PLANS {
                let plan = ctx
                    .sql(sql)
                    .await
                    .map_err(|e| e.to_string())?
                    .create_physical_plan()
                    .await
                    .map_err(|e| e.to_string())?;
                let bytes = quarry_common::codec::plan_to_bytes(plan).map_err(|e| e.to_string())?;
                plans.push(bytes.to_vec());
            }
            Ok::<_, String>(plans)
        })?;
        Ok(InternalTarget {
            runtime,
            executors,
            coordinator: format!("http://{internal}"),
            plans,
            queries: 0,
        })
    }
}

fn with_secret<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = CLUSTER_SECRET.parse() {
        request.metadata_mut().insert(SECRET_HEADER, value);
    }
    request
}

fn setting(rng: &mut Rng) -> Setting {
    let key = pick(
        rng,
        &[
            "datafusion.execution.batch_size",
            "datafusion.execution.target_partitions",
            "datafusion.execution.coalesce_batches",
            "datafusion.optimizer.max_passes",
            "datafusion.execution.sort_spill_reservation_bytes",
            "datafusion.sql_parser.dialect",
            "quarry.query_timeout",
            "nope",
        ],
    )
    .to_string();
    let value = if chance(rng, 0.6) {
        number(rng).to_string()
    } else {
        text(rng)
    };
    Setting { key, value }
}

impl InternalTarget {
    fn task(&mut self, rng: &mut Rng) -> (String, TaskDefinition) {
        self.queries += 1;
        let mut plan = pick(rng, &self.plans).clone();
        let plan_kind = match rng.random_range(0..10) {
            0..=2 => "a real plan",
            3..=8 => {
                damage(rng, &mut plan);
                "a damaged plan"
            }
            _ => {
                plan = bytes(rng);
                "random bytes as a plan"
            }
        };
        let output_partitioning = match rng.random_range(0..4) {
            0 => Vec::new(),
            1 => bytes(rng),
            _ => {
                let n = *pick(rng, &[0usize, 1, 3, 64, 5000]);
                quarry_common::codec::partitioning_to_bytes(Some(&Partitioning::RoundRobinBatch(n)))
                    .unwrap_or_default()
            }
        };
        let task = TaskDefinition {
            query_id: format!("fuzz-{}", self.queries),
            stage_id: rng.random_range(0..4),
            partition: if chance(rng, 0.9) {
                rng.random_range(0..4)
            } else {
                number(rng) as u32
            },
            attempt: rng.random_range(0..3),
            plan,
            output_partitioning,
            settings: (0..rng.random_range(0..3)).map(|_| setting(rng)).collect(),
            object_stores: if chance(rng, 0.2) {
                vec![ObjectStoreSpec {
                    url: text(rng),
                    options: vec![setting(rng)],
                }]
            } else {
                Vec::new()
            },
            // A malformed traceparent is ignored, never a failure.
            trace_context: if chance(rng, 0.3) {
                text(rng)
            } else {
                String::new()
            },
            // Columns past the plan's schema are never measured, never a failure.
            bound_columns: (0..rng.random_range(0..3))
                .map(|_| number(rng) as u32)
                .collect(),
            // Any limit: the output comes back with the result or it does not.
            inline_output_limit: number(rng) as u64,
        };
        let described = format!(
            "RUN_TASK {} partition {} with {plan_kind} ({} bytes), {} output partitioning bytes, settings {:?}",
            task.query_id,
            task.partition,
            task.plan.len(),
            task.output_partitioning.len(),
            task.settings
                .iter()
                .map(|s| format!("{}={}", s.key, excerpt(&s.value, 40)))
                .collect::<Vec<_>>()
        );
        (described, task)
    }

    fn ticket(&mut self, rng: &mut Rng) -> Bytes {
        if chance(rng, 0.3) {
            return Bytes::from(bytes(rng));
        }
        Bytes::from(
            ExchangeTicket {
                query_id: if chance(rng, 0.5) {
                    format!("fuzz-{}", self.queries)
                } else {
                    text(rng)
                },
                stage_id: rng.random_range(0..4),
                partition: rng.random_range(0..4),
                attempt: rng.random_range(0..2),
                output_partition: number(rng) as u32,
            }
            .encode_to_vec(),
        )
    }
}

async fn act(
    client: &mut FlightServiceClient<Channel>,
    kind: &str,
    body: Vec<u8>,
) -> Result<usize, tonic::Status> {
    let action = Action {
        r#type: kind.to_string(),
        body: Bytes::from(body),
    };
    let mut stream = client.do_action(with_secret(action)).await?.into_inner();
    let mut results = 0;
    while let Some(result) = stream.next().await {
        result?;
        results += 1;
    }
    Ok(results)
}

async fn connect(endpoint: &str) -> Result<FlightServiceClient<Channel>, tonic::Status> {
    let channel = Channel::from_shared(endpoint.to_string())
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(FlightServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

impl Target for InternalTarget {
    fn name(&self) -> &'static str {
        "internal"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        let executor = pick(rng, &self.executors).clone();
        let executor = if executor.starts_with("http") {
            executor
        } else {
            format!("http://{executor}")
        };
        let (input, endpoint, request): (String, String, Call) = match rng.random_range(0..12) {
            0..=5 => {
                let (described, task) = self.task(rng);
                let query_id = task.query_id.clone();
                let body = task.encode_to_vec();
                (
                    described,
                    executor,
                    call(move |mut client| async move {
                        let ran = act(&mut client, ACTION_RUN_TASK, body).await;
                        // A coordinator releases a query's outputs when it ends, whatever happened.
                        let release = ReleaseQuery { query_id }.encode_to_vec();
                        act(&mut client, ACTION_RELEASE_QUERY, release).await?;
                        ran
                    }),
                )
            }
            6 => {
                let ticket = self.ticket(rng);
                (
                    format!(
                        "DoGet exchange ticket {}",
                        excerpt(&String::from_utf8_lossy(&ticket), 200)
                    ),
                    executor,
                    call(move |mut client| async move {
                        let mut stream = client
                            .do_get(with_secret(Ticket { ticket }))
                            .await?
                            .into_inner();
                        let mut n = 0;
                        while let Some(item) = stream.next().await {
                            item?;
                            n += 1;
                        }
                        Ok(n)
                    }),
                )
            }
            7 => {
                let path = if chance(rng, 0.5) {
                    pick(
                        rng,
                        &[
                            "../../../etc/passwd",
                            "/etc/passwd",
                            "data/../../x",
                            "",
                            ".",
                            "data",
                        ],
                    )
                    .to_string()
                } else {
                    text(rng)
                };
                let request = ReadFile {
                    path: path.clone(),
                    start: number(rng) as u64,
                    end: number(rng) as u64,
                };
                (
                    format!("READ_FILE {path:?} {}..{}", request.start, request.end),
                    executor,
                    self.simple(ACTION_READ_FILE, request.encode_to_vec()),
                )
            }
            8 => (
                "STATUS".to_string(),
                executor,
                self.simple(ACTION_STATUS, bytes(rng)),
            ),
            9 => {
                let kind = text(rng);
                (
                    format!("executor action {kind:?}"),
                    executor,
                    self.simple(&kind, bytes(rng)),
                )
            }
            10 => {
                let heartbeat = Heartbeat {
                    executor_id: format!("ghost-{}", text(rng)),
                    ..Default::default()
                };
                let body = if chance(rng, 0.5) {
                    heartbeat.encode_to_vec()
                } else {
                    bytes(rng)
                };
                (
                    "coordinator HEARTBEAT from an unknown executor".to_string(),
                    self.coordinator.clone(),
                    self.simple(ACTION_HEARTBEAT, body),
                )
            }
            _ => {
                let (kind, body, what) = match rng.random_range(0..3) {
                    0 => (
                        ACTION_OBJECT_STORE,
                        ObjectStoreRequest { url: text(rng) }.encode_to_vec(),
                        "OBJECT_STORE",
                    ),
                    1 => (
                        ACTION_DEREGISTER,
                        Deregistration {
                            executor_id: format!("ghost-{}", text(rng)),
                        }
                        .encode_to_vec(),
                        "DEREGISTER of an unknown executor",
                    ),
                    _ => (
                        pick(
                            rng,
                            &[ACTION_OBJECT_STORE, ACTION_HEARTBEAT, ACTION_DEREGISTER],
                        )
                        .to_owned(),
                        bytes(rng),
                        "random bytes",
                    ),
                };
                (
                    format!("coordinator {what}"),
                    self.coordinator.clone(),
                    self.simple(kind, body),
                )
            }
        };
        let outcome = self.runtime.block_on(async move {
            let client = match connect(&endpoint).await {
                Ok(client) => client,
                Err(_) => return "unreachable".to_string(),
            };
            match tokio::time::timeout(TIMEOUT, request(client)).await {
                Err(_) => "slow: the client gave up".to_string(),
                Ok(Ok(_)) => "ok".to_string(),
                Ok(Err(status)) => format!("gRPC {:?}", status.code()),
            }
        });
        Sent { input, outcome }
    }
}

/// Box a call made on a connected client.
fn call<F, Fut>(f: F) -> Call
where
    F: FnOnce(FlightServiceClient<Channel>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<usize, tonic::Status>> + Send + 'static,
{
    Box::new(move |client| Box::pin(f(client)))
}

type Call = Box<
    dyn FnOnce(
        FlightServiceClient<Channel>,
    ) -> futures::future::BoxFuture<'static, Result<usize, tonic::Status>>,
>;

impl InternalTarget {
    fn simple(&self, kind: &str, body: Vec<u8>) -> Call {
        let kind = kind.to_string();
        call(move |mut client| async move { act(&mut client, &kind, body).await })
    }
}

impl InternalTarget {
    /// Send one real task (`SELECT 1 + 2`'s plan) with `settings` to the first executor and
    /// release its query: how the executor answered.
    pub fn real_task(&mut self, settings: Vec<Setting>) -> Result<usize, tonic::Status> {
        self.queries += 1;
        let query_id = format!("fuzz-{}", self.queries);
        let task = TaskDefinition {
            query_id: query_id.clone(),
            stage_id: 0,
            partition: 0,
            attempt: 0,
            plan: self.plans[PLANS.len() - 1].clone(),
            output_partitioning: Vec::new(),
            settings,
            object_stores: Vec::new(),
            trace_context: String::new(),
            bound_columns: vec![0],
            inline_output_limit: 1024,
        };
        let endpoint = match &self.executors[0] {
            e if e.starts_with("http") => e.clone(),
            e => format!("http://{e}"),
        };
        self.runtime.block_on(async move {
            let mut client = connect(&endpoint).await?;
            let ran = act(&mut client, ACTION_RUN_TASK, task.encode_to_vec()).await;
            act(
                &mut client,
                ACTION_RELEASE_QUERY,
                ReleaseQuery { query_id }.encode_to_vec(),
            )
            .await?;
            ran
        })
    }
}
