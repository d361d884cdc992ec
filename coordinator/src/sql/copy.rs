//! `COPY (SELECT ...) TO ...`: a query's rows as plain files (no table), written by the
//! executors like a table's.
//!
//! ```sql
//! COPY (SELECT ...) TO lake 'exports/daily/'          -- a folder in a writable source
//!     [WITH (FORMAT parquet|csv|json, PARTITION BY (col, ...), COMPRESSION zstd|snappy|none)]
//! COPY schema.table TO '/abs/path/' | 's3://bucket/prefix/'   -- raw locations: admins only
//! ```

use datafusion::sql::sqlparser::ast::{ObjectName, Query};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::words::{eat_word, expect_word, ident_name, word_at};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CopyFrom {
    Query(Box<Query>),
    Table(ObjectName),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopyTo {
    pub from: CopyFrom,
    /// A writable source the path is inside; a raw path or URL when None.
    pub source: Option<String>,
    pub path: String,
    pub format: CopyFormat,
    pub partition_by: Vec<String>,
    /// Parquet compression: `zstd` (the default), `snappy` or `none`.
    pub compression: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    Parquet,
    Csv,
    Json,
}

impl CopyFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CopyFormat::Parquet => "parquet",
            CopyFormat::Csv => "csv",
            CopyFormat::Json => "json",
        }
    }
}

/// `COPY ... TO ...`, or None when the statement is something else.
pub(crate) fn parse_copy(parser: &mut Parser) -> Result<Option<CopyTo>, ParserError> {
    if word_at(parser, 0).as_deref() != Some("COPY") {
        return Ok(None);
    }
    parser.next_token();
    let from = if parser.consume_token(&Token::LParen) {
        let query = parser.parse_query()?;
        parser.expect_token(&Token::RParen)?;
        CopyFrom::Query(query)
    } else {
        CopyFrom::Table(parser.parse_object_name(false)?)
    };
    expect_word(parser, "TO")?;
    let source = match parser.peek_token().token {
        Token::Word(_) => Some(ident_name(&parser.parse_identifier()?)),
        _ => None,
    };
    let path = parser.parse_literal_string()?;
    let mut copy = CopyTo {
        from,
        source,
        path,
        format: CopyFormat::Parquet,
        partition_by: Vec::new(),
        compression: "zstd".to_string(),
    };
    if eat_word(parser, "STORED") {
        let found = parser.peek_token();
        return parser.expected("WITH (FORMAT parquet|csv|json) instead of STORED AS", found);
    }
    if eat_word(parser, "WITH") {
        parser.expect_token(&Token::LParen)?;
        loop {
            if eat_word(parser, "FORMAT") {
                let format = ident_name(&parser.parse_identifier()?);
                copy.format = match format.to_ascii_lowercase().as_str() {
                    "parquet" => CopyFormat::Parquet,
                    "csv" => CopyFormat::Csv,
                    "json" | "ndjson" => CopyFormat::Json,
                    _ => {
                        let found = parser.peek_token();
                        return parser.expected("parquet, csv or json", found);
                    }
                };
            } else if eat_word(parser, "PARTITION") {
                expect_word(parser, "BY")?;
                parser.expect_token(&Token::LParen)?;
                copy.partition_by = parser
                    .parse_comma_separated(|p| p.parse_identifier())?
                    .iter()
                    .map(ident_name)
                    .collect();
                parser.expect_token(&Token::RParen)?;
            } else if eat_word(parser, "COMPRESSION") {
                let compression = ident_name(&parser.parse_identifier()?).to_ascii_lowercase();
                if !["zstd", "snappy", "none", "uncompressed"].contains(&compression.as_str()) {
                    let found = parser.peek_token();
                    return parser.expected("zstd, snappy or none", found);
                }
                copy.compression = compression;
            } else {
                let found = parser.peek_token();
                return parser.expected("FORMAT, PARTITION BY or COMPRESSION", found);
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    Ok(Some(copy))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    use super::*;

    fn parse(sql: &str) -> Result<Option<CopyTo>, ParserError> {
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql(sql)?;
        parse_copy(&mut parser)
    }

    #[test]
    fn copy_options() -> Result<(), ParserError> {
        let copy = parse(
            "COPY (SELECT 1 AS a) TO lake 'out/' WITH (FORMAT csv, PARTITION BY (a, \"B\"), COMPRESSION none)",
        )?
        .ok_or_else(|| ParserError::ParserError("not a COPY".into()))?;
        assert_eq!(copy.source.as_deref(), Some("lake"));
        assert_eq!(copy.path, "out/");
        assert_eq!(copy.format, CopyFormat::Csv);
        assert_eq!(copy.partition_by, ["a", "B"]);
        assert_eq!(copy.compression, "none");
        let raw = parse("COPY demo.orders TO '/tmp/x/'")?
            .ok_or_else(|| ParserError::ParserError("not a COPY".into()))?;
        assert_eq!(raw.source, None);
        assert!(matches!(raw.from, CopyFrom::Table(_)));
        assert!(parse("COPY t TO '/x' STORED AS PARQUET").is_err());
        assert!(parse("COPY t TO '/x' WITH (FORMAT xml)").is_err());
        assert!(parse("SELECT 1")?.is_none());
        Ok(())
    }
}
