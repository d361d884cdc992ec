//! The REST target: every route with random methods, path parameters, query strings,
//! headers and bodies (well-formed JSON with wrong fields, malformed JSON, deep JSON, bytes),
//! and raw bytes that only look like HTTP, sent over a plain socket.

use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::draw::{bytes, chance, number, pick, text};
use super::grammar::Generator;
use super::{Rng, Sent, Target, excerpt};
use crate::processes::Rest;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The routes outside the API document.
const UNDOCUMENTED: &[&str] = &["/", "/assets/{name}"];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

pub struct RestTarget {
    rest: Rest,
    address: String,
    /// Every route the server documents (so a new one is fuzzed as soon as it exists),
    /// and the console.
    routes: Vec<String>,
}

impl RestTarget {
    pub fn new(base: &str) -> Self {
        let rest = Rest::new(base.to_string());
        let document = rest.get("/api/v1/openapi.json");
        let mut routes: Vec<String> = document["paths"]
            .as_object()
            .map(|paths| paths.keys().cloned().collect())
            .unwrap_or_default();
        assert!(
            routes.len() > 20,
            "the OpenAPI document lists too few routes: {document}"
        );
        routes.extend(UNDOCUMENTED.iter().map(|r| r.to_string()));
        RestTarget {
            rest,
            address: base.trim_start_matches("http://").to_string(),
            routes,
        }
    }
}

/// A path parameter: a plausible name, a random one, or something hostile.
fn parameter(rng: &mut Rng) -> String {
    let raw = match rng.random_range(0..4) {
        0 => pick(
            rng,
            &["people", "mart", "files", "default", "admin", "public", "t"],
        )
        .to_string(),
        1 => uuid_like(rng),
        _ => text(rng),
    };
    percent_encoding::utf8_percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn uuid_like(rng: &mut Rng) -> String {
    let n: u128 = rng.random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A random JSON value, up to `depth` levels.
fn json_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(chance(rng, 0.5)),
        2 => json!(number(rng)),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!(text(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| json_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "sql",
                "async",
                "context",
                "rowFormat",
                "name",
                "type",
                "config",
                "root",
                "password",
                "user",
                "role",
                "privilege",
                "on",
                "definition",
                "path",
                "format",
                "bucket",
                "members",
            ];
            Value::Object(
                (0..rng.random_range(0..6))
                    .map(|_| (pick(rng, &keys).to_string(), json_value(rng, depth - 1)))
                    .collect(),
            )
        }
    }
}

/// A body for `route`: usually the shape it expects with some fields wrong.
fn body(rng: &mut Rng, route: &str) -> Vec<u8> {
    let value = match rng.random_range(0..10) {
        0 => return bytes(rng),
        1 => {
            let deep = rng.random_range(1..3000);
            return format!("{}1{}", "[".repeat(deep), "]".repeat(deep)).into_bytes();
        }
        2 => {
            let mut text = json_value(rng, 3).to_string().into_bytes();
            super::draw::damage(rng, &mut text);
            return text;
        }
        3 | 4 => json_value(rng, 3),
        _ if route.ends_with("/sql") => json!({
            "sql": Generator::new(rng).query(1),
            "async": chance(rng, 0.3),
            "context": if chance(rng, 0.3) { json_value(rng, 1) } else { json!(["mart"]) },
            "rowFormat": pick(rng, &["objects", "arrays", "nope"]),
        }),
        _ if route.contains("sources") => json!({
            "name": text(rng),
            "type": pick(rng, &["local", "s3", "cluster", "nope"]),
            "config": {"root": text(rng), "bucket": text(rng), "endpoint": text(rng)},
        }),
        _ if route.contains("reflections") => json!({
            "name": text(rng), "dataset": ["mart", "t"], "type": pick(rng, &["AGGREGATE", "RAW", "x"]),
            "dimensions": [text(rng)], "measures": [{"column": text(rng), "functions": ["SUM", text(rng)]}],
        }),
        _ if route.contains("datasets") => json!({
            "name": text(rng),
            "sql": Generator::new(rng).query(1),
            "source": text(rng), "path": text(rng), "format": text(rng),
        }),
        _ => json_value(rng, 2),
    };
    value.to_string().into_bytes()
}

