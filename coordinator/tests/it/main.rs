//! Integration tests of the coordinator with real executors, real sockets and real
//! clients. One test binary (link time on 2 cores is precious); one module per area.

// Tests own the tasks they start.
#![allow(clippy::disallowed_methods)]

mod harness;

mod adaptive_execution;
mod adbc;
mod backup;
mod cluster;
mod config;
mod console;
mod flight_sql;
mod helm;
mod materializations;
mod metrics;
mod pgwire;
mod recommendations;
mod reflection_policies;
mod reflections;
mod reflections_rest;
mod rest;
mod restart;
mod robustness;
mod s3;
mod security;
mod service;
mod small_queries;
mod tables;
mod tls;
mod traces;
