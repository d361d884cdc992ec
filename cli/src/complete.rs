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
    /// The columns of each `schema.table`.
    columns_of: std::collections::BTreeMap<String, Vec<String>>,
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
                let relation = format!("{schema}.{table}");
                words
                    .columns_of
                    .entry(relation.clone())
                    .or_default()
                    .push(column.clone());
                words.relations.push(relation);
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

/// Words after which a name is not an alias.
const NOT_ALIAS: &[&str] = &[
    "WHERE", "ON", "JOIN", "LEFT", "RIGHT", "INNER", "FULL", "CROSS", "GROUP", "ORDER", "LIMIT",
    "UNION", "HAVING", "USING", "NATURAL",
];

impl QsqlHelper {
    /// The relation a qualifier names in `line`: an alias (`FROM demo.orders o`), a table's
    /// own name, or `schema.table` itself.
    fn relation_of(&self, line: &str, qualifier: &str) -> Option<String> {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let resolve = |name: &str| {
            let name = name.to_ascii_lowercase();
            self.words
                .relations
                .iter()
                .find(|r| **r == name || r.rsplit('.').next() == Some(name.as_str()))
                .cloned()
        };
        for (i, word) in words.iter().enumerate() {
            if !(word.eq_ignore_ascii_case("FROM") || word.eq_ignore_ascii_case("JOIN")) {
                continue;
            }
            let Some(relation) = words.get(i + 1) else {
                continue;
            };
            let mut alias = words.get(i + 2).copied();
            if alias.is_some_and(|a| a.eq_ignore_ascii_case("AS")) {
                alias = words.get(i + 3).copied();
            }
            if let Some(alias) = alias
                && alias.eq_ignore_ascii_case(qualifier)
                && !NOT_ALIAS.iter().any(|k| alias.eq_ignore_ascii_case(k))
            {
                return resolve(relation);
            }
        }
        resolve(qualifier)
    }

    /// What may replace the word at `start` of `before` (the line up to the cursor);
    /// aliases are looked up in the whole `line`.
    fn candidates(&self, line: &str, before: &str, start: usize) -> Vec<String> {
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
        // `alias.` or `table.`: that relation's columns (a schema's tables come below).
        let word = &before[start..];
        if let Some((qualifier, _)) = word.rsplit_once('.')
            && !self
                .words
                .schemas
                .iter()
                .any(|s| s.eq_ignore_ascii_case(qualifier))
            && let Some(relation) = self.relation_of(line, qualifier)
        {
            return self
                .words
                .columns_of
                .get(&relation)
                .map(|columns| columns.iter().map(|c| format!("{qualifier}.{c}")).collect())
                .unwrap_or_default();
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
            .candidates(line, before, start)
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
                columns: vec!["city".into(), "revenue".into(), "state".into()],
                columns_of: [
                    (
                        "demo.orders".to_string(),
                        vec!["city".into(), "revenue".into()],
                    ),
                    ("sys.jobs".to_string(), vec!["state".into()]),
                ]
                .into_iter()
                .collect(),
            },
        }
    }

    fn complete(line: &str) -> Vec<String> {
        let h = helper();
        let start = line.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
        h.candidates(line, line, start)
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
        // Columns after an alias or a table's name, from that table only.
        assert_eq!(
            complete("SELECT o.ci FROM demo.orders o WHERE o."),
            vec!["o.city", "o.revenue"]
        );
        assert_eq!(
            complete("SELECT x FROM demo.orders AS o JOIN sys.jobs j ON j.s"),
            vec!["j.state"]
        );
        assert_eq!(complete("SELECT orders.re"), vec!["orders.revenue"]);
        // An alias defined after the cursor counts too.
        let h = helper();
        let line = "SELECT o.ci FROM demo.orders o";
        assert_eq!(
            h.candidates(line, "SELECT o.ci", 7),
            vec!["o.city", "o.revenue"]
        );
    }
}
