//! Splitting SQL text into statements with sqlparser's tokenizer, so semicolons inside
//! strings, quoted names and comments do not split.

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
}
