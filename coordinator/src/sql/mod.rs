//! Quarry's SQL dialect.

pub mod copy;
pub mod guard;
pub mod parser;
pub mod reflections;
pub mod security;
pub mod time_travel;
