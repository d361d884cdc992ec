//! The PostgreSQL protocol target: one connection per input, over a plain socket. Garbage
//! bytes, truncated and oversized startup packets, unsupported protocol versions, SSL
//! requests followed by nonsense, cancel requests with made-up keys, and after a proper
//! startup a run of messages: simple queries (generated and mutated SQL), Parse / Bind /
//! Describe / Execute / Close with wrong names, parameter counts, formats and values,
//! COPY messages out of place, unknown message types, lying lengths, and clients that
//! leave in the middle of a result.
//!
//! Every input that keeps its connection ends with `Sync` and a marker query; the reply's
//! kind is how the connection ended: `marker` (the server answered the marker query, so
//! it recovered), `error SQLSTATE`, `closed` or `timeout`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rand::Rng as _;

use super::draw::{bytes, chance, number, pick, text};
use super::sql::SqlTarget;
use super::{Rng, Sent, Target, excerpt};

const TIMEOUT: Duration = Duration::from_secs(20);
const MARKER: &str = "pgwire-fuzz-marker";
/// Protocol 3.0.
const PROTOCOL: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const CANCEL_REQUEST: i32 = 80_877_102;

pub struct PgWireTarget {
    address: String,
    statements: SqlTarget,
}

impl PgWireTarget {
    /// `address` is the door's `host:port`; statements come from the SQL target's
    /// generator (`rest` and `root` as for it).
    pub fn new(address: &str, rest: &str, root: &str) -> Self {
        PgWireTarget {
            address: address.to_string(),
            statements: SqlTarget::new(rest, root),
        }
    }
}

/// A frontend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.replace('\0', "").as_bytes());
    out.push(0);
}

fn startup(version: i32, parameters: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (key, value) in parameters {
        cstr(&mut body, key);
        cstr(&mut body, value);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    message(b'Q', &body)
}

/// A name: the unnamed one, a plausible one, or hostile text.
fn name(rng: &mut Rng) -> String {
    match rng.random_range(0..4) {
        0 => String::new(),
        1 => pick(rng, &["s1", "p1", "c1", "big"]).to_string(),
        _ => text(rng),
    }
}

fn parse(rng: &mut Rng, statement: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, statement);
    cstr(&mut body, sql);
    let types: Vec<i32> = (0..rng.random_range(0..4))
        .map(|_| {
            *pick(
                rng,
                &[
                    0, 16, 20, 21, 23, 25, 701, 1043, 1700, 3802, 705, -1, 99_999,
                ],
            )
        })
        .collect();
    body.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for t in types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    message(b'P', &body)
}

