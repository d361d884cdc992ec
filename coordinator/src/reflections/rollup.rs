//! How a query's aggregates come out of an aggregation reflection's measures (the rollup
//! rules), and which expressions read only its dimensions.

use std::collections::HashSet;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, cast, lit};
use quarry_catalog::MeasureFunction;

use super::chain::Leaf;
use super::{COUNT_COLUMN, measure_column};

/// An aggregation reflection's dimensions, against the types the dataset gives them.
pub(super) struct Dimensions {
    pub(super) names: HashSet<String>,
    /// Timestamps kept BY DAY: usable only truncated to a day or coarser.
    pub(super) truncated: HashSet<String>,
}

impl Dimensions {
    pub(super) fn of(dimensions: &[quarry_catalog::Dimension], scan: &Leaf) -> Self {
        let schema = &scan.schema;
        let truncated = dimensions
            .iter()
            .filter(|d| d.by_day)
            .filter(|d| {
                schema
                    .field_with_name(&d.column)
                    .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)))
            })
            .map(|d| d.column.clone())
            .collect();
        Dimensions {
            names: dimensions.iter().map(|d| d.column.clone()).collect(),
            truncated,
        }
    }

    /// Every expression reads dimensions only (a truncated one at day grain or coarser).
    pub(super) fn check_keys<'a>(
        &self,
        exprs: impl IntoIterator<Item = &'a Expr>,
        what: &str,
    ) -> Result<(), String> {
        self.check_keys_of(exprs, what, None)
    }

    /// As `check_keys`, for the columns of `only` (the dataset's, in a join) when given.
    pub(super) fn check_keys_of<'a>(
        &self,
        exprs: impl IntoIterator<Item = &'a Expr>,
        what: &str,
        only: Option<&TableReference>,
    ) -> Result<(), String> {
        for expr in exprs {
            let mut read: Vec<String> = expr
                .column_refs()
                .into_iter()
                .filter(|c| only.is_none_or(|q| c.relation.as_ref() == Some(q)))
                .map(|c| c.name.clone())
                .collect();
            read.dedup();
            read.sort();
            if let Some(column) = read.iter().find(|c| !self.names.contains(*c)) {
                return Err(format!(
                    "{what} {expr} reads {column}, which is not a dimension"
                ));
            }
            if let Some(column) = read.iter().find(|c| self.truncated.contains(*c))
                && !coarse_only(expr, column)
            {
                return Err(format!(
                    "{what} {expr} uses {column} finer than the day it is kept BY"
                ));
            }
        }
        Ok(())
    }
}

