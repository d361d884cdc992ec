//! The SQL target: statements from a grammar-aware generator (expressions, joins,
//! subqueries, CTEs, window functions, Quarry's DDL and reflection statements), and
//! mutations of the statements in `slt/`, sent to `POST /api/v1/sql`.

use std::time::Duration;

use rand::Rng as _;
use serde_json::json;

use super::draw::{number, pick, text};
use super::grammar::Generator;
use super::{Rng, Sent, Target, excerpt};
use crate::processes::Rest;

/// How long one statement may take before the client gives up (and the job is cancelled).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);

const SLT: &[&str] = &[
    include_str!("../../slt/catalog.slt"),
    include_str!("../../slt/distribution.slt"),
    include_str!("../../slt/errors.slt"),
    include_str!("../../slt/formats.slt"),
    include_str!("../../slt/joins.slt"),
    include_str!("../../slt/partitions.slt"),
    include_str!("../../slt/queries.slt"),
    include_str!("../../slt/reflections.slt"),
    include_str!("../../slt/system.slt"),
];

/// The statements of the `.slt` files, with `$ROOT` and `$OUTSIDE` filled in.
pub fn slt_statements(root: &str, outside: &str) -> Vec<String> {
    let mut statements = Vec::new();
    for file in SLT {
        let mut lines = file.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("statement ") || line.starts_with("query ")) {
                continue;
            }
            let sql: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty() && l.trim() != "----")
                .collect();
            if !sql.is_empty() {
                statements.push(
                    sql.join("\n")
                        .replace("$ROOT", root)
                        .replace("$OUTSIDE", outside),
                );
            }
        }
    }
    statements
}

pub struct SqlTarget {
    rest: Rest,
    corpus: Vec<String>,
    /// Names of views and tables this run made, for statements that refer back to them.
    made: Vec<String>,
}

impl SqlTarget {
    /// Send to the REST door at `base`; `root` is the `files` source's root.
    pub fn new(base: &str, root: &str) -> Self {
        let outside = format!("{root}/../outside");
        SqlTarget {
            rest: Rest::new(base.to_string()),
            corpus: slt_statements(root, &outside),
            made: Vec::new(),
        }
    }

    /// One statement from the seeded stream (exposed so other targets reuse it).
    pub fn statement(&mut self, rng: &mut Rng) -> String {
        match rng.random_range(0..10) {
            0..=4 => Generator::new(rng).statement(&mut self.made),
            5..=8 if !self.corpus.is_empty() => {
                let base = pick(rng, &self.corpus).clone();
                mutate(rng, &base)
            }
            _ => Generator::new(rng).pathological(),
        }
    }
}

impl Target for SqlTarget {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        let sql = self.statement(rng);
        let reply = self.rest.runtime.block_on(async {
            let reply = self
                .rest
                .client
                .post(format!("{}/api/v1/sql", self.rest.base))
                .json(&json!({"sql": sql}))
                .timeout(STATEMENT_TIMEOUT)
                .send()
                .await?;
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, body))
        });
        let outcome = match reply {
            Ok((200, _)) => "ok".to_string(),
            Ok((status, body)) => format!(
                "HTTP {status} {}",
                body["code"].as_str().unwrap_or("(no code)")
            ),
            Err(e) if e.is_timeout() => "slow: the client gave up".to_string(),
            Err(_) => "unreachable".to_string(),
        };
        Sent {
            input: excerpt(&sql, 600),
            outcome,
        }
    }
}

/// Token-level mutations of a statement.
pub fn mutate(rng: &mut Rng, sql: &str) -> String {
    let mut tokens: Vec<String> = tokens(sql);
    const INSERTS: &[&str] = &[
        "(",
        ")",
        ",",
        "*",
        "+",
        "-",
        "/",
        "%",
        "||",
        "=",
        "<>",
        "NULL",
        "NOT",
        "AND",
        "OR",
        "SELECT",
        "FROM",
        "WHERE",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "UNION ALL",
        "JOIN",
        "ON",
        "CASE",
        "WHEN",
        "THEN",
        "END",
        "AS",
        "WITH",
        "RECURSIVE",
        "OVER",
        "PARTITION BY",
        "DISTINCT",
        "CAST",
        "::",
        "[",
        "]",
        "'",
        "\"",
        ";",
        "EXPLAIN",
        "ANALYZE",
        "1e308",
        "-9223372036854775808",
        "''",
        "?",
        "$1",
        "INTERVAL '1' DAY",
        "DATE '2024-02-30'",
    ];
    for _ in 0..rng.random_range(1..5) {
        if tokens.is_empty() {
            tokens.push(pick(rng, INSERTS).to_string());
            continue;
        }
        let at = rng.random_range(0..tokens.len());
        match rng.random_range(0..8) {
            0 => {
                tokens.remove(at);
            }
            1 => {
                let t = tokens[at].clone();
                tokens.insert(at, t);
            }
            2 => tokens.insert(at, pick(rng, INSERTS).to_string()),
            3 => tokens[at] = text(rng).replace('\'', "''"),
            4 => {
                let other = rng.random_range(0..tokens.len());
                tokens.swap(at, other);
            }
            5 => tokens[at] = number(rng).to_string(),
            6 => {
                // Repeat a run of tokens many times: long lists, deep nesting.
                let end = (at + rng.random_range(1..4)).min(tokens.len());
                let piece = tokens[at..end].join(" ");
                let times = *pick(rng, &[2usize, 10, 100, 1000, 5000]);
                tokens.insert(
                    end,
                    std::iter::repeat_n(piece, times)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            _ => {
                tokens.insert(at, "(".to_string());
                let end = rng.random_range(at + 1..=tokens.len());
                tokens.insert(end, ")".to_string());
            }
        }
    }
    tokens.join(" ")
}

/// Split SQL into rough tokens: words, quoted strings, and single punctuation characters.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut token = c.to_string();
        if c == '\'' || c == '"' {
            for next in chars.by_ref() {
                token.push(next);
                if next == c {
                    break;
                }
            }
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            while let Some(&next) = chars.peek() {
                if next.is_alphanumeric() || next == '_' || next == '.' {
                    token.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        out.push(token);
    }
    out
}
