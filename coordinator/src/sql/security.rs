//! Quarry's statements for users, roles, grants and tokens.
//!
//! ```sql
//! CREATE USER [IF NOT EXISTS] name PASSWORD 'secret'
//! ALTER USER name [SET] PASSWORD 'secret'
//! DROP USER [IF EXISTS] name
//! CREATE ROLE [IF NOT EXISTS] name          DROP ROLE [IF EXISTS] name
//! GRANT ROLE r TO USER u                    REVOKE ROLE r FROM USER u
//! GRANT {SELECT | INSERT | ALTER | CREATE TABLE | MANAGE GRANTS | ALL} [, ...]
//!     ON {SYSTEM | SOURCE s | SCHEMA s | TABLE t | VIEW v} TO {USER u | ROLE r}
//! REVOKE ... ON ... FROM {USER u | ROLE r}
//! SHOW GRANTS [ON {SYSTEM | SOURCE s | SCHEMA s | TABLE t | VIEW v}] [TO {USER u | ROLE r}]
//! CREATE TOKEN [name] [EXPIRES IN '30 days']   -- a personal access token, shown once
//! SHOW TOKENS                                   DROP TOKEN 'id'
//! ```

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use quarry_catalog::{GranteeKind, Privilege};

use super::words::{eat_word, expect_word, ident_name, object_name_parts, word_at};

