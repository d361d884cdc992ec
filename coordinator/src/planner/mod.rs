//! Distributed planning: DataFusion plans cut into stage DAGs.

pub(crate) mod dynamic_filters;
pub(crate) mod recursion_bound;
pub(crate) mod small_plans;
pub(crate) mod stages;
