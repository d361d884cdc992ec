//! The parts coordinator and executors share: the wire contract ([`protocol`]), the
//! error codes every frontend maps from ([`error`]), the exchange reader plan node
//! ([`shuffle_reader`]) and the codec that ships it inside DataFusion plans ([`codec`]).

pub mod action_service;
pub mod activity;
pub mod cluster_secret;
pub mod codec;
pub mod column_bounds;
pub mod connections;
pub mod cpu_runtime;
pub mod crypto;
pub mod error;
pub mod flight_channels;
pub mod inline_pieces;
pub mod metrics;
pub mod object_stores;
pub mod panics;
pub mod plan_chunks;
pub mod protocol;
pub mod settings;
pub mod shuffle_reader;
pub mod sketches;
pub mod stack;
pub mod stall;
pub mod table_write;
pub mod trace_context;

pub use error::{ErrorCode, QuarryError, QuarryResult};
