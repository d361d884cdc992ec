//! Transparent substitution: optimizer rules of our own over DataFusion's logical plan
//! that answer parts of a query from a reflection's materialization instead of its
//! dataset. Users never name a reflection.
//!
//! `AggregateRule` runs before DataFusion's rules reshape aggregates. It takes an
//! `Aggregate` (or a `DISTINCT`) over filters of one dataset. An aggregation reflection
//! serves it when every grouping key and filter is an expression over the reflection's
//! dimensions and every aggregate rolls up from its measures: SUM of sums, COUNT as a sum
//! of counts (0 on empty input), MIN of mins, MAX of maxes, AVG as sum over count,
//! approx_distinct by merging HyperLogLog sketches, and COUNT(DISTINCT d) / MIN / MAX /
//! approx_distinct of a dimension by grouping again. GROUPING SETS, ROLLUP and CUBE roll up
//! each set the same way. A raw reflection serves
//! it when it holds every column the subtree reads. `RawRule` runs last, once projections
//! are pushed into scans: a scan reading only a raw reflection's columns reads the
//! reflection instead.
//!
//! The replacement keeps the replaced node's schema exactly (names, qualifiers and types),
//! so nothing above it changes. Functions are recognised by name: Quarry's sessions
//! register DataFusion's built-in aggregates and Quarry's sketch aggregates only.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
    cast,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use quarry_catalog::ReflectionKind;

use super::candidates::{Candidate, Report, best, holds, resolve, unqualified};
use super::chain::{Leaf, chain_scan, columns_of, restore_schema};
use super::rollup::{Dimensions, output_type, rollup};

#[derive(Debug)]
pub(crate) struct AggregateRule {
    pub candidates: Arc<Vec<Candidate>>,
    pub default_schema: String,
    pub report: Arc<Report>,
}

impl OptimizerRule for AggregateRule {
    fn name(&self) -> &str {
        "quarry_reflections_aggregate"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        if self.candidates.is_empty() {
            return Ok(Transformed::no(plan));
        }
        plan.transform_down(|node| {
            let replaced = match &node {
                // A reflection on a view whose filters the query has is preferred: its
                // rows are filtered already.
                LogicalPlan::Aggregate(aggregate) => match self.contained(aggregate) {
                    Ok(None) => self.aggregate(aggregate),
                    other => other,
                },
                LogicalPlan::Distinct(Distinct::All(input)) => self
                    .distinct(input)
                    .map(|d| d.map(|input| LogicalPlan::Distinct(Distinct::All(Arc::new(input))))),
                _ => Ok(None),
            };
            // A plan the rule cannot rewrite runs on the base data: a reflection never
            // fails a query.
            let replaced = replaced.unwrap_or_else(|e| {
                tracing::warn!("cannot answer from a reflection: {e}");
                self.report.demote_chosen(&format!("not used: {e}"));
                None
            });
            Ok(match replaced {
                Some(plan) => Transformed::new(plan, true, TreeNodeRecursion::Jump),
                None => Transformed::no(node),
            })
        })
    }
}

impl AggregateRule {
    fn has_candidates(&self, name: &TableReference) -> bool {
        let (schema, dataset) = resolve(name, &self.default_schema);
        self.candidates
            .iter()
            .any(|c| c.schema == schema && c.dataset == dataset)
    }

    fn is_view(&self, name: &TableReference) -> bool {
        let (schema, dataset) = resolve(name, &self.default_schema);
        self.candidates
            .iter()
            .any(|c| c.view && c.schema == schema && c.dataset == dataset)
    }

