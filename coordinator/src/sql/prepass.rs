//! The one pass over a statement's tokens before anything reads it, giving two texts:
//!
//! - for the parser: `?` placeholders numbered (`$1`, `$2`, … as DataFusion binds them),
//!   and `t VERSION AS OF 3` / `t TIMESTAMP AS OF '…'` folded into a [`TableAt`] name
//!   (see [`super::time_travel`]);
//! - for the job history: passwords and secret keys replaced by `'****'`.
//!
//! Statements without a `?`, an `AS OF`, a password or a secret are not tokenized at all.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

use super::time_travel::{AsOf, TableAt};

/// A statement's text as the parser reads it and as the job history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared<'a> {
    pub for_parser: Cow<'a, str>,
    pub for_history: Cow<'a, str>,
}

/// What a statement that does not tokenize is kept as in the history when it may hold a
/// secret (the parser reports what is wrong with it).
const UNREADABLE_SECRET: &str = "(a statement with secrets that does not parse)";

pub(crate) fn prepare(sql: &str) -> Prepared<'_> {
    // Every statement passes here: look without copying it.
    let placeholders = sql.contains('?');
    let time_travel = contains_word(sql, " as of");
    let secrets = contains_word(sql, "password") || contains_word(sql, "secret");
    if !placeholders && !time_travel && !secrets {
        return Prepared {
            for_parser: Cow::Borrowed(sql),
            for_history: Cow::Borrowed(sql),
        };
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Prepared {
            for_parser: Cow::Borrowed(sql),
            for_history: Cow::Borrowed(if secrets { UNREADABLE_SECRET } else { sql }),
        };
    };
    let parsed = for_parser(&tokens);
    let history = secrets.then(|| redacted(&tokens)).flatten();
    Prepared {
        for_parser: parsed.map_or(Cow::Borrowed(sql), Cow::Owned),
        for_history: history.map_or(Cow::Borrowed(sql), Cow::Owned),
    }
}

/// Does `text` hold `lower` (lower case), in any case?
fn contains_word(text: &str, lower: &str) -> bool {
    text.as_bytes()
        .windows(lower.len())
        .any(|w| w.eq_ignore_ascii_case(lower.as_bytes()))
}

fn is_word(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.keyword == keyword)
}

/// Placeholders numbered and time travel folded; None when nothing changed.
fn for_parser(tokens: &[Token]) -> Option<String> {
    let significant = |from: usize| -> Option<usize> {
        (from..tokens.len()).find(|&i| !matches!(tokens[i], Token::Whitespace(_)))
    };
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut placeholders = 0;
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if matches!(token, Token::Placeholder(p) if p == "?") {
            placeholders += 1;
            out.push(Token::Placeholder(format!("${placeholders}")));
            changed = true;
            i += 1;
            continue;
        }
        let is_clause = is_word(token, Keyword::VERSION) || is_word(token, Keyword::TIMESTAMP);
        if is_clause
            && let Some(a) = significant(i + 1)
            && let Some(o) = significant(a + 1)
            && let Some(v) = significant(o + 1)
            && let Some(p) = out.iter().rposition(|t| !matches!(t, Token::Whitespace(_)))
            && is_word(&tokens[a], Keyword::AS)
            && is_word(&tokens[o], Keyword::OF)
            && let Token::Word(table) = &out[p]
        {
            let as_of = match (&tokens[v], is_word(token, Keyword::VERSION)) {
                (Token::Number(n, _), true) => n.parse().ok().map(AsOf::Version),
                (Token::SingleQuotedString(s), false) => Some(AsOf::Timestamp(s.clone())),
                _ => None,
            };
            if let Some(as_of) = as_of {
                // Unquoted names fold to lower case, as DataFusion folds them.
                let base = if table.quote_style.is_some() {
                    table.value.clone()
                } else {
                    table.value.to_ascii_lowercase()
                };
                out[p] = Token::Word(Word {
                    value: TableAt::encode(&base, &as_of),
                    quote_style: Some('"'),
                    keyword: Keyword::NoKeyword,
                });
                out.truncate(p + 1);
                changed = true;
                i = v + 1;
                continue;
            }
        }
        out.push(token.clone());
        i += 1;
    }
    changed.then(|| out.iter().map(|t| t.to_string()).collect())
}

/// The quoted value after a word naming a password or a secret replaced; None when there
/// was none.
fn redacted(tokens: &[Token]) -> Option<String> {
    let mut out = String::new();
    let mut after_secret_word = false;
    let mut changed = false;
    for token in tokens {
        match token {
            Token::SingleQuotedString(_) | Token::DoubleQuotedString(_) if after_secret_word => {
                out.push_str("'****'");
                after_secret_word = false;
                changed = true;
                continue;
            }
            Token::Word(w) => {
                let word = w.value.to_ascii_lowercase();
                after_secret_word = word == "password" || word.contains("secret");
            }
            Token::Eq | Token::Whitespace(_) => {}
            _ => after_secret_word = false,
        }
        out.push_str(&token.to_string());
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(sql: &str) -> String {
        prepare(sql).for_parser.into_owned()
    }

    fn history(sql: &str) -> String {
        prepare(sql).for_history.into_owned()
    }

    #[test]
    fn placeholders_are_numbered_outside_strings() {
        assert_eq!(
            parser("SELECT ? + ?, '?' FROM t WHERE a = ?"),
            "SELECT $1 + $2, '?' FROM t WHERE a = $3"
        );
        assert!(matches!(prepare("SELECT 1").for_parser, Cow::Borrowed(_)));
    }

    #[test]
    fn time_travel_clauses_fold_into_names() {
        assert_eq!(
            parser("SELECT * FROM mart.Daily VERSION AS OF 3 WHERE x = ?"),
            "SELECT * FROM mart.\"daily\u{1}v3\" WHERE x = $1"
        );
        assert_eq!(
            parser("SELECT * FROM t TIMESTAMP AS OF '2026-12-01 10:00:00' AS old"),
            "SELECT * FROM \"t\u{1}ts2026-12-01 10:00:00\" AS old"
        );
        assert_eq!(parser("SELECT 1 AS of"), "SELECT 1 AS of");
    }

    #[test]
    fn secrets_never_reach_the_job_history() {
        assert_eq!(
            history("CREATE USER ada PASSWORD 'hunter2'"),
            "CREATE USER ada PASSWORD '****'"
        );
        let source = history(
            "CREATE SOURCE s TYPE s3 WITH (bucket = 'b', secret_access_key = 'k3y', region = 'x')",
        );
        assert!(
            !source.contains("k3y") && source.contains("'b'"),
            "{source}"
        );
        assert_eq!(history("SELECT 1"), "SELECT 1");
        assert_eq!(
            history("CREATE USER ada PASSWORD 'unterminated"),
            UNREADABLE_SECRET
        );
        // The parser still sees the password.
        assert_eq!(
            parser("CREATE USER ada PASSWORD 'hunter2'"),
            "CREATE USER ada PASSWORD 'hunter2'"
        );
    }
}
