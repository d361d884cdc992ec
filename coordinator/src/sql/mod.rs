//! Quarry's SQL dialect.

pub mod copy;
pub mod guard;
pub mod parser;
pub mod prepass;
pub mod reflections;
pub mod security;
pub mod statement;
pub mod time_travel;
pub mod words;
