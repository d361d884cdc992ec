//! Recommendations: what aggregation reflection would have served the aggregates recent
//! jobs ran. Planning records each aggregate's shape (the dataset, its grouping keys and
//! filtered columns, the measures its aggregates roll up from) in the job record;
//! `sys.recommend_reflections` merges the shapes per dataset into one definition, with the
//! DDL that creates it and the jobs it would have served.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use quarry_catalog::{AggregateShape, Dimension, JobRecord, Measure, MeasureFunction};

use super::candidates::resolve;
use super::chain::chain_scan;
use super::rollup::{aggregated_column, coarse_only};
use super::{dimensions_text, measures_text};

/// The shapes of the aggregates (and DISTINCTs) in `plan` that an aggregation reflection
/// could serve: over one dataset (a table or a view), every aggregate of a column.
pub(crate) fn shapes(
    plan: &LogicalPlan,
    default_schema: &str,
    is_view: &dyn Fn(&TableReference) -> bool,
) -> Vec<AggregateShape> {
    let mut found = Vec::new();
    let no_joins = |_: &TableReference| false;
    let _ = plan.apply_with_subqueries(|node| {
        let (input, keys, aggregates): (&LogicalPlan, Vec<&Expr>, &[Expr]) = match node {
            LogicalPlan::Aggregate(a) => (&a.input, a.group_expr.iter().collect(), &a.aggr_expr),
            LogicalPlan::Distinct(Distinct::All(input)) => (input, Vec::new(), &[]),
            _ => return Ok(TreeNodeRecursion::Continue),
        };
        let Some(chain) = chain_scan(input, is_view, &no_joins) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let distinct = matches!(node, LogicalPlan::Distinct(_));
        if chain.joined.is_some() || (chain.projects && !distinct) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let mut shape = Builder::new(&chain.leaf.schema);
        // A DISTINCT's columns are its keys.
        let keys: Vec<&Expr> = if distinct { chain.exprs.clone() } else { keys };
        let filters = if distinct { Vec::new() } else { chain.exprs };
        for expr in keys.into_iter().chain(filters) {
            shape.dimensions_of(expr);
        }
        let served = aggregates.iter().all(|a| shape.measure_of(a));
        if served && !shape.dimensions.is_empty() {
            let (schema, dataset) = resolve(&chain.leaf.name, default_schema);
            found.push(shape.finish(schema, dataset));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

struct Builder<'a> {
    schema: &'a Schema,
    /// Column -> kept BY DAY.
    dimensions: BTreeMap<String, bool>,
    measures: BTreeMap<String, Vec<MeasureFunction>>,
}

impl<'a> Builder<'a> {
    fn new(schema: &'a Schema) -> Self {
        Builder {
            schema,
            dimensions: BTreeMap::new(),
            measures: BTreeMap::new(),
        }
    }

    fn type_of(&self, column: &str) -> Option<&DataType> {
        self.schema
            .field_with_name(column)
            .ok()
            .map(|f| f.data_type())
    }

    fn dimensions_of(&mut self, expr: &Expr) {
        for column in expr.column_refs() {
            let name = column.name.clone();
            let Some(data_type) = self.type_of(&name) else {
                continue;
            };
            // A date (or a timestamp used at day grain or coarser) is kept BY DAY.
            let by_day = match data_type {
                DataType::Date32 | DataType::Date64 => true,
                DataType::Timestamp(..) => coarse_only(expr, &name),
                _ => false,
            };
            let entry = self.dimensions.entry(name).or_insert(by_day);
            *entry = *entry && by_day;
        }
    }

    fn measure(&mut self, column: &str, functions: &[MeasureFunction]) {
        let kept = self.measures.entry(column.to_string()).or_default();
        for f in functions {
            if !kept.contains(f) {
                kept.push(*f);
            }
        }
        kept.sort();
    }

    /// Note what `expr` rolls up from; false when no reflection could compute it.
    fn measure_of(&mut self, expr: &Expr) -> bool {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return false;
        };
        if params.filter.is_some() || !params.order_by.is_empty() {
            return false;
        }
        let name = func.name().to_ascii_lowercase();
        // COUNT(*): every aggregation reflection keeps the row count.
        match params.args.as_slice() {
            [] => return name == "count" && !params.distinct,
            [Expr::Literal(v, _)] => return name == "count" && !params.distinct && !v.is_null(),
            _ => {}
        }
        let Some(column) = aggregated_column(&params.args, self.schema) else {
            return false;
        };
        let c = column.name.as_str();
        let Some(data_type) = self.type_of(c).cloned() else {
            return false;
        };
        if params.distinct {
            // Exact distinct counts, minimums and maximums re-group a dimension.
            if matches!(name.as_str(), "count" | "min" | "max") {
                self.dimensions.entry(c.to_string()).or_insert(false);
                return true;
            }
            return false;
        }
        let functions: &[MeasureFunction] = match name.as_str() {
            "sum" if data_type.is_numeric() => &[MeasureFunction::Sum],
            "count" => &[MeasureFunction::Count],
            "min" => &[MeasureFunction::Min],
            "max" => &[MeasureFunction::Max],
            "avg" if data_type.is_numeric() => &[MeasureFunction::Sum, MeasureFunction::Count],
            "approx_distinct" if quarry_common::sketches::sketchable(&data_type) => {
                &[MeasureFunction::ApproxCountDistinct]
            }
            _ => return false,
        };
        self.measure(c, functions);
        true
    }

    fn finish(self, schema: String, dataset: String) -> AggregateShape {
        AggregateShape {
            schema,
            dataset,
            dimensions: self
                .dimensions
                .into_iter()
                .map(|(column, by_day)| Dimension { column, by_day })
                .collect(),
            measures: self
                .measures
                .into_iter()
                .map(|(column, functions)| Measure { column, functions })
                .collect(),
        }
    }
}

/// One recommended aggregation reflection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recommendation {
    pub schema: String,
    pub dataset: String,
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub measures: Vec<Measure>,
    /// The jobs it would have served, newest first.
    pub jobs: Vec<String>,
    pub last_seen_ms: u64,
}

impl Recommendation {
    /// The statement that creates it.
    pub(crate) fn ddl(&self, view: bool) -> String {
        let mut ddl = format!(
            "ALTER {} {}.{} CREATE AGGREGATE REFLECTION {} USING DIMENSIONS ({})",
            if view { "VIEW" } else { "TABLE" },
            ident(&self.schema),
            ident(&self.dataset),
            ident(&self.name),
            dimensions_text(&self.dimensions, &ident)
        );
        if !self.measures.is_empty() {
            ddl.push_str(&format!(
                " MEASURES ({})",
                measures_text(&self.measures, &ident)
            ));
        }
        ddl
    }
}

/// A name as SQL reads it back: bare when it is lower-case letters, digits and `_`.
fn ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// One aggregation reflection per dataset serving every recorded aggregate over it, from
/// the jobs given (newest first), most useful first. `taken` says whether a reflection
/// name is in use.
pub(crate) fn recommend(jobs: &[JobRecord], taken: &dyn Fn(&str) -> bool) -> Vec<Recommendation> {
    let mut by_dataset: BTreeMap<(String, String), Recommendation> = BTreeMap::new();
    for job in jobs {
        for shape in &job.aggregates {
            let key = (shape.schema.clone(), shape.dataset.clone());
            let entry = by_dataset.entry(key).or_insert_with(|| Recommendation {
                schema: shape.schema.clone(),
                dataset: shape.dataset.clone(),
                name: String::new(),
                dimensions: Vec::new(),
                measures: Vec::new(),
                jobs: Vec::new(),
                last_seen_ms: job.submitted_ms,
            });
            merge(entry, shape);
            if !entry.jobs.contains(&job.id) {
                entry.jobs.push(job.id.clone());
            }
            entry.last_seen_ms = entry.last_seen_ms.max(job.submitted_ms);
        }
    }
    let mut recommendations: Vec<Recommendation> = by_dataset.into_values().collect();
    recommendations.sort_by(|a, b| {
        b.jobs
            .len()
            .cmp(&a.jobs.len())
            .then(b.last_seen_ms.cmp(&a.last_seen_ms))
    });
    let mut names: Vec<String> = Vec::new();
    for r in recommendations.iter_mut() {
        let base = format!("{}_agg", r.dataset.to_ascii_lowercase());
        let mut name = base.clone();
        let mut n = 2;
        while taken(&name) || names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name.clone());
        r.name = name;
    }
    recommendations
}

fn merge(into: &mut Recommendation, shape: &AggregateShape) {
    for d in &shape.dimensions {
        match into.dimensions.iter_mut().find(|k| k.column == d.column) {
            // Kept BY DAY only while every job uses it at day grain or coarser.
            Some(kept) => kept.by_day = kept.by_day && d.by_day,
            None => into.dimensions.push(d.clone()),
        }
    }
    into.dimensions.sort_by(|a, b| a.column.cmp(&b.column));
    for m in &shape.measures {
        match into.measures.iter_mut().find(|k| k.column == m.column) {
            Some(kept) => {
                for f in &m.functions {
                    if !kept.functions.contains(f) {
                        kept.functions.push(*f);
                    }
                }
                kept.functions.sort();
            }
            None => into.measures.push(m.clone()),
        }
    }
    into.measures.sort_by(|a, b| a.column.cmp(&b.column));
}
