//! How clients reach the engine: Flight SQL and REST (with the browser console).

pub(crate) mod flight_sql;
pub(crate) mod rest;
