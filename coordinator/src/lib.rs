//! Quarry's coordinator: the SQL front door of the cluster.
//!
//! ```text
//!  clients ─► Flight SQL (frontend::flight_sql) ─┐
//!          ─► REST + console (frontend::rest) ───┼─► Engine (engine) ─► Jobs (jobs)
//!                                                 │      │ parse (sql::parser)
//!                                                 │      │ catalog DDL ─► Datasets ─► sled
//!                                                 │      │ plan (DataFusion over datasets)
//!                                                 │      ▼ cut into stages (planner)
//!                                                 │   Scheduler (scheduler) ─► executors
//!  executors ─► internal Flight (cluster::internal) ─► Cluster membership (cluster)
//! ```
//!
//! [`server::start`] runs all of it on three listeners; `quarry up` adds in-process
//! executors and demo data.
//!
//! The public surface is what `main.rs`, the tests and the bench need: `server` (and the
//! settings types it re-exports), `local_cluster`, `service` (the `QueryService` seam, which
//! in-process clients drive like the frontends do), `demo`, `limits` and `tls`. Everything
//! else is crate-private.

#![warn(unreachable_pub)]

pub(crate) mod access;
pub(crate) mod cluster;
pub(crate) mod datasets;
pub mod demo;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod frontend;
pub(crate) mod jobs;
pub mod limits;
pub mod local_cluster;
pub(crate) mod metrics;
pub(crate) mod planner;
pub(crate) mod reflections;
pub(crate) mod scheduler;
pub mod server;
pub mod service;
pub(crate) mod sql;
pub(crate) mod system;
pub(crate) mod tasks;
pub mod tls;
