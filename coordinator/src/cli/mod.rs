//! Parts of the `quarry` command line beyond its flags.

pub mod config_file;
