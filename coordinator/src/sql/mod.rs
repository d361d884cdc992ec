//! Quarry's SQL dialect.

pub mod parser;
pub mod security;
