//! Quarry's SQL dialect.

pub(crate) mod copy;
pub(crate) mod guard;
pub(crate) mod parser;
pub(crate) mod pg_functions;
pub(crate) mod prepass;
pub(crate) mod reflections;
pub(crate) mod security;
pub(crate) mod statement;
pub(crate) mod time_travel;
pub(crate) mod words;
