//! Reflection statements, in Dremio's syntax:
//!
//! ```sql
//! ALTER TABLE|VIEW ds CREATE AGGREGATE REFLECTION name
//!     USING DIMENSIONS (col [BY DAY], ...)
//!     [MEASURES (col [(SUM, COUNT, MIN, MAX, APPROX_COUNT_DISTINCT)], ...)]
//!     [PARTITION BY (col, ...)] [LOCALSORT BY (col, ...)]
//! ALTER TABLE|VIEW ds CREATE RAW REFLECTION name USING DISPLAY (col, ...)
//!     [PARTITION BY (col, ...)] [LOCALSORT BY (col, ...)]
//! ALTER TABLE|VIEW ds DROP REFLECTION name
//! ALTER TABLE|VIEW ds REFRESH REFLECTIONS
//! ALTER TABLE|VIEW ds {ENABLE | DISABLE} {RAW | AGGREGATE} ACCELERATION
//! ALTER TABLE|VIEW ds SET REFLECTION REFRESH {EVERY '1 hour' | NEVER} [GRACE '3 hours']
//! ALTER SOURCE s SET REFLECTION REFRESH {EVERY '1 hour' | NEVER} [GRACE '3 hours']
//!     (the default of the source's datasets)
//! WAIT FOR REFLECTION name [TIMEOUT seconds]
//! ALTER REFLECTION name REFRESH
//! DROP REFLECTION name
//! ```

use datafusion::sql::sqlparser::ast::Value;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use quarry_catalog::{Dimension, Measure, MeasureFunction, ReflectionKind};

use super::words::{eat_word, expect_word, ident_name, word_at};