    /// The best candidate for a subtree over `scan`: Ok(candidate) or nothing matched.
    fn choose<'c>(
        &'c self,
        leaf: &Leaf,
        verdict: impl Fn(&Candidate) -> Result<(), String>,
    ) -> Option<&'c Candidate> {
        let (schema, dataset) = resolve(&leaf.name, &self.default_schema);
        let on_dataset = self
            .candidates
            .iter()
            .filter(|c| c.schema == schema && c.dataset == dataset);
        best(&self.report, on_dataset, verdict)
    }

    fn aggregate(&self, aggregate: &Aggregate) -> DfResult<Option<LogicalPlan>> {
        let is_view = |name: &TableReference| self.is_view(name);
        let has = |name: &TableReference| self.has_candidates(name);
        let Some(chain) = chain_scan(&aggregate.input, &is_view, &has) else {
            return Ok(None);
        };
        // In a join only the dataset's columns are checked against the reflection.
        let only = chain.joined.as_ref().map(|_| &chain.qualifier);
        let joined: &[&Expr] = chain.joined.as_deref().unwrap_or_default();
        let (scan, filters, qualifier) = (&chain.leaf, &chain.exprs, &chain.qualifier);
        let verdict = |candidate: &Candidate| match &candidate.kind {
            ReflectionKind::Aggregate {
                dimensions,
                measures,
            } => {
                if chain.projects {
                    return Err(
                        "a projection between the aggregate and the scan hides the measures"
                            .to_string(),
                    );
                }
                let dims = Dimensions::of(dimensions, scan);
                dims.check_keys_of(&aggregate.group_expr, "GROUP BY key", only)?;
                dims.check_keys(filters.iter().copied(), "filter")?;
                dims.check_keys_of(joined.iter().copied(), "join or filter", only)?;
                for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
                    if let Some(q) = only
                        && expr
                            .column_refs()
                            .iter()
                            .any(|c| c.relation.as_ref() != Some(q))
                    {
                        return Err(format!("{expr} aggregates a column of a joined table"));
                    }
                    rollup(
                        expr,
                        output_type(aggregate, i),
                        &dims,
                        measures,
                        qualifier,
                        &scan.schema,
                    )?;
                }
                Ok(())
            }
            ReflectionKind::Raw { display } => {
                let read: HashSet<String> = aggregate
                    .group_expr
                    .iter()
                    .chain(&aggregate.aggr_expr)
                    .chain(joined.iter().copied())
                    .flat_map(|e| e.column_refs())
                    .filter(|c| only.is_none_or(|q| c.relation.as_ref() == Some(q)))
                    .map(|c| c.name.clone())
                    .chain(columns_of(filters.iter().copied()))
                    .collect();
                holds(display, &read)
            }
        };
        let Some(chosen) = self.choose(scan, verdict) else {
            return Ok(None);
        };
        let input = replace_scan(&aggregate.input, scan, chosen)?;
        match &chosen.kind {
            ReflectionKind::Raw { .. } => Ok(Some(LogicalPlan::Aggregate(Aggregate::try_new(
                Arc::new(input),
                aggregate.group_expr.clone(),
                aggregate.aggr_expr.clone(),
            )?))),
            ReflectionKind::Aggregate {
                dimensions,
                measures,
            } => {
                let dims = Dimensions::of(dimensions, scan);
                let mut partials = Vec::new();
                let mut finals = Vec::new();
                for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
                    let (parts, finish) = rollup(
                        expr,
                        output_type(aggregate, i),
                        &dims,
                        measures,
                        qualifier,
                        &scan.schema,
                    )
                    .map_err(datafusion::error::DataFusionError::Plan)?;
                    let first = partials.len();
                    partials.extend(parts);
                    finals.push((first, finish));
                }
                let named: Vec<Expr> = partials
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| e.alias(format!("__part{i}")))
                    .collect();
                let grouped = LogicalPlan::Aggregate(Aggregate::try_new(
                    Arc::new(input),
                    aggregate.group_expr.clone(),
                    named,
                )?);
                Ok(Some(restore_schema(
                    grouped,
                    &aggregate.schema,
                    |schema, i| {
                        // The grouping keys (with the grouping id of GROUPING SETS) come
                        // first in both aggregates.
                        let keys = aggregate.schema.fields().len() - aggregate.aggr_expr.len();
                        if i < keys {
                            return Expr::Column(Column::from(schema.qualified_field(i)));
                        }
                        let (first, finish) = &finals[i - keys];
                        let part = |k: usize| {
                            Expr::Column(Column::from(schema.qualified_field(keys + first + k)))
                        };
                        finish.apply(part)
                    },
                )?))
            }
        }
    }

    /// An aggregate over a table answered by a reflection on a view of it: the query's
    /// filters include every filter of the view, and the rest of the query reads only what
    /// the view's reflection keeps.
    fn contained(&self, aggregate: &Aggregate) -> DfResult<Option<LogicalPlan>> {
        let is_view = |name: &TableReference| self.is_view(name);
        let has = |_: &TableReference| false;
        let Some(chain) = chain_scan(&aggregate.input, &is_view, &has) else {
            return Ok(None);
        };
        if chain.leaf.view || chain.joined.is_some() || chain.projects {
            return Ok(None);
        }
        let (schema, table) = resolve(&chain.leaf.name, &self.default_schema);
        let written: Vec<Expr> = chain
            .exprs
            .iter()
            .flat_map(|e| split_conjunction(e))
            .map(unqualified)
            .collect();
        for candidate in self.candidates.iter() {
            let Some(view) = &candidate.contains else {
                continue;
            };
            if view.schema != schema
                || view.table != table
                || !view.conjuncts.iter().all(|c| written.contains(c))
            {
                continue;
            }
            // The view's filters are in the reflection already.
            let input = aggregate
                .input
                .as_ref()
                .clone()
                .transform_up(|node| match node {
                    LogicalPlan::Filter(filter) => {
                        let rest: Vec<Expr> = split_conjunction(&filter.predicate)
                            .into_iter()
                            .filter(|c| !view.conjuncts.contains(&unqualified(c)))
                            .cloned()
                            .collect();
                        match conjunction(rest) {
                            Some(predicate) => Ok(Transformed::yes(LogicalPlan::Filter(
                                Filter::try_new(predicate, filter.input)?,
                            ))),
                            None => Ok(Transformed::yes(filter.input.as_ref().clone())),
                        }
                    }
                    other => Ok(Transformed::no(other)),
                })?
                .data;
            let rebuilt = Aggregate::try_new(
                Arc::new(input),
                aggregate.group_expr.clone(),
                aggregate.aggr_expr.clone(),
            )?;
            // The reflection as if it were on the table.
            let as_table = AggregateRule {
                candidates: Arc::new(vec![Candidate {
                    name: candidate.name.clone(),
                    schema: schema.clone(),
                    dataset: table.clone(),
                    kind: candidate.kind.clone(),
                    view: false,
                    table: candidate.table.clone(),
                    rows: candidate.rows,
                    data_as_of_ms: candidate.data_as_of_ms,
                    unusable: candidate.unusable.clone(),
                    lease: None,
                    contains: None,
                }]),
                default_schema: self.default_schema.clone(),
                report: Arc::clone(&self.report),
            };
            if let Some(plan) = as_table.aggregate(&rebuilt)? {
                return Ok(Some(plan));
            }
        }
        Ok(None)
    }

    /// `SELECT DISTINCT` of dimensions (or of a raw reflection's columns).
    fn distinct(&self, input: &LogicalPlan) -> DfResult<Option<LogicalPlan>> {
        let is_view = |name: &TableReference| self.is_view(name);
        let has = |name: &TableReference| self.has_candidates(name);
        let Some(chain) = chain_scan(input, &is_view, &has) else {
            return Ok(None);
        };
        if chain.joined.is_some() {
            return Ok(None);
        }
        let (scan, exprs) = (&chain.leaf, chain.exprs);
        let verdict = |candidate: &Candidate| match &candidate.kind {
            ReflectionKind::Aggregate { dimensions, .. } => {
                Dimensions::of(dimensions, scan).check_keys(exprs.iter().copied(), "column")
            }
            ReflectionKind::Raw { display } => holds(display, &columns_of(exprs.iter().copied())),
        };
        if exprs.is_empty() {
            // A DISTINCT of every column of the dataset is not over dimensions.
            return Ok(None);
        }
        let Some(chosen) = self.choose(scan, verdict) else {
            return Ok(None);
        };
        Ok(Some(replace_scan(input, scan, chosen)?))
    }
}

