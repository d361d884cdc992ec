//! The words of Quarry's statements, read off sqlparser's `Parser`: our statements are
//! recognised by their leading words, and names fold as DataFusion folds them.

use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// The `n`-th next token as an upper-case word, if it is one.
pub(crate) fn word_at(parser: &Parser, n: usize) -> Option<String> {
    match parser.peek_nth_token(n).token {
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// Consume `word` (case-insensitive) if it is next.
pub(crate) fn eat_word(parser: &mut Parser, word: &str) -> bool {
    if word_at(parser, 0).as_deref() == Some(word) {
        parser.next_token();
        true
    } else {
        false
    }
}

pub(crate) fn expect_word(parser: &mut Parser, word: &str) -> Result<(), ParserError> {
    if eat_word(parser, word) {
        Ok(())
    } else {
        let found = parser.peek_token();
        parser.expected(word, found)
    }
}

pub(crate) fn ident_name(ident: &Ident) -> String {
    // Unquoted identifiers fold to lower case, as DataFusion folds them.
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

pub(crate) fn object_name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident_name(ident),
            None => part.to_string(),
        })
        .collect()
}