fn bind(rng: &mut Rng, portal: &str, statement: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, statement);
    let formats: Vec<i16> = (0..rng.random_range(0..3))
        .map(|_| *pick(rng, &[0, 1, 2, -1]))
        .collect();
    body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in &formats {
        body.extend_from_slice(&f.to_be_bytes());
    }
    let count = rng.random_range(0..4);
    body.extend_from_slice(&(count as i16).to_be_bytes());
    for _ in 0..count {
        match rng.random_range(0..5) {
            0 => body.extend_from_slice(&(-1i32).to_be_bytes()),
            1 => {
                let value = number(rng).to_string();
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            2 => {
                let value = number(rng).to_be_bytes();
                body.extend_from_slice(&8i32.to_be_bytes());
                body.extend_from_slice(&value);
            }
            3 => {
                let value = text(rng);
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            // A length that lies.
            _ => body.extend_from_slice(&rng.random_range(1..1_000_000i32).to_be_bytes()),
        }
    }
    let results = rng.random_range(0..3);
    body.extend_from_slice(&(results as i16).to_be_bytes());
    for _ in 0..results {
        body.extend_from_slice(&pick(rng, &[0i16, 1, 7]).to_be_bytes());
    }
    message(b'B', &body)
}

impl PgWireTarget {
    /// Messages after a proper startup.
    fn session(&mut self, rng: &mut Rng, input: &mut Vec<String>) -> Vec<Vec<u8>> {
        let mut out = vec![query("SET quarry.query_timeout = '10s'")];
        for _ in 0..rng.random_range(1..7) {
            let kind = rng.random_range(0..14);
            let sql = if chance(rng, 0.2) {
                "SELECT * FROM people".to_string()
            } else {
                self.statements.statement(rng)
            };
            let m = match kind {
                0..=2 => {
                    input.push(format!("Q {}", excerpt(&sql, 200)));
                    query(&sql)
                }
                3 | 4 => {
                    let statement = name(rng);
                    input.push(format!("P {statement:?} {}", excerpt(&sql, 200)));
                    parse(rng, &statement, &sql)
                }
                5 => {
                    let (portal, statement) = (name(rng), name(rng));
                    input.push(format!("B {portal:?} {statement:?}"));
                    bind(rng, &portal, &statement)
                }
                6 => {
                    let target = *pick(rng, b"SPX");
                    let n = name(rng);
                    input.push(format!("D {} {n:?}", target as char));
                    let mut body = vec![target];
                    cstr(&mut body, &n);
                    message(b'D', &body)
                }
                7 => {
                    let portal = name(rng);
                    let rows = *pick(rng, &[0, 1, 2, -1, i32::MAX]);
                    input.push(format!("E {portal:?} {rows}"));
                    let mut body = Vec::new();
                    cstr(&mut body, &portal);
                    body.extend_from_slice(&rows.to_be_bytes());
                    message(b'E', &body)
                }
                8 => {
                    input.push("S".to_string());
                    message(b'S', &[])
                }
                9 => {
                    let target = *pick(rng, b"SPZ");
                    input.push(format!("C {}", target as char));
                    let mut body = vec![target];
                    cstr(&mut body, &name(rng));
                    message(b'C', &body)
                }
                10 => {
                    let kind = *pick(rng, b"dcfH");
                    input.push(format!("{} (copy/flush)", kind as char));
                    message(kind, &bytes(rng))
                }
                11 => {
                    let kind: u8 = rng.random();
                    input.push(format!("unknown type {kind}"));
                    message(kind, &bytes(rng))
                }
                12 => {
                    // A length shorter than the body: the rest reads as more messages.
                    input.push("lying length".to_string());
                    let body = format!("{sql}\0");
                    let mut m = vec![b'Q'];
                    let claimed = rng.random_range(4..body.len().max(5) + 4);
                    m.extend_from_slice(&(claimed as i32).to_be_bytes());
                    m.extend_from_slice(body.as_bytes());
                    m
                }
                _ => {
                    input.push("DECLARE/FETCH".to_string());
                    query(&format!(
                        "DECLARE c1 CURSOR FOR {sql}; FETCH {} FROM c1; CLOSE c1",
                        number(rng)
                    ))
                }
            };
            out.push(m);
        }
        out
    }

    fn input(&mut self, rng: &mut Rng) -> (Vec<Vec<u8>>, String, bool) {
        let user = [("user", "fuzz"), ("database", "quarry")];
        let mut described = Vec::new();
        let (messages, ends_well) = match rng.random_range(0..10) {
            0 => {
                described.push("garbage".to_string());
                (vec![bytes(rng)], false)
            }
            1 => {
                let mut whole = startup(PROTOCOL, &user);
                let cut = rng.random_range(0..whole.len());
                whole.truncate(cut);
                described.push(format!("startup cut at {cut}"));
                (vec![whole], false)
            }
            2 => {
                let version = *pick(rng, &[131_072, 262_144, 196_610, 196_609, 0, -1, 1234]);
                described.push(format!("protocol {version}"));
                (vec![startup(version, &user)], false)
            }
            3 => {
                described.push("SSLRequest then garbage".to_string());
                let mut request = 8i32.to_be_bytes().to_vec();
                request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
                (vec![request, bytes(rng)], false)
            }
            4 => {
                described.push("cancel request".to_string());
                let mut request = 16i32.to_be_bytes().to_vec();
                request.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
                request.extend_from_slice(&rng.random::<i32>().to_be_bytes());
                request.extend_from_slice(&rng.random::<i32>().to_be_bytes());
                (vec![request], false)
            }
            5 => {
                let key = text(rng);
                let value = text(rng);
                described.push(format!(
                    "startup {} = {}",
                    excerpt(&key, 40),
                    excerpt(&value, 40)
                ));
                (
                    vec![
                        startup(PROTOCOL, &[("user", &value), (&key, &value)]),
                        message(b'S', &[]),
                        query(&format!("SELECT '{MARKER}'")),
                    ],
                    true,
                )
            }
            6 => {
                // Leave in the middle of a large result.
                described.push("gone mid-result".to_string());
                (
                    vec![
                        startup(PROTOCOL, &user),
                        query("SELECT a.*, b.* FROM people a, people b, people c"),
                    ],
                    false,
                )
            }
            _ => {
                let mut messages = vec![startup(PROTOCOL, &user)];
                messages.extend(self.session(rng, &mut described));
                messages.push(message(b'S', &[]));
                messages.push(query(&format!("SELECT '{MARKER}'")));
                (messages, true)
            }
        };
        (messages, described.join(" | "), ends_well)
    }
}

/// Read what the server sends until the marker's ReadyForQuery, the end of the
/// connection, or the timeout; name the ending.
fn outcome(stream: &mut TcpStream, waits_for_marker: bool) -> String {
    // Without a marker the server may rightly wait for bytes that never come (a cut
    // startup packet): a few seconds tell that apart from an answer.
    let deadline = Instant::now()
        + if waits_for_marker {
            TIMEOUT
        } else {
            Duration::from_secs(3)
        };
    let mut seen = Vec::new();
    let mut buffer = [0u8; 65_536];
    let mut last_error = None;
    let mut drained = false;
    loop {
        if waits_for_marker
            && let Some(at) = find(&seen, MARKER.as_bytes())
            && seen[at..].contains(&b'Z')
        {
            return "marker".to_string();
        }
        if Instant::now() > deadline {
            return match (waits_for_marker, &last_error) {
                (true, _) => "timeout".to_string(),
                (false, Some(code)) => format!("error {code}, then waiting"),
                (false, None) => "waiting for more".to_string(),
            };
        }
        match stream.read(&mut buffer) {
            Ok(0) => {
                return match last_error {
                    Some(code) => format!("closed after error {code}"),
                    None => "closed".to_string(),
                };
            }
            Ok(n) => {
                seen.extend_from_slice(&buffer[..n]);
                if last_error.is_none() && !drained {
                    last_error = error_code(&seen);
                }
                // Keep memory bounded on large results: only the tail matters.
                if seen.len() > 1 << 20 {
                    seen.drain(..seen.len() - 4096);
                    drained = true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return "reset".to_string(),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The SQLSTATE of the first ErrorResponse in `seen` (backend messages from the start of
/// the connection), if any.
fn error_code(seen: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 5 <= seen.len() {
        let kind = seen[i];
        let length = i32::from_be_bytes([seen[i + 1], seen[i + 2], seen[i + 3], seen[i + 4]]);
        let end = (i + 1).checked_add(usize::try_from(length).ok()?)?;
        let body = seen.get(i + 5..end)?;
        if kind == b'E' {
            let mut fields = body.split(|b| *b == 0);
            return fields
                .find(|f| f.first() == Some(&b'C'))
                .map(|f| String::from_utf8_lossy(&f[1..]).to_string());
        }
        i = end;
    }
    None
}

impl Target for PgWireTarget {
    fn name(&self) -> &'static str {
        "pgwire"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        let (messages, input, waits_for_marker) = self.input(rng);
        let leave_early = input.contains("gone mid-result");
        let outcome = match TcpStream::connect(&self.address) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.set_write_timeout(Some(TIMEOUT));
                let mut written = true;
                for m in &messages {
                    if stream.write_all(m).is_err() {
                        written = false;
                        break;
                    }
                }
                if leave_early {
                    // Read a little of the result, then go.
                    let mut some = [0u8; 4096];
                    let _ = stream.read(&mut some);
                    "left mid-result".to_string()
                } else if written {
                    outcome(&mut stream, waits_for_marker)
                } else {
                    "closed while sending".to_string()
                }
            }
            Err(_) => "unreachable".to_string(),
        };
        Sent {
            input: excerpt(&input, 600),
            outcome,
        }
    }
}
