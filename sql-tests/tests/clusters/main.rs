//! Clusters of real processes in the shapes users run — several executors, several slots
//! each — under TPC-H, abandoned clients, a stalled query and many concurrent clients.
//!
//! - every shape answers the 22 TPC-H queries at SF0.1 exactly as in-process DataFusion;
//! - a query whose client goes away (drops its DoGet stream, never fetches, or closes
//!   its REST connection) is cancelled and every executor lets go of its work;
//! - the watchdog fails a query that stalls on purpose, naming the stage;
//! - admission control queues queries, refuses past a full queue, and a query past
//!   `quarry.query_timeout` is stopped;
//! - sixteen concurrent clients mixing TPC-H and `SELECT 1` all get right answers.

mod abandon;
mod admission;
mod flight;
mod load;
mod shapes;
mod watchdog;
