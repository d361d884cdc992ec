//! Tab completion at the prompt: backslash commands, SQL keywords, and the schemas, tables
//! and columns the user may see (read from `information_schema` when the prompt opens and
//! after statements that change the catalog).

use arrow::array::Array;
use rustyline::Context;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;

use crate::client::Connection;

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "INNER JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS NULL",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "WITH",
    "UNION ALL",
    "INSERT INTO",
    "VALUES",
    "CREATE",
    "TABLE",
    "VIEW",
    "SCHEMA",
    "SOURCE",
    "DROP",
    "ALTER",
    "USE",
    "SHOW",
    "EXPLAIN",
    "DESCRIBE",
    "REFLECTION",
    "COPY",
];

const META: &[&str] = &[
    "\\d",
    "\\dt",
    "\\dv",
    "\\dn",
    "\\df",
    "\\l",
    "\\x",
    "\\a",
    "\\t",
    "\\pset",
    "\\timing",
    "\\i",
    "\\o",
    "\\echo",
    "\\set",
    "\\unset",
    "\\conninfo",
    "\\?",
    "\\q",
];

/// Words that name a table next.
const BEFORE_TABLE: &[&str] = &[
    "FROM", "JOIN", "INTO", "TABLE", "UPDATE", "DESCRIBE", "VIEW",
];

/// What the catalog offers to complete.
#[derive(Default)]
pub struct CatalogWords {
    schemas: Vec<String>,
    /// `schema.table`.
    relations: Vec<String>,
    columns: Vec<String>,
}

impl CatalogWords {
    /// The user's schemas, tables and columns; empty when the server cannot say.
    pub async fn load(connection: &mut Connection) -> CatalogWords {
        let sql = "SELECT table_schema, table_name, column_name FROM information_schema.columns \
                   WHERE table_schema <> 'information_schema'";
        let Ok(result) = connection.query(sql).await else {
            return CatalogWords::default();
        };
        let mut words = CatalogWords::default();
        for batch in &result.batches {
            let text = |i: usize| {
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                    .ok()
                    .and_then(|a| {
                        a.as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .map(|s| {
                                (0..s.len())
                                    .map(|r| s.value(r).to_string())
                                    .collect::<Vec<_>>()
                            })
                    })
                    .unwrap_or_default()
            };
            let (schemas, tables, columns) = (text(0), text(1), text(2));
            for ((schema, table), column) in schemas.into_iter().zip(tables).zip(columns) {
                words.relations.push(format!("{schema}.{table}"));
                words.schemas.push(schema);
                words.columns.push(column);
            }
        }
        for list in [&mut words.schemas, &mut words.relations, &mut words.columns] {
            list.sort();
            list.dedup();
        }
        words
    }
}

/// rustyline's helper: completion only.
#[derive(Default)]
pub struct QsqlHelper {
    pub words: CatalogWords,
}

impl QsqlHelper {
    fn candidates(&self, before: &str, start: usize) -> Vec<String> {
        let previous = before[..start]
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let trimmed = before.trim_start();
        if trimmed.starts_with('\\') && !trimmed.contains(char::is_whitespace) {
            return META.iter().map(|m| m.to_string()).collect();
        }
        let relations = || {
            let schemas = self.words.schemas.iter().map(|s| format!("{s}."));
            schemas.chain(self.words.relations.iter().cloned())
        };
        if BEFORE_TABLE.contains(&previous.as_str()) || trimmed.starts_with("\\d") {
            return relations().collect();
        }
        KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .chain(self.words.columns.iter().cloned())
            .chain(relations())
            .collect()
    }
}

impl Completer for QsqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = word.to_ascii_lowercase();
        let matches = self
            .candidates(before, start)
            .into_iter()
            .filter(|c| c.to_ascii_lowercase().starts_with(&lower))
            .map(|c| {
                // Keywords keep the case the user typed them in.
                let replacement = if word.chars().all(|ch| !ch.is_ascii_uppercase())
                    && KEYWORDS.contains(&c.as_str())
                {
                    c.to_ascii_lowercase()
                } else {
                    c
                };
                Pair {
                    display: replacement.clone(),
                    replacement,
                }
            })
            .collect();
        Ok((start, matches))
    }
}

impl Hinter for QsqlHelper {
    type Hint = String;
}

impl Highlighter for QsqlHelper {}

impl Validator for QsqlHelper {}

impl rustyline::Helper for QsqlHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> QsqlHelper {
        QsqlHelper {
            words: CatalogWords {
                schemas: vec!["demo".into(), "sys".into()],
                relations: vec!["demo.orders".into(), "sys.jobs".into()],
                columns: vec!["city".into(), "revenue".into()],
            },
        }
    }

    fn complete(line: &str) -> Vec<String> {
        let h = helper();
        let start = line.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
        h.candidates(line, start)
            .into_iter()
            .filter(|c| {
                c.to_ascii_lowercase()
                    .starts_with(&line[start..].to_ascii_lowercase())
            })
            .collect()
    }

    #[test]
    fn tables_after_from_columns_and_keywords_elsewhere() {
        assert_eq!(complete("SELECT * FROM de"), vec!["demo.", "demo.orders"]);
        assert_eq!(complete("SELECT * FROM demo.or"), vec!["demo.orders"]);
        assert_eq!(complete("SELECT ci"), vec!["city"]);
        assert!(complete("SEL").contains(&"SELECT".to_string()));
        assert_eq!(complete("\\dt"), vec!["\\dt"]);
        assert_eq!(complete("\\d de"), vec!["demo.", "demo.orders"]);
    }
}
