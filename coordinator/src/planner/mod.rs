//! Distributed planning: DataFusion plans cut into stage DAGs.

pub mod stages;
