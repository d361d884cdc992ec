//! A client of each door — Flight SQL and REST — each on a connection of its own, as the
//! storm and the soak use them: every call ends in an [`Outcome`] that tells a clear
//! refusal (a full queue, a limit) from any other error.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::tpch;

/// Where the clients connect: the Flight SQL address (`host:port`) and the REST base URL.
#[derive(Clone)]
pub struct Addresses {
    pub flight: String,
    pub rest: String,
}

/// How a call ended.
pub enum Outcome {
    /// Answered; for queries, the answer's rows as compared between clients.
    Answered(Option<Vec<String>>),
    /// A clear refusal: the queue is full or a limit was hit.
    Refused(String),
    Failed(String),
}

/// A short, digit-free form of an error, so equal errors count together.
pub fn category(code: &str, message: &str) -> String {
    let short: String = message
        .chars()
        .take(80)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    format!("{code}: {short}")
}

fn is_limit(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("queue is full") || m.contains("limit") || m.contains("too many")
}

pub fn flight_outcome(error: FlightError) -> Outcome {
    let status = match error {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(arrow::error::ArrowError::ExternalError(inner)) => {
            match inner.downcast::<tonic::Status>() {
                Ok(status) => *status,
                Err(other) => return Outcome::Failed(category("arrow", &other.to_string())),
            }
        }
        other => return Outcome::Failed(category("flight", &other.to_string())),
    };
    let what = category(&format!("{:?}", status.code()), status.message());
    if status.code() == tonic::Code::ResourceExhausted
        || (status.code() == tonic::Code::InvalidArgument && is_limit(status.message()))
    {
        Outcome::Refused(what)
    } else {
        Outcome::Failed(what)
    }
}

pub fn rest_outcome(status: u16, body: &Value) -> Outcome {
    let message = body["message"].as_str().unwrap_or_default();
    let what = category(&format!("HTTP {status}"), message);
    if status == 429 || status == 413 || (status == 400 && is_limit(message)) {
        Outcome::Refused(what)
    } else {
        Outcome::Failed(what)
    }
}

/// One client's connection.
pub enum Door {
    Flight(Box<FlightSqlServiceClient<Channel>>),
    Rest {
        client: reqwest::Client,
        base: String,
    },
}

impl Door {
    pub async fn connect(flight: bool, cluster: &Addresses) -> Result<Door, Outcome> {
        if !flight {
            // A client of its own: its own connection pool, so its own connection.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .map_err(|e| Outcome::Failed(category("client", &e.to_string())))?;
            return Ok(Door::Rest {
                client,
                base: cluster.rest.clone(),
            });
        }
        let channel = Channel::from_shared(format!("http://{}", cluster.flight))
            .map_err(|e| Outcome::Failed(category("address", &e.to_string())))?
            .connect()
            .await
            .map_err(|e| Outcome::Failed(category("connect", &e.to_string())))?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("", "").await.map_err(flight_outcome)?;
        Ok(Door::Flight(Box::new(client)))
    }

