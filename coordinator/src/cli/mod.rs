//! Parts of the `quarry` command line beyond its flags.

pub mod backup;
pub mod config_file;
pub mod telemetry;
