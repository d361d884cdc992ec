//! Reflections in the engine: refresh jobs (`refresh.rs`: a distributed write of the
//! materialization's query into a Delta table in the reflection store, and the
//! scheduler), and what a query's planning makes of them (`planning.rs`: candidates, the
//! rules of `crate::reflections::matching`, reports). Their statements run with the other
//! catalog statements (`engine/ddl.rs`); their records and refresh policies are catalog
//! operations (`catalog_ops/reflections.rs`, `catalog_ops/reflection_policy.rs`).

mod planning;
mod refresh;

pub(crate) use planning::PlanningReports;