/// `column` appears in `expr` only as `date_trunc(day|week|month|quarter|year, column)`.
pub(super) fn coarse_only(expr: &Expr, column: &str) -> bool {
    let mut ok = true;
    let _ = expr.apply(|e| {
        if let Expr::ScalarFunction(f) = e
            && f.name() == "date_trunc"
            && let [
                Expr::Literal(ScalarValue::Utf8(Some(grain)), _),
                Expr::Column(c),
            ] = f.args.as_slice()
            && c.name == column
        {
            if !["day", "week", "month", "quarter", "year"]
                .contains(&grain.to_ascii_lowercase().as_str())
            {
                ok = false;
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Expr::Column(c) = e
            && c.name == column
        {
            ok = false;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// The type the query's i-th aggregate gives.
pub(super) fn output_type(aggregate: &Aggregate, i: usize) -> DataType {
    let keys = aggregate.schema.fields().len() - aggregate.aggr_expr.len();
    aggregate.schema.field(keys + i).data_type().clone()
}

/// How an aggregate's result comes out of the partial aggregates over the reflection.
pub(super) enum Finish {
    /// The one partial, cast to the original type.
    Cast(DataType),
    /// The one partial, 0 where empty, cast (COUNT).
    ZeroIfEmpty(DataType),
    /// Partial 0 over partial 1, NULL when the count is 0 (AVG).
    Ratio(DataType),
}

impl Finish {
    pub(super) fn apply(&self, part: impl Fn(usize) -> Expr) -> Expr {
        match self {
            Finish::Cast(t) => cast(part(0), t.clone()),
            Finish::ZeroIfEmpty(t) => cast(
                datafusion::functions::expr_fn::coalesce(vec![part(0), lit(0i64)]),
                t.clone(),
            ),
            Finish::Ratio(t) => cast(
                cast(part(0), DataType::Float64)
                    / datafusion::functions::expr_fn::nullif(
                        cast(part(1), DataType::Float64),
                        lit(0f64),
                    ),
                t.clone(),
            ),
        }
    }
}

/// The column an aggregate takes: a column, or a column widened to another number type
/// (as AVG and SUM of an integer column are planned); the widening keeps order, sums and
/// counts. None for any other argument.
pub(super) fn aggregated_column<'a>(
    args: &'a [Expr],
    dataset_types: &arrow::datatypes::Schema,
) -> Option<&'a Column> {
    match args {
        [Expr::Column(c)] => Some(c),
        [Expr::Cast(datafusion::logical_expr::Cast { expr, field })]
            if field.data_type().is_numeric() =>
        {
            match expr.as_ref() {
                Expr::Column(c)
                    if dataset_types
                        .field_with_name(&c.name)
                        .is_ok_and(|f| f.data_type().is_numeric()) =>
                {
                    Some(c)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The partial aggregates over the reflection that compute `expr`, and how to finish
/// them; Err says why it does not roll up.
pub(super) fn rollup(
    expr: &Expr,
    output: DataType,
    dims: &Dimensions,
    measures: &[quarry_catalog::Measure],
    qualifier: &TableReference,
    dataset_types: &arrow::datatypes::Schema,
) -> Result<(Vec<Expr>, Finish), String> {
    let (inner, _) = match expr {
        Expr::Alias(alias) => (alias.expr.as_ref(), Some(&alias.name)),
        other => (other, None),
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return Err(format!("{expr} is not an aggregate"));
    };
    let name = func.name().to_ascii_lowercase();
    if params.filter.is_some() {
        return Err(format!("{expr} has a FILTER clause"));
    }
    if !params.order_by.is_empty() {
        return Err(format!("{expr} is ordered"));
    }
    let has = |column: &str, f: MeasureFunction| {
        measures
            .iter()
            .any(|m| m.column == column && m.functions.contains(&f))
    };
    let measure = |column: &str, f: MeasureFunction| {
        Expr::Column(Column::new(
            Some(qualifier.clone()),
            measure_column(column, f),
        ))
    };
    let column = aggregated_column(&params.args, dataset_types);
    // COUNT(*) (planned as COUNT(1)) and COUNT of a constant: a sum of the row counts.
    if name == "count"
        && !params.distinct
        && match params.args.as_slice() {
            [] => true,
            [Expr::Literal(v, _)] => !v.is_null(),
            _ => false,
        }
    {
        let rows = Expr::Column(Column::new(Some(qualifier.clone()), COUNT_COLUMN));
        return Ok((vec![sum(rows)], Finish::ZeroIfEmpty(output)));
    }
    let Some(column) = column else {
        return Err(format!("{expr} aggregates an expression, not a column"));
    };
    let c = column.name.as_str();
    let is_dim = dims.names.contains(c) && !dims.truncated.contains(c);
    if params.distinct {
        return match name.as_str() {
            "count" | "min" | "max" if is_dim => Ok((vec![inner.clone()], Finish::Cast(output))),
            _ => Err(format!("{expr}: DISTINCT of {c}, which is not a dimension")),
        };
    }
    match name.as_str() {
        "min" | "max" if is_dim => Ok((vec![inner.clone()], Finish::Cast(output))),
        "sum" if has(c, MeasureFunction::Sum) => Ok((
            vec![sum(measure(c, MeasureFunction::Sum))],
            Finish::Cast(output),
        )),
        "count" if has(c, MeasureFunction::Count) => Ok((
            vec![sum(measure(c, MeasureFunction::Count))],
            Finish::ZeroIfEmpty(output),
        )),
        "min" if has(c, MeasureFunction::Min) => Ok((
            vec![min(measure(c, MeasureFunction::Min))],
            Finish::Cast(output),
        )),
        "max" if has(c, MeasureFunction::Max) => Ok((
            vec![max(measure(c, MeasureFunction::Max))],
            Finish::Cast(output),
        )),
        "avg"
            if has(c, MeasureFunction::Sum)
                && has(c, MeasureFunction::Count)
                && output == DataType::Float64 =>
        {
            Ok((
                vec![
                    sum(measure(c, MeasureFunction::Sum)),
                    sum(measure(c, MeasureFunction::Count)),
                ],
                Finish::Ratio(output),
            ))
        }
        "sum" | "count" | "min" | "max" | "avg" => {
            let needed = match name.as_str() {
                "avg" => "SUM and COUNT",
                "sum" => "SUM",
                "count" => "COUNT",
                "min" => "MIN",
                _ => "MAX",
            };
            Err(format!("{expr} needs the measure {c} ({needed})"))
        }
        // The sketch of a set is the sketch of its rows, however they are grouped.
        "approx_distinct" if is_dim => Ok((vec![inner.clone()], Finish::Cast(output))),
        "approx_distinct" if has(c, MeasureFunction::ApproxCountDistinct) => Ok((
            vec![
                quarry_common::sketches::approx_set_count()
                    .call(vec![measure(c, MeasureFunction::ApproxCountDistinct)]),
            ],
            Finish::Cast(output),
        )),
        "approx_distinct" => Err(format!(
            "{expr} needs the measure {c} (APPROX_COUNT_DISTINCT)"
        )),
        other => Err(format!("{other} does not roll up")),
    }
}
