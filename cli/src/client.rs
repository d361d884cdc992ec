//! The Flight SQL connection: log in (which also gives the session a token, so `USE` and
//! `SET` last), run statements, collect their batches.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, CancelFlightInfoRequest, FlightInfo};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How to reach a server over TLS.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// A CA certificate (PEM) to trust; the system's roots when absent.
    pub ca_cert: Option<std::path::PathBuf>,
}

pub struct Connection {
    client: FlightSqlServiceClient<Channel>,
    pub address: String,
    pub user: Option<String>,
    /// How it was opened, for `\c` to open another like it.
    pub target: Target,
}

/// Where and as whom a connection goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: Option<Tls>,
}

/// The result of one statement.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// When a reflection answered: how old its data is, and which reflection it was.
    pub accelerated: Option<String>,
}

/// The server's note on a result answered from reflections (FlightInfo app metadata).
fn accelerated(app_metadata: &[u8]) -> Option<String> {
    let note: serde_json::Value = serde_json::from_slice(app_metadata).ok()?;
    let as_of = note.get("data_as_of")?.as_str()?;
    let chosen: Vec<&str> = note
        .get("reflections")
        .and_then(|r| r.as_array())
        .map(|all| {
            all.iter()
                .filter_map(|r| r.as_str())
                .filter(|r| r.contains(": chosen"))
                .filter_map(|r| r.split(':').next())
                .collect()
        })
        .unwrap_or_default();
    Some(format!(
        "data as of {as_of}, from reflection {}",
        chosen.join(", ")
    ))
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
    pub async fn open(target: Target) -> Result<Self, String> {
        let Target {
            host,
            port,
            user,
            password,
            tls,
        } = target.clone();
        let (host, user, password) = (host.as_str(), user.as_deref(), password.as_deref());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let address = format!("{scheme}://{host}:{port}");
        let mut endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(tls) = tls {
            let mut config = ClientTlsConfig::new().domain_name(host.to_string());
            config = match &tls.ca_cert {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    config.ca_certificate(Certificate::from_pem(pem))
                }
                None => config.with_native_roots(),
            };
            endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            format!("cannot connect to {address}: {text}")
        })?;
        let mut client = FlightSqlServiceClient::new(channel);
        client
            .handshake(user.unwrap_or_default(), password.unwrap_or_default())
            .await
            .map_err(message)?;
        Ok(Connection {
            client,
            address: format!("{host}:{port}"),
            user: user.map(str::to_string),
            target,
        })
    }

    /// Run `sql` and collect its result. Ctrl-C cancels it (psql's habit): the server is
    /// told with `CancelFlightInfo` once the statement is planned, and a statement still
    /// being planned is cancelled by the server when its call goes away.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, String> {
        let mut result = QueryResult {
            schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
            batches: Vec::new(),
            accelerated: None,
        };
        self.query_streaming(sql, false, &mut |part| match part {
            Part::Start(schema, accelerated) => {
                result.schema = schema;
                result.accelerated = accelerated;
            }
            Part::Batch(batch) => result.batches.push(batch),
        })
        .await?;
        Ok(result)
    }

    /// Run `sql`, handing its schema and then each batch to `sink` as they arrive; with
    /// `progress`, a progress line on standard error while nothing has arrived yet.
    pub async fn query_streaming(
        &mut self,
        sql: &str,
        progress: bool,
        sink: &mut dyn FnMut(Part),
    ) -> Result<(), String> {
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let planned = tokio::select! {
            info = self.client.execute(sql.to_string(), None) => Some(info.map_err(message)?),
            _ = &mut interrupt => None,
        };
        let Some(info) = planned else {
            return Err(CANCELED.to_string());
        };
        let line = progress
            .then(|| crate::progress::job_of(&info))
            .flatten()
            .map(|job| crate::progress::Progress::start(self.follower(), job));
        let mut sink = |part: Part| {
            if let (Part::Batch(_), Some(line)) = (&part, &line) {
                line.stop();
            }
            sink(part)
        };
        let fetched = tokio::select! {
            result = fetch(&mut self.client, &info, &mut sink) => Some(result),
            _ = &mut interrupt => None,
        };
        drop(line);
        match fetched {
            Some(result) => result,
            None => {
                let request = CancelFlightInfoRequest::new(info);
                let action = Action::new("CancelFlightInfo", request.encode_to_vec());
                if let Err(e) = self.client.do_action(action).await {
                    eprintln!("qsql: the server did not take the cancel: {}", message(e));
                }
                Err(CANCELED.to_string())
            }
        }
    }
}

impl Connection {
    /// A second client on this connection's channel and token, for calls made while the
    /// first one reads results.
    fn follower(&self) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new_from_inner(self.client.inner().clone());
        if let Some(token) = self.client.token() {
            client.set_token(token.clone());
        }
        client
    }
}

/// What a statement cancelled with Ctrl-C answers, in psql's words.
const CANCELED: &str = "canceling statement due to user request";

/// What a statement's answer brings, in order.
pub enum Part {
    /// The columns, and the note of a reflection that answered.
    Start(SchemaRef, Option<String>),
    Batch(RecordBatch),
}

/// Every endpoint's batches of a planned statement, handed on as they arrive.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
    sink: &mut dyn FnMut(Part),
) -> Result<(), String> {
    let schema: SchemaRef = std::sync::Arc::new(
        info.clone()
            .try_decode_schema()
            .map_err(|e| e.to_string())?,
    );
    sink(Part::Start(schema, accelerated(&info.app_metadata)));
    for endpoint in &info.endpoint {
        let Some(ticket) = endpoint.ticket.clone() else {
            continue;
        };
        let mut stream = client.do_get(ticket).await.map_err(message)?;
        while let Some(batch) = stream.try_next().await.map_err(message)? {
            sink(Part::Batch(batch));
        }
    }
    Ok(())
}
