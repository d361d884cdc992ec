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

#![warn(unreachable_pub)]

pub(crate) mod access;
pub(crate) mod cluster;
pub mod datasets;
pub mod demo;
pub mod engine;
pub(crate) mod error;
pub(crate) mod frontend;
pub mod jobs;
pub mod limits;
pub mod local_cluster;
pub(crate) mod planner;
pub(crate) mod reflections;
pub mod scheduler;
pub mod server;
pub mod service;
pub(crate) mod sql;
pub(crate) mod system;
pub(crate) mod tasks;
pub mod tls;
