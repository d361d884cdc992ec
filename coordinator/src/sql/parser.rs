//! Quarry's SQL: DataFusion's dialect plus statements for sources and file tables.
//!
//! ```sql
//! CREATE [OR REPLACE] SOURCE [IF NOT EXISTS] name TYPE local|s3 [WITH (key = value, ...)]
//! DROP SOURCE [IF EXISTS] name
//! SHOW SOURCES
//! CREATE [OR REPLACE] TABLE [IF NOT EXISTS] [schema.]name FROM source 'path'
//!     [FORMAT parquet|csv|json] [WITH (key = value, ...)]
//! USE schema
//! ```
//!
//! Everything else — queries, `CREATE EXTERNAL TABLE`, views, `SHOW TABLES`, `DESCRIBE`,
//! `EXPLAIN`, `SET` — is DataFusion's own grammar. Our statements are recognised by their
//! leading words and parsed with the same sqlparser `Parser`, so errors carry positions.

use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Value;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use quarry_common::QuarryError;

use super::guard;
use super::security::parse_security;
pub(crate) use super::statement::{CreateSource, CreateTableFrom, ManagedSpec, Statement};
use super::words::{eat_word, expect_word, ident_name, object_name_parts, word_at};
use crate::limits::Limits;

/// Parse one or more `;`-separated statements, held to `limits` (see [`super::guard`]).
pub(crate) fn parse(sql: &str, limits: &Limits) -> Result<Vec<Statement>, QuarryError> {
    guard::check_text(sql, limits)?;
    let sql = super::prepass::prepare(sql).for_parser;
    let statements = parse_inner(&sql, limits).map_err(|e| match e {
        Refused::Parse(e) if guard::is_recursion_limit(&e) => guard::nesting_error(limits),
        Refused::Parse(e) => QuarryError::from(e),
        Refused::Limit(e) => e,
    })?;
    guard::check_count(statements.len(), limits)?;
    Ok(statements)
}

/// [`parse`] with the default limits, for tests.
#[cfg(test)]
pub(crate) fn parse_default(sql: &str) -> Result<Vec<Statement>, QuarryError> {
    parse(sql, &Limits::default())
}

/// Why a text did not parse.
enum Refused {
    Parse(datafusion::error::DataFusionError),
    Limit(QuarryError),
}

impl From<datafusion::error::DataFusionError> for Refused {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Refused::Parse(e)
    }
}

impl From<ParserError> for Refused {
    fn from(e: ParserError) -> Self {
        Refused::Parse(e.into())
    }
}

fn parse_inner(sql: &str, limits: &Limits) -> Result<Vec<Statement>, Refused> {
    let dialect = GenericDialect {};
    let mut df = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(guard::parser_recursion_limit(limits))
        .build()?;
    let mut statements = Vec::new();
    let mut expecting_delimiter = false;
    loop {
        while df.parser.consume_token(&Token::SemiColon) {
            expecting_delimiter = false;
        }
        if df.parser.peek_token().token == Token::EOF {
            break;
        }
        if expecting_delimiter {
            let found = df.parser.peek_token();
            return match df.parser.expected::<()>("end of statement", found) {
                Err(e) => Err(e.into()),
                Ok(()) => Err(Refused::Parse(datafusion::error::DataFusionError::Plan(
                    "expected the end of the statement".to_string(),
                ))),
            };
        }
        let statement = match parse_extension(&mut df.parser)? {
            Some(ours) => ours,
            None => with_partitioning(df.parse_statement()?)?,
        };
        statements.push(guard::check_statement(statement, limits).map_err(Refused::Limit)?);
        expecting_delimiter = true;
    }
    if statements.is_empty() {
        return Err(Refused::Parse(datafusion::error::DataFusionError::Plan(
            "no SQL statement given".to_string(),
        )));
    }
    Ok(statements)
}

/// A table name's parts, case-folded as DataFusion folds them.
fn name_parts(parser: &mut Parser) -> Result<Vec<String>, ParserError> {
    Ok(parser
        .parse_object_name(false)?
        .0
        .iter()
        .filter_map(|part| part.as_ident().map(ident_name))
        .collect())
}

