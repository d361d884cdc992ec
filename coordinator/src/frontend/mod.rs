//! How clients reach the engine: Flight SQL and REST (with the browser console).

pub mod flight_sql;
pub mod rest;
