//! Distributed planning: DataFusion plans cut into stage DAGs.

pub mod recursion_bound;
pub mod stages;