/// Lift `PARTITION BY (a, b)` and `WITH (source = ..., path = ...)` off a `CREATE TABLE`.
fn with_partitioning(
    mut statement: DFStatement,
) -> Result<Statement, datafusion::error::DataFusionError> {
    use datafusion::error::DataFusionError;
    use datafusion::sql::sqlparser::ast::{
        CreateTableOptions, Expr, SqlOption, Statement as SqlStatement,
    };
    let DFStatement::Statement(inner) = &mut statement else {
        return Ok(Statement::DataFusion(Box::new(statement)));
    };
    let SqlStatement::CreateTable(create) = inner.as_mut() else {
        return Ok(Statement::DataFusion(Box::new(statement)));
    };
    let mut spec = ManagedSpec::default();
    if let CreateTableOptions::With(options) = &create.table_options {
        for option in options {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(DataFusionError::Plan(format!(
                    "CREATE TABLE takes WITH (source = '...', path = '...'), not {option}"
                )));
            };
            let text = match value {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                Expr::Identifier(ident) => ident_name(ident),
                other => other.to_string(),
            };
            match ident_name(key).as_str() {
                "source" => spec.source = Some(text),
                "path" => spec.path = Some(text),
                other => {
                    return Err(DataFusionError::Plan(format!(
                        "unknown table option '{other}': use source and path"
                    )));
                }
            }
        }
        create.table_options = CreateTableOptions::None;
    }
    if let Some(clause) = create.partition_by.take() {
        let items = match *clause {
            Expr::Nested(inner) => vec![*inner],
            Expr::Tuple(items) => items,
            other => vec![other],
        };
        spec.partition_by = items
            .into_iter()
            .map(|item| match item {
                Expr::Identifier(ident) => Ok(ident_name(&ident)),
                other => Err(DataFusionError::Plan(format!(
                    "PARTITION BY takes column names, not {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
    }
    if spec == ManagedSpec::default() {
        return Ok(Statement::DataFusion(Box::new(statement)));
    }
    if spec.path.is_some() && spec.source.is_none() {
        return Err(DataFusionError::Plan(
            "a table path needs its source: WITH (source = '...', path = '...')".to_string(),
        ));
    }
    Ok(Statement::ManagedTable {
        statement: Box::new(statement),
        spec,
    })
}

/// Our statements, recognised by their first words; None leaves the tokens untouched.
fn parse_extension(parser: &mut Parser) -> Result<Option<Statement>, ParserError> {
    if let Some(security) = parse_security(parser)? {
        return Ok(Some(Statement::Security(security)));
    }
    if let Some(copy) = super::copy::parse_copy(parser)? {
        return Ok(Some(Statement::Copy(copy)));
    }
    if let Some(reflection) = super::reflections::parse_reflection(parser)? {
        return Ok(Some(Statement::Reflection(reflection)));
    }
    if word_at(parser, 0).as_deref() == Some("EXPLAIN")
        && word_at(parser, 1).as_deref() == Some("REFLECTIONS")
    {
        parser.next_token();
        parser.next_token();
        let query = parser.parse_query()?;
        let statement = DFStatement::Statement(Box::new(
            datafusion::sql::sqlparser::ast::Statement::Query(query),
        ));
        return Ok(Some(Statement::ExplainReflections(Box::new(statement))));
    }
    let w0 = word_at(parser, 0);
    let w1 = word_at(parser, 1);
    let w2 = word_at(parser, 2);
    match (w0.as_deref(), w1.as_deref(), w2.as_deref()) {
        (Some("DESCRIBE"), Some("HISTORY"), _) => {
            parser.next_token();
            parser.next_token();
            let name = name_parts(parser)?;
            Ok(Some(Statement::DescribeHistory { name }))
        }
        (Some("OPTIMIZE"), Some("TABLE"), _) => {
            parser.next_token();
            parser.next_token();
            let name = name_parts(parser)?;
            Ok(Some(Statement::Optimize { name }))
        }
        (Some("VACUUM"), _, _) => {
            parser.next_token();
            eat_word(parser, "TABLE");
            let name = name_parts(parser)?;
            let retain_hours = if eat_word(parser, "RETAIN") {
                let hours = match parser.parse_number_value()?.value {
                    Value::Number(n, _) => n.parse::<f64>().ok(),
                    _ => None,
                };
                expect_word(parser, "HOURS")?;
                match hours {
                    Some(h) if h >= 0.0 => Some(h),
                    _ => {
                        let found = parser.peek_token();
                        return parser.expected("a number of hours", found);
                    }
                }
            } else {
                None
            };
            Ok(Some(Statement::Vacuum { name, retain_hours }))
        }
        (Some("SHOW"), Some("SOURCES"), _) => {
            parser.next_token();
            parser.next_token();
            Ok(Some(Statement::ShowSources))
        }
        (Some("USE"), _, _) => {
            parser.next_token();
            let name = parser.parse_identifier()?;
            Ok(Some(Statement::Use {
                schema: ident_name(&name),
            }))
        }
        (Some("DROP"), Some("SOURCE"), _) => {
            parser.next_token();
            parser.next_token();
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            Ok(Some(Statement::DropSource { name, if_exists }))
        }
        (Some("CREATE"), Some("SOURCE"), _) | (Some("CREATE"), Some("OR"), Some("REPLACE"))
            if is_create_source(parser) =>
        {
            parser.next_token();
            let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
            expect_word(parser, "SOURCE")?;
            let if_not_exists =
                parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            expect_word(parser, "TYPE")?;
            let kind = ident_name(&parser.parse_identifier()?).to_ascii_lowercase();
            let options = parse_with_options(parser)?;
            Ok(Some(Statement::CreateSource(CreateSource {
                name,
                kind,
                options,
                if_not_exists,
                or_replace,
            })))
        }
        (Some("CREATE"), _, _) if is_create_table_from(parser) => {
            parser.next_token();
            let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
            expect_word(parser, "TABLE")?;
            let if_not_exists =
                parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = object_name_parts(&parser.parse_object_name(false)?);
            expect_word(parser, "FROM")?;
            let source = ident_name(&parser.parse_identifier()?);
            let path = parser.parse_literal_string()?;
            let format = if eat_word(parser, "FORMAT") {
                Some(ident_name(&parser.parse_identifier()?).to_ascii_lowercase())
            } else {
                None
            };
            let options = parse_with_options(parser)?;
            Ok(Some(Statement::CreateTable(CreateTableFrom {
                name,
                source,
                path,
                format,
                options,
                if_not_exists,
                or_replace,
            })))
        }
        _ => Ok(None),
    }
}

fn is_create_source(parser: &Parser) -> bool {
    (1..=3).any(|i| word_at(parser, i).as_deref() == Some("SOURCE"))
        && word_at(parser, 1).as_deref() != Some("TABLE")
}

/// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] a[.b[.c]] FROM ...`: look past the name
/// for FROM without consuming anything.
fn is_create_table_from(parser: &Parser) -> bool {
    let mut i = 1;
    if word_at(parser, i).as_deref() == Some("OR")
        && word_at(parser, i + 1).as_deref() == Some("REPLACE")
    {
        i += 2;
    }
    if word_at(parser, i).as_deref() != Some("TABLE") {
        return false;
    }
    i += 1;
    if word_at(parser, i).as_deref() == Some("IF") {
        i += 3;
    }
    // name: word (. word)*
    if !matches!(parser.peek_nth_token(i).token, Token::Word(_)) {
        return false;
    }
    i += 1;
    while parser.peek_nth_token(i).token == Token::Period {
        i += 2;
    }
    word_at(parser, i).as_deref() == Some("FROM")
}

/// `WITH (key = value, ...)`, or nothing.
fn parse_with_options(parser: &mut Parser) -> Result<Vec<(String, String)>, ParserError> {
    let mut options = Vec::new();
    if !parser.parse_keyword(Keyword::WITH) {
        return Ok(options);
    }
    parser.expect_token(&Token::LParen)?;
    if parser.consume_token(&Token::RParen) {
        return Ok(options);
    }
    loop {
        let key = object_name_parts(&parser.parse_object_name(false)?).join(".");
        parser.expect_token(&Token::Eq)?;
        let value = match parser.peek_token().token {
            Token::Word(_) => ident_name(&parser.parse_identifier()?),
            _ => match parser.parse_value()?.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
                Value::Number(n, _) => n,
                Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
        };
        options.push((key.to_ascii_lowercase(), value));
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen)?;
        return Ok(options);
    }
}

/// Plan the one query `sql` holds (a view's definition), held to `limits`.
pub(crate) async fn plan_query_text(
    state: &datafusion::execution::SessionState,
    sql: &str,
    limits: &Limits,
) -> Result<datafusion::logical_expr::LogicalPlan, QuarryError> {
    let mut statements = parse(sql, limits)?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::DataFusion(statement)), true) => {
            Ok(state.statement_to_plan(*statement).await?)
        }
        _ => Err(QuarryError::invalid("a view must be defined by one query")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Vec<Statement>, QuarryError> {
        parse_default(sql)
    }

    #[test]
    fn parses_source_statements() -> Result<(), QuarryError> {
        let s = parse(
            "CREATE SOURCE IF NOT EXISTS lake TYPE s3 WITH (bucket = 'b', path_style = true, region = us_east)",
        )?;
        match &s[0] {
            Statement::CreateSource(c) => {
                assert_eq!(c.name, "lake");
                assert_eq!(c.kind, "s3");
                assert!(c.if_not_exists && !c.or_replace);
                assert_eq!(
                    c.options,
                    vec![
                        ("bucket".to_string(), "b".to_string()),
                        ("path_style".to_string(), "true".to_string()),
                        ("region".to_string(), "us_east".to_string())
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(parse("show sources")?[0], Statement::ShowSources));
        assert!(matches!(
            &parse("DROP SOURCE IF EXISTS lake")?[0],
            Statement::DropSource { name, if_exists: true } if name == "lake"
        ));
        let replace = parse("CREATE OR REPLACE SOURCE f TYPE local WITH (root = '/data')")?;
        assert!(matches!(&replace[0], Statement::CreateSource(c) if c.or_replace));
        Ok(())
    }

    #[test]
    fn parses_create_table_from() -> Result<(), QuarryError> {
        let s = parse(
            "CREATE TABLE demo.t FROM files 'a/b.csv' FORMAT csv WITH (header = false); SELECT 1",
        )?;
        assert_eq!(s.len(), 2);
        match &s[0] {
            Statement::CreateTable(t) => {
                assert_eq!(t.name, vec!["demo".to_string(), "t".to_string()]);
                assert_eq!(t.source, "files");
                assert_eq!(t.path, "a/b.csv");
                assert_eq!(t.format.as_deref(), Some("csv"));
                assert_eq!(t.options, vec![("header".to_string(), "false".to_string())]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(s[1], Statement::DataFusion(_)));
        // ordinary CREATE TABLE and views stay DataFusion's
        assert!(matches!(
            parse("CREATE TABLE x (a INT)")?[0],
            Statement::DataFusion(_)
        ));
        assert!(matches!(
            parse("CREATE OR REPLACE VIEW v AS SELECT 1")?[0],
            Statement::DataFusion(_)
        ));
        assert!(matches!(
            parse("CREATE EXTERNAL TABLE e STORED AS PARQUET LOCATION '/tmp/x'")?[0],
            Statement::DataFusion(_)
        ));
        Ok(())
    }

    #[test]
    fn errors_name_the_problem_and_position() {
        let e = parse("SELEC 1").unwrap_err();
        assert_eq!(e.code, quarry_common::ErrorCode::InvalidArgument);
        assert!(e.message.contains("Line: 1, Column: 1"), "{}", e.message);
        let e = parse("CREATE TABLE t FROM files").unwrap_err();
        assert!(e.message.contains("Expected"), "{}", e.message);
        let e = parse("CREATE SOURCE s TYPE local WITH (root '/x')").unwrap_err();
        assert!(e.message.contains("Expected: ="), "{}", e.message);
        let e = parse("SELECT 1 SELECT 2").unwrap_err();
        assert!(e.message.contains("end of statement"), "{}", e.message);
    }
}