#[derive(Debug, Clone, PartialEq)]
pub enum ReflectionStatement {
    Create {
        dataset: Vec<String>,
        definition: ReflectionDefinition,
    },
    Drop {
        dataset: Vec<String>,
        name: String,
    },
    Refresh {
        dataset: Vec<String>,
    },
    Acceleration {
        dataset: Vec<String>,
        raw: bool,
        enable: bool,
    },
    Policy {
        /// The dataset's name, or the source's when `on_source`.
        dataset: Vec<String>,
        on_source: bool,
        /// None: NEVER (only when asked).
        every: Option<String>,
        grace: Option<String>,
    },
    Wait {
        name: String,
        timeout_seconds: Option<f64>,
    },
    /// `ALTER REFLECTION name REFRESH`: one reflection, by name.
    RefreshOne {
        name: String,
    },
    /// `DROP REFLECTION name`: one reflection, by name.
    DropByName {
        name: String,
    },
    /// A change of one reflection as read at `version` (REST's PUT): what is given is
    /// replaced. A new definition drops the materialization and starts a refresh.
    Update {
        name: String,
        version: u64,
        enabled: Option<bool>,
        kind: Option<ReflectionKind>,
        partition_by: Option<Vec<String>>,
        localsort_by: Option<Vec<String>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReflectionDefinition {
    pub name: String,
    pub kind: ReflectionKind,
    pub partition_by: Vec<String>,
    pub localsort_by: Vec<String>,
}

/// A reflection statement, or None (tokens untouched) when it is something else.
pub(crate) fn parse_reflection(
    parser: &mut Parser,
) -> Result<Option<ReflectionStatement>, ParserError> {
    if word_at(parser, 0).as_deref() == Some("WAIT")
        && word_at(parser, 1).as_deref() == Some("FOR")
        && word_at(parser, 2).as_deref() == Some("REFLECTION")
    {
        for _ in 0..3 {
            parser.next_token();
        }
        let name = identifier(parser)?;
        let timeout_seconds = if eat_word(parser, "TIMEOUT") {
            Some(number(parser)?)
        } else {
            None
        };
        return Ok(Some(ReflectionStatement::Wait {
            name,
            timeout_seconds,
        }));
    }
    if word_at(parser, 1).as_deref() == Some("REFLECTION") {
        match word_at(parser, 0).as_deref() {
            Some("DROP") => {
                parser.next_token();
                parser.next_token();
                let name = identifier(parser)?;
                return Ok(Some(ReflectionStatement::DropByName { name }));
            }
            Some("ALTER") => {
                parser.next_token();
                parser.next_token();
                let name = identifier(parser)?;
                expect_word(parser, "REFRESH")?;
                return Ok(Some(ReflectionStatement::RefreshOne { name }));
            }
            _ => {}
        }
    }
    let on_source = word_at(parser, 1).as_deref() == Some("SOURCE");
    if word_at(parser, 0).as_deref() != Some("ALTER")
        || !matches!(
            word_at(parser, 1).as_deref(),
            Some("TABLE" | "VIEW" | "SOURCE")
        )
    {
        return Ok(None);
    }
    // Past the dataset's name (words joined by dots): is this one of ours?
    let mut n = 2;
    while parser.peek_nth_token(n + 1).token == Token::Period {
        n += 2;
    }
    let action = word_at(parser, n + 1);
    let next = word_at(parser, n + 2);
    let ours = match (action.as_deref(), next.as_deref()) {
        // A source takes only a policy.
        _ if on_source => (action.as_deref(), next.as_deref()) == (Some("SET"), Some("REFLECTION")),
        _ => matches!(
            (action.as_deref(), next.as_deref()),
            (Some("CREATE"), Some("AGGREGATE" | "RAW"))
                | (Some("DROP" | "SET"), Some("REFLECTION"))
                | (Some("REFRESH"), Some("REFLECTIONS"))
                | (Some("ENABLE" | "DISABLE"), Some("RAW" | "AGGREGATE"))
        ),
    };
    if !ours {
        return Ok(None);
    }
    parser.next_token();
    parser.next_token();
    let dataset: Vec<String> = parser
        .parse_object_name(false)?
        .0
        .iter()
        .filter_map(|part| part.as_ident().map(ident_name))
        .collect();
    let statement = match action.as_deref() {
        Some("CREATE") => {
            parser.next_token();
            let aggregate = eat_word(parser, "AGGREGATE");
            if !aggregate {
                expect_word(parser, "RAW")?;
            }
            expect_word(parser, "REFLECTION")?;
            let name = identifier(parser)?;
            expect_word(parser, "USING")?;
            let kind = if aggregate {
                expect_word(parser, "DIMENSIONS")?;
                let dimensions = list(parser, dimension)?;
                let measures = if eat_word(parser, "MEASURES") {
                    list(parser, measure)?
                } else {
                    Vec::new()
                };
                ReflectionKind::Aggregate {
                    dimensions,
                    measures,
                }
            } else {
                expect_word(parser, "DISPLAY")?;
                ReflectionKind::Raw {
                    display: list(parser, identifier)?,
                }
            };
            let (mut partition_by, mut localsort_by) = (Vec::new(), Vec::new());
            loop {
                if eat_word(parser, "PARTITION") {
                    expect_word(parser, "BY")?;
                    partition_by = list(parser, identifier)?;
                } else if eat_word(parser, "LOCALSORT") {
                    expect_word(parser, "BY")?;
                    localsort_by = list(parser, identifier)?;
                } else {
                    break;
                }
            }
            ReflectionStatement::Create {
                dataset,
                definition: ReflectionDefinition {
                    name,
                    kind,
                    partition_by,
                    localsort_by,
                },
            }
        }
        Some("DROP") => {
            parser.next_token();
            expect_word(parser, "REFLECTION")?;
            let name = identifier(parser)?;
            ReflectionStatement::Drop { dataset, name }
        }
        Some("REFRESH") => {
            parser.next_token();
            expect_word(parser, "REFLECTIONS")?;
            ReflectionStatement::Refresh { dataset }
        }
        Some("SET") => {
            parser.next_token();
            expect_word(parser, "REFLECTION")?;
            expect_word(parser, "REFRESH")?;
            let every = if eat_word(parser, "NEVER") {
                None
            } else {
                expect_word(parser, "EVERY")?;
                Some(text(parser)?)
            };
            let grace = if eat_word(parser, "GRACE") {
                Some(text(parser)?)
            } else {
                None
            };
            ReflectionStatement::Policy {
                dataset,
                on_source,
                every,
                grace,
            }
        }
        _ => {
            let enable = eat_word(parser, "ENABLE");
            if !enable {
                expect_word(parser, "DISABLE")?;
            }
            let raw = eat_word(parser, "RAW");
            if !raw {
                expect_word(parser, "AGGREGATE")?;
            }
            expect_word(parser, "ACCELERATION")?;
            ReflectionStatement::Acceleration {
                dataset,
                raw,
                enable,
            }
        }
    };
    Ok(Some(statement))
}

fn identifier(parser: &mut Parser) -> Result<String, ParserError> {
    Ok(ident_name(&parser.parse_identifier()?))
}

fn text(parser: &mut Parser) -> Result<String, ParserError> {
    match parser.parse_value()?.value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s),
        Value::Number(n, _) => Ok(n),
        other => Err(ParserError::ParserError(format!(
            "expected a duration such as '1 hour', found {other}"
        ))),
    }
}

fn number(parser: &mut Parser) -> Result<f64, ParserError> {
    let value = text(parser)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| ParserError::ParserError(format!("TIMEOUT takes seconds, not {value}")))
}

/// `( item, item, ... )`.
fn list<T>(
    parser: &mut Parser,
    item: fn(&mut Parser) -> Result<T, ParserError>,
) -> Result<Vec<T>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    let mut items = vec![item(parser)?];
    while parser.consume_token(&Token::Comma) {
        items.push(item(parser)?);
    }
    parser.expect_token(&Token::RParen)?;
    Ok(items)
}

fn dimension(parser: &mut Parser) -> Result<Dimension, ParserError> {
    let column = identifier(parser)?;
    let by_day = if eat_word(parser, "BY") {
        expect_word(parser, "DAY")?;
        true
    } else {
        false
    };
    Ok(Dimension { column, by_day })
}