/// `plan` (a chain of filters and aliases over `scan`) with the scan replaced by the
/// chosen reflection, under the scan's own name and with its columns' types.
fn replace_scan(plan: &LogicalPlan, scan: &Leaf, chosen: &Candidate) -> DfResult<LogicalPlan> {
    let Some(table) = &chosen.table else {
        return datafusion::common::plan_err!("reflection {} has no materialization", chosen.name);
    };
    let dataset = &scan.schema;
    let reflection = LogicalPlanBuilder::scan(
        TableReference::bare(format!("__reflection_{}", chosen.name)),
        provider_as_source(Arc::clone(table)),
        None,
    )?
    .build()?;
    // The dataset's columns the reflection holds, as the dataset types them; measures as
    // they are.
    let exprs: Vec<Expr> = reflection
        .schema()
        .columns()
        .into_iter()
        .map(|column| {
            let name = column.name.clone();
            let expr = Expr::Column(column);
            match dataset.field_with_name(&name) {
                Ok(field) => cast(expr, field.data_type().clone()).alias(name),
                Err(_) => expr.alias(name),
            }
        })
        .collect();
    let typed = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(reflection))?);
    let replacement =
        LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(typed), scan.name.clone())?);
    let replaced = plan.clone().transform_up(|node| match node {
        LogicalPlan::TableScan(s) if !scan.view && s.table_name == scan.name => {
            Ok(Transformed::yes(replacement.clone()))
        }
        LogicalPlan::SubqueryAlias(a) if scan.view && a.alias == scan.name => {
            Ok(Transformed::yes(replacement.clone()))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })?;
    Ok(replaced.data)
}
