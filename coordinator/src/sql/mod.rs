//! Quarry's SQL dialect.

pub mod copy;
pub mod parser;
pub mod security;
pub mod time_travel;