#[derive(Debug, Clone, PartialEq)]
pub enum Securable {
    System,
    Source(String),
    Schema(String),
    /// `[schema, name]` or `[name]`; `view` says which keyword named it.
    Dataset {
        name: Vec<String>,
        view: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grantee {
    pub kind: GranteeKind,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecurityStatement {
    CreateUser {
        name: String,
        password: String,
        if_not_exists: bool,
    },
    AlterUser {
        name: String,
        password: String,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    CreateRole {
        name: String,
        if_not_exists: bool,
    },
    DropRole {
        name: String,
        if_exists: bool,
    },
    GrantRole {
        role: String,
        user: String,
        revoke: bool,
    },
    Grant {
        privileges: Vec<Privilege>,
        object: Securable,
        grantee: Grantee,
        revoke: bool,
    },
    ShowGrants {
        on: Option<Securable>,
        to: Option<Grantee>,
    },
    CreateToken {
        name: Option<String>,
        expires_in: Option<String>,
    },
    ShowTokens,
    DropToken {
        id: String,
    },
}

/// A security statement, recognised by its first words; None leaves the tokens alone.
pub(crate) fn parse_security(
    parser: &mut Parser,
) -> Result<Option<SecurityStatement>, ParserError> {
    let w0 = word_at(parser, 0);
    let w1 = word_at(parser, 1);
    let statement = match (w0.as_deref(), w1.as_deref()) {
        (Some("CREATE"), Some("USER")) => {
            skip(parser, 2);
            let if_not_exists =
                parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            expect_word(parser, "PASSWORD")?;
            let password = parser.parse_literal_string()?;
            SecurityStatement::CreateUser {
                name,
                password,
                if_not_exists,
            }
        }
        (Some("ALTER"), Some("USER")) => {
            skip(parser, 2);
            let name = ident_name(&parser.parse_identifier()?);
            eat_word(parser, "SET");
            expect_word(parser, "PASSWORD")?;
            let password = parser.parse_literal_string()?;
            SecurityStatement::AlterUser { name, password }
        }
        (Some("DROP"), Some("USER")) => {
            skip(parser, 2);
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            SecurityStatement::DropUser { name, if_exists }
        }
        (Some("CREATE"), Some("ROLE")) => {
            skip(parser, 2);
            let if_not_exists =
                parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            SecurityStatement::CreateRole {
                name,
                if_not_exists,
            }
        }
        (Some("DROP"), Some("ROLE")) => {
            skip(parser, 2);
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = ident_name(&parser.parse_identifier()?);
            SecurityStatement::DropRole { name, if_exists }
        }
        (Some("DROP" | "REVOKE"), Some("TOKEN")) => {
            skip(parser, 2);
            let id = match parser.peek_token().token {
                Token::SingleQuotedString(_) => parser.parse_literal_string()?,
                _ => ident_name(&parser.parse_identifier()?),
            };
            SecurityStatement::DropToken { id }
        }
        (Some(verb @ ("GRANT" | "REVOKE")), Some("ROLE")) => {
            let revoke = verb == "REVOKE";
            skip(parser, 2);
            let role = ident_name(&parser.parse_identifier()?);
            expect_word(parser, if revoke { "FROM" } else { "TO" })?;
            expect_word(parser, "USER")?;
            let user = ident_name(&parser.parse_identifier()?);
            SecurityStatement::GrantRole { role, user, revoke }
        }
        (Some(verb @ ("GRANT" | "REVOKE")), _) => {
            let revoke = verb == "REVOKE";
            skip(parser, 1);
            let privileges = parse_privileges(parser)?;
            expect_word(parser, "ON")?;
            let object = parse_securable(parser)?;
            expect_word(parser, if revoke { "FROM" } else { "TO" })?;
            let grantee = parse_grantee(parser)?;
            SecurityStatement::Grant {
                privileges,
                object,
                grantee,
                revoke,
            }
        }
        (Some("SHOW"), Some("GRANTS")) => {
            skip(parser, 2);
            let on = if eat_word(parser, "ON") {
                Some(parse_securable(parser)?)
            } else {
                None
            };
            let to = if eat_word(parser, "TO") || eat_word(parser, "FOR") {
                Some(parse_grantee(parser)?)
            } else {
                None
            };
            SecurityStatement::ShowGrants { on, to }
        }
        (Some("CREATE"), Some("TOKEN")) => {
            skip(parser, 2);
            let name = match parser.peek_token().token {
                Token::Word(w) if !w.value.eq_ignore_ascii_case("EXPIRES") => {
                    Some(ident_name(&parser.parse_identifier()?))
                }
                Token::SingleQuotedString(_) => Some(parser.parse_literal_string()?),
                _ => None,
            };
            let expires_in = if eat_word(parser, "EXPIRES") {
                expect_word(parser, "IN")?;
                Some(parser.parse_literal_string()?)
            } else {
                None
            };
            SecurityStatement::CreateToken { name, expires_in }
        }
        (Some("SHOW"), Some("TOKENS")) => {
            skip(parser, 2);
            SecurityStatement::ShowTokens
        }
        _ => return Ok(None),
    };
    Ok(Some(statement))
}

fn skip(parser: &mut Parser, n: usize) {
    for _ in 0..n {
        parser.next_token();
    }
}

fn parse_privileges(parser: &mut Parser) -> Result<Vec<Privilege>, ParserError> {
    let mut privileges = Vec::new();
    loop {
        let word = word_at(parser, 0);
        match word.as_deref() {
            Some("ALL") => {
                skip(parser, 1);
                eat_word(parser, "PRIVILEGES");
                privileges.extend(Privilege::ALL);
            }
            Some("SELECT") => {
                skip(parser, 1);
                privileges.push(Privilege::Select);
            }
            Some("INSERT") => {
                skip(parser, 1);
                privileges.push(Privilege::Insert);
            }
            Some("ALTER") => {
                skip(parser, 1);
                privileges.push(Privilege::Alter);
            }
            Some("CREATE") => {
                skip(parser, 1);
                expect_word(parser, "TABLE")?;
                privileges.push(Privilege::CreateTable);
            }
            Some("MANAGE") => {
                skip(parser, 1);
                expect_word(parser, "GRANTS")?;
                privileges.push(Privilege::ManageGrants);
            }
            _ => {
                let found = parser.peek_token();
                return parser.expected(
                    "a privilege: SELECT, INSERT, ALTER, CREATE TABLE, MANAGE GRANTS or ALL",
                    found,
                );
            }
        }
        if !parser.consume_token(&Token::Comma) {
            privileges.sort();
            privileges.dedup();
            return Ok(privileges);
        }
    }
}

fn parse_securable(parser: &mut Parser) -> Result<Securable, ParserError> {
    let word = word_at(parser, 0);
    match word.as_deref() {
        Some("SYSTEM") => {
            skip(parser, 1);
            Ok(Securable::System)
        }
        Some("SOURCE") => {
            skip(parser, 1);
            Ok(Securable::Source(ident_name(&parser.parse_identifier()?)))
        }
        Some("SCHEMA") => {
            skip(parser, 1);
            Ok(Securable::Schema(ident_name(&parser.parse_identifier()?)))
        }
        Some(kind @ ("TABLE" | "VIEW" | "DATASET")) => {
            let view = kind == "VIEW";
            skip(parser, 1);
            let name = object_name_parts(&parser.parse_object_name(false)?);
            Ok(Securable::Dataset { name, view })
        }
        _ => {
            let found = parser.peek_token();
            parser.expected("SYSTEM, SOURCE, SCHEMA, TABLE or VIEW", found)
        }
    }
}

fn parse_grantee(parser: &mut Parser) -> Result<Grantee, ParserError> {
    let kind = if eat_word(parser, "USER") {
        GranteeKind::User
    } else if eat_word(parser, "ROLE") {
        GranteeKind::Role
    } else {
        let found = parser.peek_token();
        return parser.expected("USER or ROLE", found);
    };
    let name = ident_name(&parser.parse_identifier()?);
    Ok(Grantee { kind, name })
}

#[cfg(test)]
mod tests {
    use crate::sql::parser::{Statement, parse_default as parse};

    use super::*;

    fn one(sql: &str) -> SecurityStatement {
        match parse(sql) {
            Ok(mut statements) => match statements.pop() {
                Some(Statement::Security(s)) => s,
                other => panic!("{sql}: {other:?}"),
            },
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    #[test]
    fn parses_users_roles_grants_and_tokens() {
        assert_eq!(
            one("CREATE USER ada PASSWORD 'pw'"),
            SecurityStatement::CreateUser {
                name: "ada".to_string(),
                password: "pw".to_string(),
                if_not_exists: false
            }
        );
        assert!(matches!(
            one("alter user ada set password 'x'"),
            SecurityStatement::AlterUser { .. }
        ));
        assert_eq!(
            one("GRANT SELECT, CREATE TABLE ON SCHEMA demo TO ROLE analyst"),
            SecurityStatement::Grant {
                privileges: vec![Privilege::Select, Privilege::CreateTable],
                object: Securable::Schema("demo".to_string()),
                grantee: Grantee {
                    kind: GranteeKind::Role,
                    name: "analyst".to_string()
                },
                revoke: false
            }
        );
        assert!(matches!(
            one("REVOKE ALL ON TABLE demo.orders FROM USER ada"),
            SecurityStatement::Grant { revoke: true, ref privileges, .. } if privileges.len() == 5
        ));
        assert!(matches!(
            one("GRANT ROLE analyst TO USER ada"),
            SecurityStatement::GrantRole { revoke: false, .. }
        ));
        assert!(matches!(
            one("SHOW GRANTS ON VIEW demo.v TO USER ada"),
            SecurityStatement::ShowGrants {
                on: Some(_),
                to: Some(_)
            }
        ));
        assert_eq!(
            one("CREATE TOKEN ci EXPIRES IN '30 days'"),
            SecurityStatement::CreateToken {
                name: Some("ci".to_string()),
                expires_in: Some("30 days".to_string())
            }
        );
        assert!(matches!(one("SHOW TOKENS"), SecurityStatement::ShowTokens));
        assert!(matches!(
            one("DROP TOKEN 'ab12'"),
            SecurityStatement::DropToken { .. }
        ));
        let error = parse("GRANT FLY ON SYSTEM TO USER ada").expect_err("bad privilege");
        assert!(error.message.contains("a privilege"), "{}", error.message);
        let error = parse("GRANT SELECT ON demo TO USER ada").expect_err("no object kind");
        assert!(error.message.contains("SCHEMA"), "{}", error.message);
    }
}
