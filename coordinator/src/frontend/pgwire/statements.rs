//! What a PostgreSQL client's statement is, as far as the protocol cares: a query that
//! returns rows, a command that returns a tag, or something PostgreSQL clients send on
//! their own that this door answers itself (transactions, `SET`/`SHOW` of PostgreSQL's
//! settings, cursors). Everything else goes to the engine unchanged.
//!
//! Only the first words of a statement are looked at (after comments); the engine parses
//! the statement itself.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::service::SETTING_DEFAULTS;

/// A statement as this door handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Returns rows (`SELECT n`).
    Query,
    /// Runs in the engine and answers a tag (`CREATE TABLE`, `INSERT 0 n`).
    Command(Command),
    /// Answered here.
    Local(Local),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// The command tag, e.g. `CREATE TABLE`.
    pub tag: String,
    /// Does the tag carry the number of rows written (`INSERT 0 n`, `DELETE n`)?
    pub counts_rows: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Local {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: accepted inside a transaction block.
    Savepoint(&'static str),
    /// `DISCARD ALL`: closes cursors and statements.
    Discard,
    /// `SET name = value` of a PostgreSQL setting (names lower case).
    Set {
        name: String,
        value: String,
    },
    /// `RESET name` (`all` for every one).
    Reset(String),
    /// `SHOW name` of a PostgreSQL setting.
    Show(String),
    /// `DECLARE name CURSOR FOR query`.
    Declare {
        cursor: String,
        query: String,
    },
    /// `FETCH [FORWARD] n FROM name` (None: all); `MOVE` skips instead.
    Fetch {
        cursor: String,
        count: Option<usize>,
        skip: bool,
    },
    /// `CLOSE name` (None: all).
    Close(Option<String>),
    /// Accepted and ignored, with this tag (`LISTEN`, `SET TRANSACTION ...`).
    Ignored(String),
}

/// Is `name` one of PostgreSQL's settings, which `SHOW` answers here (clients read them
/// on their own)? The server's defaults, and the session's own.
pub(crate) fn is_pg_setting(name: &str) -> bool {
    ["search_path", "session_authorization", "is_superuser"].contains(&name)
        || SETTING_DEFAULTS.iter().any(|(known, _)| *known == name)
}

/// Settings under `quarry.` and `datafusion.` go to the engine.
pub(crate) fn engine_setting(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("quarry.") || name.starts_with("datafusion.")
}

/// The statements of a simple-protocol query string, split at top-level semicolons. A
/// string the tokenizer cannot read is returned whole (the engine reports the error).
pub(crate) fn split(sql: &str) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return vec![sql.to_string()];
    };
    // Tokens know their line and column (1-based, in characters); cut the text there.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..]
            .char_indices()
            .nth(column)
            .map(|(i, _)| start + i)
    };
    let mut statements = Vec::new();
    let mut from = 0;
    for token in tokens {
        if token.token == Token::SemiColon {
            let Some(at) = offset(token.span.start.line, token.span.start.column) else {
                return vec![sql.to_string()];
            };
            if at >= from {
                push_statement(&mut statements, &sql[from..at]);
                from = at + 1;
            }
        }
    }
    push_statement(&mut statements, sql.get(from..).unwrap_or(""));
    statements
}

fn push_statement(statements: &mut Vec<String>, text: &str) {
    if !words(text, 1).is_empty() {
        statements.push(text.trim().to_string());
    }
}

/// The first `n` words of a statement, lower case, after comments; punctuation that
/// matters to classification (`=`, `(`) comes as its own word.
fn words(sql: &str, n: usize) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return sql
            .split_whitespace()
            .take(n)
            .map(str::to_ascii_lowercase)
            .collect();
    };
    tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .take(n)
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
            Token::Word(w) => w.value,
            Token::SingleQuotedString(s) => s,
            other => other.to_string().to_ascii_lowercase(),
        })
        .collect()
}

