//! Quarry's SQL dialect.

pub mod parser;
