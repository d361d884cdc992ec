//! Splitting SQL text into statements with sqlparser's tokenizer, so semicolons inside
//! strings, quoted names and comments do not split; a line starting with a backslash
//! outside a statement is a backslash command.

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The statements of a script, without their terminating semicolons.
pub fn split(sql: &str) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        // Let the server report what is wrong with it.
        return vec![sql.to_string()];
    };
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    for token in tokens {
        match token {
            Token::SemiColon => {
                if has_content {
                    statements.push(current.trim().to_string());
                }
                current.clear();
                has_content = false;
            }
            Token::Whitespace(_) => current.push_str(&token.to_string()),
            other => {
                has_content = true;
                current.push_str(&other.to_string());
            }
        }
    }
    if has_content {
        statements.push(current.trim().to_string());
    }
    statements
}

/// A statement or a backslash command line, in the order of the text.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Sql(String),
    Meta(String),
}

/// The statements and backslash lines of a script or a `-c` string.
pub fn pieces(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut buffer = String::new();
    for line in text.lines() {
        if buffer.trim().is_empty() && line.trim_start().starts_with('\\') {
            buffer.clear();
            pieces.push(Piece::Meta(line.trim().to_string()));
            continue;
        }
        buffer.push_str(line);
        buffer.push('\n');
        if is_complete(&buffer) {
            pieces.extend(split(&buffer).into_iter().map(Piece::Sql));
            buffer.clear();
        }
    }
    pieces.extend(split(&buffer).into_iter().map(Piece::Sql));
    pieces
}

/// Whether interactive input ends a statement (its last token is a semicolon).
pub fn is_complete(sql: &str) -> bool {
    match Tokenizer::new(&GenericDialect {}, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_)))
            .is_some_and(|t| *t == Token::SemiColon),
        // An unterminated string or comment: wait for more lines.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings() {
        let parts = split("SELECT 'a;b'; -- c;\nSELECT \"x;\" FROM t;;");
        assert_eq!(parts, vec!["SELECT 'a;b'", "-- c;\nSELECT \"x;\" FROM t"]);
        assert!(is_complete("SELECT 1;\n"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1"));
    }

    #[test]
    fn backslash_lines_between_statements() {
        let text = "\\x on\nSELECT 1;\n  \\dt demo.*\nSELECT\n'\\not' AS s;\nSELECT 2";
        assert_eq!(
            pieces(text),
            vec![
                Piece::Meta("\\x on".into()),
                Piece::Sql("SELECT 1".into()),
                Piece::Meta("\\dt demo.*".into()),
                Piece::Sql("SELECT\n'\\not' AS s".into()),
                Piece::Sql("SELECT 2".into()),
            ]
        );
    }
}
