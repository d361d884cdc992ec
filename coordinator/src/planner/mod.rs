//! Distributed planning: DataFusion plans cut into stage DAGs.

pub(crate) mod adaptive_joins;
pub(crate) mod decisions;
pub(crate) mod distributed;
pub(crate) mod dynamic_filters;
pub(crate) mod recursion_bound;
pub(crate) mod small_plans;
pub(crate) mod stages;