    async fn flight_batches(
        client: &mut FlightSqlServiceClient<Channel>,
        info: arrow_flight::FlightInfo,
    ) -> Result<Vec<RecordBatch>, FlightError> {
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let mut part: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
            batches.append(&mut part);
        }
        Ok(batches)
    }

    /// Run `sql`; its rows, ordered as the statement orders them (or sorted).
    pub async fn query(&mut self, sql: &str) -> Outcome {
        match self {
            Door::Flight(client) => {
                let result = async {
                    let info = client.execute(sql.to_string(), None).await?;
                    Self::flight_batches(client, info).await
                }
                .await;
                match result {
                    Ok(batches) => match tpch::answer(sql, &batches) {
                        Ok(rows) => Outcome::Answered(Some(rows)),
                        Err(e) => Outcome::Failed(category("decode", &e.to_string())),
                    },
                    Err(e) => flight_outcome(e),
                }
            }
            Door::Rest { client, base } => {
                let reply = client
                    .post(format!("{base}/api/v1/sql"))
                    .json(&json!({"sql": sql, "rowFormat": "arrays"}))
                    .send()
                    .await;
                let reply = match reply {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(category("http", &e.to_string())),
                };
                let status = reply.status().as_u16();
                let body: Value = match reply.json().await {
                    Ok(body) => body,
                    Err(e) => return Outcome::Failed(category("body", &e.to_string())),
                };
                if status != 200 {
                    return rest_outcome(status, &body);
                }
                let mut rows: Vec<String> = body["rows"]
                    .as_array()
                    .map(|rows| rows.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                if !tpch::is_ordered(sql) {
                    rows.sort();
                }
                Outcome::Answered(Some(rows))
            }
        }
    }

    /// Start `sql`, read the first part of its answer and go away: Flight SQL drops its
    /// stream after one batch, REST starts a job and drops its results after the first
    /// chunk. The server must let go of everything the query held.
    pub async fn abandon(&mut self, sql: &str) -> Outcome {
        match self {
            Door::Flight(client) => {
                let result = async {
                    let info = client.execute(sql.to_string(), None).await?;
                    if let Some(ticket) = info.endpoint.into_iter().find_map(|e| e.ticket) {
                        let mut stream = client.do_get(ticket).await?;
                        stream.next().await.transpose()?;
                    }
                    Ok::<(), FlightError>(())
                }
                .await;
                match result {
                    Ok(()) => Outcome::Answered(None),
                    Err(e) => flight_outcome(e),
                }
            }
            Door::Rest { client, base } => {
                let started = client
                    .post(format!("{base}/api/v1/sql"))
                    .json(&json!({"sql": sql, "async": true}))
                    .send()
                    .await;
                let body: Value = match started {
                    Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                    Ok(r) => {
                        let status = r.status().as_u16();
                        return rest_outcome(status, &r.json().await.unwrap_or(Value::Null));
                    }
                    Err(e) => return Outcome::Failed(category("http", &e.to_string())),
                };
                let Some(id) = body["id"].as_str() else {
                    return Outcome::Failed(category("job", &body.to_string()));
                };
                let results = client
                    .get(format!("{base}/api/v1/jobs/{id}/results"))
                    .header("accept", "application/x-ndjson")
                    .send()
                    .await;
                match results {
                    Ok(r) if r.status().is_success() => {
                        let mut chunks = r.bytes_stream();
                        match chunks.next().await {
                            Some(Err(e)) => Outcome::Failed(category("body", &e.to_string())),
                            _ => Outcome::Answered(None),
                        }
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        rest_outcome(status, &r.json().await.unwrap_or(Value::Null))
                    }
                    Err(e) => Outcome::Failed(category("http", &e.to_string())),
                }
            }
        }
    }

    /// A catalog call: Flight SQL's schema and table listings, or REST's catalog tree.
    pub async fn catalog(&mut self) -> Outcome {
        match self {
            Door::Flight(client) => {
                let result = async {
                    let info = client
                        .get_db_schemas(CommandGetDbSchemas::default())
                        .await?;
                    Self::flight_batches(client, info).await?;
                    let info = client
                        .get_tables(CommandGetTables {
                            include_schema: true,
                            ..Default::default()
                        })
                        .await?;
                    Self::flight_batches(client, info).await
                }
                .await;
                match result {
                    Ok(_) => Outcome::Answered(None),
                    Err(e) => flight_outcome(e),
                }
            }
            Door::Rest { client, base } => {
                let reply = client.get(format!("{base}/api/v1/catalog")).send().await;
                match reply {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => Outcome::Answered(None),
                        Err(e) => Outcome::Failed(category("body", &e.to_string())),
                    },
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.json().await.unwrap_or(Value::Null);
                        rest_outcome(status, &body)
                    }
                    Err(e) => Outcome::Failed(category("http", &e.to_string())),
                }
            }
        }
    }
}

/// Refusals and other errors by kind of call and message, as the storm and the soak count
/// them.
#[derive(Default)]
pub struct Errors {
    pub refused: std::collections::BTreeMap<String, usize>,
    pub failed: std::collections::BTreeMap<String, usize>,
}

impl Errors {
    /// Count `outcome` of a `kind` call if it is an error; the answer if it was answered.
    pub fn count(
        &mut self,
        kind: &dyn std::fmt::Display,
        outcome: Outcome,
    ) -> Option<Option<Vec<String>>> {
        let (counts, what) = match outcome {
            Outcome::Answered(rows) => return Some(rows),
            Outcome::Refused(what) => (&mut self.refused, what),
            Outcome::Failed(what) => (&mut self.failed, what),
        };
        *counts.entry(format!("{kind}: {what}")).or_default() += 1;
        None
    }

    /// Each error other than a refusal, as a problem.
    pub fn problems(&self) -> Vec<String> {
        self.failed
            .iter()
            .map(|(what, n)| format!("{n} x {what}"))
            .collect()
    }
}

/// The `p` quantile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