impl RestTarget {
    fn request(&mut self, rng: &mut Rng) -> (String, Result<u16, String>) {
        let route = pick(rng, &self.routes).clone();
        let mut path = String::new();
        for piece in route.split('/').filter(|p| !p.is_empty()) {
            path.push('/');
            if piece.starts_with('{') || chance(rng, 0.03) {
                path.push_str(&parameter(rng));
            } else {
                path.push_str(piece);
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        if route.ends_with("results") && chance(rng, 0.5) {
            let format = pick(
                rng,
                &["csv", "parquet", "arrow", "ndjson", "json", "PARQUET", "x"],
            );
            let download = pick(rng, &["true", "false", "1", ""]);
            path.push_str(&format!(
                "?format={format}&download={download}&offset={}",
                parameter(rng)
            ));
        } else if chance(rng, 0.2) {
            path.push_str(&format!("?{}={}", parameter(rng), parameter(rng)));
        }
        let method = if route.ends_with("sql") && chance(rng, 0.6) {
            "POST"
        } else {
            *pick(rng, METHODS)
        };
        let body = body(rng, &route);
        let content_type = *pick(
            rng,
            &[
                "application/json",
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "",
                "application/json; charset=latin1",
            ],
        );
        let accept = *pick(
            rng,
            &[
                "application/json",
                "application/vnd.apache.arrow.stream",
                "text/csv",
                "application/vnd.apache.parquet",
                "*/*",
                "nope/nope",
            ],
        );
        let mut described = format!(
            "{method} {path} ({} body bytes: {})",
            body.len(),
            excerpt(&String::from_utf8_lossy(&body), 300)
        );
        let mut request = self
            .rest
            .client
            .request(
                method.parse().unwrap_or(reqwest::Method::GET),
                format!("{}{path}", self.rest.base),
            )
            .header("accept", accept)
            .timeout(TIMEOUT);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if chance(rng, 0.2) {
            let header = pick(
                rng,
                &[
                    "authorization",
                    "cookie",
                    "x-forwarded-for",
                    "x-quarry-cluster-secret",
                    "range",
                ],
            );
            let value: String = match rng.random_range(0..3) {
                0 => format!("Bearer {}", uuid_like(rng)),
                1 => "x".repeat(rng.random_range(1..30_000)),
                _ => text(rng).chars().filter(|c| c.is_ascii_graphic()).collect(),
            };
            described += &format!(" with {header}: {}", excerpt(&value, 60));
            request = request.header(*header, value);
        }
        if method != "GET" && method != "HEAD" {
            request = request.body(body);
        }
        let reply = self.rest.runtime.block_on(async {
            let reply = request.send().await?;
            let status = reply.status().as_u16();
            // Read (and drop) the whole body, as a client would.
            let _ = reply.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        });
        (
            described,
            reply.map_err(|e| {
                if e.is_timeout() {
                    "slow: the client gave up".to_string()
                } else if e.is_connect() {
                    "unreachable".to_string()
                } else {
                    "connection closed".to_string()
                }
            }),
        )
    }

    /// Bytes that start like HTTP and go wrong, on a raw socket; the reply's first line.
    fn raw(&mut self, rng: &mut Rng) -> (String, Result<u16, String>) {
        let mut request = format!(
            "{} {} HTTP/1.1\r\nhost: x\r\n",
            pick(rng, METHODS),
            pick(rng, &self.routes)
        )
        .into_bytes();
        for _ in 0..rng.random_range(0..5) {
            request.extend(format!("{}: {}\r\n", text(rng), text(rng)).into_bytes());
        }
        if chance(rng, 0.5) {
            request.extend(format!("content-length: {}\r\n", number(rng)).into_bytes());
        }
        if chance(rng, 0.3) {
            request.extend(b"transfer-encoding: chunked\r\n");
        }
        request.extend(b"\r\n");
        request.extend(bytes(rng));
        super::draw::damage(rng, &mut request);
        let described = format!("raw: {}", excerpt(&String::from_utf8_lossy(&request), 300));
        let address = self.address.clone();
        let reply = self.rest.runtime.block_on(async move {
            let exchange = async {
                let mut socket = tokio::net::TcpStream::connect(&address)
                    .await
                    .map_err(|_| "unreachable".to_string())?;
                let _ = socket.write_all(&request).await;
                let _ = socket.shutdown().await;
                let mut first = [0u8; 12];
                match socket.read(&mut first).await {
                    Ok(n) if n >= 12 => {
                        Ok(String::from_utf8_lossy(&first[9..12]).parse().unwrap_or(0))
                    }
                    _ => Err("connection closed".to_string()),
                }
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err("slow: the client gave up".to_string()))
        });
        (described, reply)
    }
}

impl Target for RestTarget {
    fn name(&self) -> &'static str {
        "rest"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        let (input, reply) = if chance(rng, 0.15) {
            self.raw(rng)
        } else {
            self.request(rng)
        };
        let outcome = match reply {
            Ok(status) => format!("HTTP {status}"),
            Err(kind) => kind,
        };
        Sent { input, outcome }
    }
}