/// `col` (SUM and COUNT, Dremio's default) or `col (SUM, COUNT, ...)`.
fn measure(parser: &mut Parser) -> Result<Measure, ParserError> {
    let column = identifier(parser)?;
    let functions = if parser.peek_token().token == Token::LParen {
        let mut functions = list(parser, function)?;
        functions.sort();
        functions.dedup();
        functions
    } else {
        vec![MeasureFunction::Sum, MeasureFunction::Count]
    };
    Ok(Measure { column, functions })
}

fn function(parser: &mut Parser) -> Result<MeasureFunction, ParserError> {
    let word = word_at(parser, 0);
    let function = match word.as_deref() {
        Some("SUM") => MeasureFunction::Sum,
        Some("COUNT") => MeasureFunction::Count,
        Some("MIN") => MeasureFunction::Min,
        Some("MAX") => MeasureFunction::Max,
        Some("APPROX_COUNT_DISTINCT") => MeasureFunction::ApproxCountDistinct,
        Some("APPROXIMATE") => {
            parser.next_token();
            expect_word(parser, "COUNT")?;
            expect_word(parser, "DISTINCT")?;
            return Ok(MeasureFunction::ApproxCountDistinct);
        }
        _ => {
            let found = parser.peek_token();
            return parser.expected("SUM, COUNT, MIN, MAX or APPROX_COUNT_DISTINCT", found);
        }
    };
    parser.next_token();
    Ok(function)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parser::{Statement, parse_default as parse};

    fn reflection(sql: &str) -> ReflectionStatement {
        match parse(sql).expect("parses").pop() {
            Some(Statement::Reflection(r)) => r,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn parses_dremio_reflection_ddl() {
        let created = reflection(
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION daily_city \
             USING DIMENSIONS (date BY DAY, city) \
             MEASURES (revenue (SUM, COUNT, MIN, MAX), quantity, age (APPROXIMATE COUNT DISTINCT)) \
             PARTITION BY (city) LOCALSORT BY (date)",
        );
        let ReflectionStatement::Create {
            dataset,
            definition,
        } = created
        else {
            panic!("not a create");
        };
        assert_eq!(dataset, ["demo", "orders"]);
        assert_eq!(definition.name, "daily_city");
        assert_eq!(definition.partition_by, ["city"]);
        assert_eq!(definition.localsort_by, ["date"]);
        let ReflectionKind::Aggregate {
            dimensions,
            measures,
        } = definition.kind
        else {
            panic!("not an aggregate");
        };
        assert!(dimensions[0].by_day && !dimensions[1].by_day);
        assert_eq!(measures[0].functions.len(), 4);
        assert_eq!(
            measures[1].functions,
            [MeasureFunction::Sum, MeasureFunction::Count]
        );
        assert_eq!(
            measures[2].functions,
            [MeasureFunction::ApproxCountDistinct]
        );
        assert!(matches!(
            reflection("ALTER VIEW v CREATE RAW REFLECTION slim USING DISPLAY (a, b)"),
            ReflectionStatement::Create { .. }
        ));
        assert_eq!(
            reflection("ALTER TABLE t DROP REFLECTION r"),
            ReflectionStatement::Drop {
                dataset: vec!["t".into()],
                name: "r".into()
            }
        );
        assert!(matches!(
            reflection("alter table s.t disable raw acceleration"),
            ReflectionStatement::Acceleration {
                raw: true,
                enable: false,
                ..
            }
        ));
        assert_eq!(
            reflection("ALTER REFLECTION r REFRESH"),
            ReflectionStatement::RefreshOne { name: "r".into() }
        );
        assert_eq!(
            reflection("DROP REFLECTION r"),
            ReflectionStatement::DropByName { name: "r".into() }
        );
        assert_eq!(
            reflection("WAIT FOR REFLECTION r TIMEOUT 5"),
            ReflectionStatement::Wait {
                name: "r".into(),
                timeout_seconds: Some(5.0)
            }
        );
        assert_eq!(
            reflection("ALTER SOURCE lake SET REFLECTION REFRESH NEVER"),
            ReflectionStatement::Policy {
                dataset: vec!["lake".into()],
                on_source: true,
                every: None,
                grace: None,
            }
        );
        assert!(parse("ALTER SOURCE lake REFRESH REFLECTIONS").is_err());
        assert!(matches!(
            reflection("ALTER TABLE t SET REFLECTION REFRESH EVERY '2 hours' GRACE '6 hours'"),
            ReflectionStatement::Policy {
                every: Some(_),
                grace: Some(_),
                ..
            }
        ));
        assert!(parse("ALTER TABLE t CREATE AGGREGATE REFLECTION r USING DIMENSIONS ()").is_err());
        assert!(parse("ALTER TABLE t CREATE AGGREGATE REFLECTION r USING DIMENSIONS (a) MEASURES (b (STDDEV))").is_err());
    }
}