/// What `sql` (one statement) is.
pub(crate) fn classify(sql: &str) -> Kind {
    let w = words(sql, 12);
    let first = w.first().map(String::as_str).unwrap_or("");
    let second = w.get(1).map(String::as_str).unwrap_or("");
    let command = |tag: &str, counts_rows: bool| {
        Kind::Command(Command {
            tag: tag.to_string(),
            counts_rows,
        })
    };
    match first {
        "select" | "with" | "values" | "table" | "explain" | "describe" | "desc" | "(" => {
            Kind::Query
        }
        "begin" | "start" => Kind::Local(Local::Begin),
        "commit" | "end" => Kind::Local(Local::Commit),
        "rollback" | "abort" if w.iter().any(|x| x == "to") => {
            Kind::Local(Local::Savepoint("ROLLBACK"))
        }
        "rollback" | "abort" => Kind::Local(Local::Rollback),
        "savepoint" => Kind::Local(Local::Savepoint("SAVEPOINT")),
        "release" => Kind::Local(Local::Savepoint("RELEASE")),
        "discard" => Kind::Local(Local::Discard),
        "listen" | "unlisten" | "notify" | "deallocate" | "checkpoint" => {
            Kind::Local(Local::Ignored(first.to_ascii_uppercase()))
        }
        "set" => classify_set(sql, &w),
        "reset" => {
            let name = w[1..].join(".").replace("...", ".");
            if engine_setting(&name) {
                command("RESET", false)
            } else {
                Kind::Local(Local::Reset(normal_name(&w[1..])))
            }
        }
        "show" => {
            let name = normal_name(&w[1..]);
            if is_pg_setting(&name) {
                Kind::Local(Local::Show(name))
            } else {
                // The engine's SHOW: its settings, tokens, reflections...
                Kind::Query
            }
        }
        "declare" => declare(sql),
        "fetch" | "move" => fetch(&w),
        "close" => Kind::Local(Local::Close(match second {
            "all" => None,
            name => Some(name.to_string()),
        })),
        "insert" => command("INSERT 0", true),
        "delete" => command("DELETE", true),
        "update" => command("UPDATE", true),
        "copy" => command("COPY", true),
        // A new token is shown once, as a row.
        "create" if second == "token" => Kind::Query,
        "create" => {
            let rest: Vec<&str> = w[1..]
                .iter()
                .map(String::as_str)
                .filter(|x| !matches!(*x, "or" | "replace" | "external" | "temporary" | "temp"))
                .collect();
            if rest.first() == Some(&"table") && w.iter().any(|x| x == "as") {
                // PostgreSQL tags CREATE TABLE ... AS with the rows it wrote.
                command("SELECT", true)
            } else {
                command(
                    &format!("CREATE {}", rest.first().unwrap_or(&"")).to_uppercase(),
                    false,
                )
            }
        }
        "drop" | "alter" => command(&format!("{first} {second}").to_uppercase(), false),
        "" => Kind::Local(Local::Ignored(String::new())),
        other => command(&other.to_ascii_uppercase(), false),
    }
}

/// A setting's name from the words after SET/SHOW/RESET (`transaction isolation level`
/// is `transaction_isolation`, `time zone` is `timezone`).
fn normal_name(words: &[String]) -> String {
    let joined = words.join(" ");
    match joined.as_str() {
        "transaction isolation level" => "transaction_isolation".to_string(),
        "time zone" => "timezone".to_string(),
        "session authorization" => "session_authorization".to_string(),
        _ => words
            .iter()
            .take_while(|w| *w != "=" && *w != "to")
            .cloned()
            .collect::<Vec<_>>()
            .join(""),
    }
}

