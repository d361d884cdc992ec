//! Incremental refresh of an aggregation reflection: the rows of the previous
//! materialization and the partial aggregates of the new files, grouped again by the
//! dimensions, so the new materialization has one row per group as a full refresh would.

use datafusion::common::Column;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast};
use quarry_catalog::{MeasureFunction, ReflectionKind, ReflectionRecord};

use super::{COUNT_COLUMN, measure_column};

/// `previous` (the current materialization's rows) and `added` (the reflection's query
/// over the new files only) merged into one row per group, in `added`'s columns.
pub(crate) fn regrouped(
    record: &ReflectionRecord,
    previous: LogicalPlan,
    added: LogicalPlan,
) -> Result<LogicalPlan> {
    let ReflectionKind::Aggregate {
        dimensions,
        measures,
    } = &record.kind
    else {
        return datafusion::common::plan_err!("only aggregation reflections group again");
    };
    let column = |name: &str| Expr::Column(Column::new_unqualified(name));
    // The previous rows as the new rows are typed (stored types may be plainer).
    let typed: Vec<Expr> = added
        .schema()
        .fields()
        .iter()
        .map(|f| cast(column(f.name()), f.data_type().clone()).alias(f.name()))
        .collect();
    let previous = LogicalPlanBuilder::from(previous).project(typed)?.build()?;
    let all = LogicalPlanBuilder::from(previous)
        .union(added.clone())?
        .build()?;
    let keys: Vec<Expr> = dimensions.iter().map(|d| column(&d.column)).collect();
    let mut merged: Vec<Expr> = Vec::new();
    for m in measures {
        for f in &m.functions {
            let name = measure_column(&m.column, *f);
            let again = match f {
                MeasureFunction::Sum | MeasureFunction::Count => sum(column(&name)),
                MeasureFunction::Min => min(column(&name)),
                MeasureFunction::Max => max(column(&name)),
                MeasureFunction::ApproxCountDistinct => {
                    quarry_common::sketches::approx_set_merge().call(vec![column(&name)])
                }
            };
            merged.push(again.alias(name));
        }
    }
    merged.push(sum(column(COUNT_COLUMN)).alias(COUNT_COLUMN));
    let grouped = LogicalPlanBuilder::from(all)
        .aggregate(keys, merged)?
        .build()?;
    // Back in the columns (and types) the materialization stores.
    let ordered: Vec<Expr> = added
        .schema()
        .fields()
        .iter()
        .map(|f| cast(column(f.name()), f.data_type().clone()).alias(f.name()))
        .collect();
    LogicalPlanBuilder::from(grouped).project(ordered)?.build()
}
