//! Time travel on managed tables, in Delta's spelling:
//!
//! ```sql
//! SELECT * FROM mart.daily VERSION AS OF 3;
//! SELECT * FROM mart.daily TIMESTAMP AS OF '2026-12-01 10:00:00';
//! ```
//!
//! sqlparser reads these clauses only in some dialects, and DataFusion's planner ignores
//! them where it does, so the clause is folded into the table's name before parsing
//! (`daily@v3`, `daily@ts2026-12-01 10:00:00`) and the catalog resolves such a name to
//! the table as of that version.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// Which version of a table a name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// A timestamp as written: the latest version committed at or before it.
    Timestamp(String),
}

const VERSION_MARK: &str = "@v";
const TIMESTAMP_MARK: &str = "@ts";

/// A table name and the version it asks for, if any.
pub fn split(name: &str) -> (&str, Option<AsOf>) {
    if let Some(at) = name.rfind(TIMESTAMP_MARK) {
        return (
            &name[..at],
            Some(AsOf::Timestamp(
                name[at + TIMESTAMP_MARK.len()..].to_string(),
            )),
        );
    }
    if let Some(at) = name.rfind(VERSION_MARK)
        && let Ok(version) = name[at + VERSION_MARK.len()..].parse::<u64>()
    {
        return (&name[..at], Some(AsOf::Version(version)));
    }
    (name, None)
}

fn is_word(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.keyword == keyword)
}

/// Fold `name VERSION AS OF n` and `name TIMESTAMP AS OF '...'` into the name.
pub fn rewrite(sql: &str) -> Cow<'_, str> {
    let upper = sql.to_ascii_uppercase();
    if !upper.contains(" AS OF") {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        // Let the parser report what is wrong.
        return Cow::Borrowed(sql);
    };
    let significant = |from: usize| -> Option<usize> {
        (from..tokens.len()).find(|&i| !matches!(tokens[i], Token::Whitespace(_)))
    };
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    let mut changed = false;
    while i < tokens.len() {
        let token = &tokens[i];
        let is_clause = is_word(token, Keyword::VERSION) || is_word(token, Keyword::TIMESTAMP);
        let as_at = significant(i + 1);
        let of_at = as_at.and_then(|a| significant(a + 1));
        let value_at = of_at.and_then(|o| significant(o + 1));
        let previous = out.iter().rposition(|t| !matches!(t, Token::Whitespace(_)));
        if is_clause
            && let (Some(a), Some(o), Some(v), Some(p)) = (as_at, of_at, value_at, previous)
            && is_word(&tokens[a], Keyword::AS)
            && is_word(&tokens[o], Keyword::OF)
            && let Token::Word(table) = &out[p]
        {
            let suffix = match (&tokens[v], is_word(token, Keyword::VERSION)) {
                (Token::Number(n, _), true) => Some(format!("{VERSION_MARK}{n}")),
                (Token::SingleQuotedString(s), false) => Some(format!("{TIMESTAMP_MARK}{s}")),
                _ => None,
            };
            if let Some(suffix) = suffix {
                let base = if table.quote_style.is_some() {
                    table.value.clone()
                } else {
                    table.value.to_ascii_lowercase()
                };
                out[p] = Token::Word(Word {
                    value: format!("{base}{suffix}"),
                    quote_style: Some('"'),
                    keyword: Keyword::NoKeyword,
                });
                out.truncate(p + 1);
                i = v + 1;
                changed = true;
                continue;
            }
        }
        out.push(token.clone());
        i += 1;
    }
    if !changed {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(out.iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_fold_into_names() {
        assert_eq!(
            rewrite("SELECT * FROM mart.Daily VERSION AS OF 3 WHERE x = 1"),
            "SELECT * FROM mart.\"daily@v3\" WHERE x = 1"
        );
        assert_eq!(
            rewrite("SELECT * FROM t TIMESTAMP AS OF '2026-12-01 10:00:00' AS old"),
            "SELECT * FROM \"t@ts2026-12-01 10:00:00\" AS old"
        );
        assert_eq!(rewrite("SELECT 1 AS of"), "SELECT 1 AS of");
        assert_eq!(split("daily@v3"), ("daily", Some(AsOf::Version(3))));
        assert_eq!(
            split("t@ts2026-12-01"),
            ("t", Some(AsOf::Timestamp("2026-12-01".into())))
        );
        assert_eq!(split("plain"), ("plain", None));
    }
}