fn classify_set(sql: &str, w: &[String]) -> Kind {
    let mut rest: Vec<String> = w[1..].to_vec();
    if matches!(rest.first().map(String::as_str), Some("session" | "local")) {
        rest.remove(0);
    }
    match rest.first().map(String::as_str) {
        Some("transaction" | "characteristics") => {
            return Kind::Local(Local::Ignored("SET".to_string()));
        }
        Some("time") if rest.get(1).map(String::as_str) == Some("zone") => {
            let value = rest[2..].join(" ");
            return Kind::Local(Local::Set {
                name: "timezone".to_string(),
                value: unquote(&value),
            });
        }
        _ => {}
    }
    let name = normal_name(&rest);
    if engine_setting(&name) {
        return Kind::Command(Command {
            tag: "SET".to_string(),
            counts_rows: false,
        });
    }
    // The value is the text after `=` or `TO`, as written.
    let lower = sql.to_ascii_lowercase();
    let value = lower
        .find('=')
        .map(|i| &sql[i + 1..])
        .or_else(|| lower.find(" to ").map(|i| &sql[i + 4..]))
        .unwrap_or("")
        .trim()
        .trim_end_matches(';');
    Kind::Local(Local::Set {
        name,
        value: unquote(value),
    })
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    value
        .split(',')
        .map(|part| part.trim().trim_matches('\'').trim_matches('"').to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `DECLARE name [BINARY] [[NO] SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`.
fn declare(sql: &str) -> Kind {
    let lower = sql.to_ascii_lowercase();
    let w = words(sql, 2);
    let cursor = w.get(1).cloned().unwrap_or_default();
    match find_word(&lower, "for") {
        Some(at) => Kind::Local(Local::Declare {
            cursor,
            query: sql[at + 3..].trim().to_string(),
        }),
        None => Kind::Command(Command {
            tag: "DECLARE".to_string(),
            counts_rows: false,
        }),
    }
}

/// Where the word `word` first stands on its own in `lower`.
fn find_word(lower: &str, word: &str) -> Option<usize> {
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find(word) {
        let at = from + i;
        let before = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let end = at + word.len();
        let after = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before && after {
            return Some(at);
        }
        from = end;
    }
    None
}

/// `FETCH [FORWARD|NEXT] [n|ALL] [FROM|IN] name`, and `MOVE` likewise.
fn fetch(w: &[String]) -> Kind {
    let skip = w.first().map(String::as_str) == Some("move");
    let mut count = Some(1);
    let mut cursor = String::new();
    for word in &w[1..] {
        match word.as_str() {
            "forward" | "from" | "in" | "next" => {}
            "all" => count = None,
            n if n.parse::<usize>().is_ok() => count = n.parse().ok(),
            name => cursor = name.to_string(),
        }
    }
    Kind::Local(Local::Fetch {
        cursor,
        count,
        skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_told_apart_by_their_first_words() {
        assert_eq!(classify("  -- hi\n SELECT 1"), Kind::Query);
        assert_eq!(classify("BEGIN"), Kind::Local(Local::Begin));
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Kind::Local(Local::Set {
                name: "extra_float_digits".into(),
                value: "3".into()
            })
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            Kind::Local(Local::Set {
                name: "timezone".into(),
                value: "UTC".into()
            })
        );
        assert!(matches!(
            classify("SET quarry.query_timeout = '1s'"),
            Kind::Command(_)
        ));
        assert_eq!(
            classify("show transaction isolation level"),
            Kind::Local(Local::Show("transaction_isolation".into()))
        );
        assert_eq!(
            classify("DECLARE \"c1\" CURSOR WITHOUT HOLD FOR SELECT 1"),
            Kind::Local(Local::Declare {
                cursor: "c1".into(),
                query: "SELECT 1".into()
            })
        );
        assert_eq!(
            classify("FETCH FORWARD 100 FROM \"c1\""),
            Kind::Local(Local::Fetch {
                cursor: "c1".into(),
                count: Some(100),
                skip: false
            })
        );
        assert_eq!(
            classify("create table t as select 1"),
            Kind::Command(Command {
                tag: "SELECT".into(),
                counts_rows: true
            })
        );
        assert_eq!(
            classify("CREATE OR REPLACE VIEW v AS SELECT 1"),
            Kind::Command(Command {
                tag: "CREATE VIEW".into(),
                counts_rows: false
            })
        );
    }

    #[test]
    fn a_query_string_splits_at_top_level_semicolons() {
        assert_eq!(
            split("SELECT ';'; SELECT 2;;"),
            vec!["SELECT ';'".to_string(), "SELECT 2".to_string()]
        );
        assert_eq!(split(";"), Vec::<String>::new());
        assert_eq!(
            split("SELECT 'it''s'\n; SELECT 'é'; "),
            vec!["SELECT 'it''s'".to_string(), "SELECT 'é'".to_string()]
        );
    }
}
