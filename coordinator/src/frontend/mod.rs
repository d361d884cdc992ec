//! How clients reach the engine: Flight SQL, REST (with the browser console) and the
//! PostgreSQL wire protocol.

pub(crate) mod flight_sql;
pub(crate) mod pgwire;
pub(crate) mod rest;
