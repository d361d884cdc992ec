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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
    cast,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use quarry_catalog::ReflectionKind;

use super::rollup::{Dimensions, output_type, rollup};

/// A reflection a query may use, with its materialization's table.
#[derive(Debug)]
pub struct Candidate {
    pub name: String,
    pub schema: String,
    pub dataset: String,
    pub kind: ReflectionKind,
    /// The dataset is a view (inlined into queries under its name).
    pub view: bool,
    /// The materialization (None when there is none).
    pub table: Option<Arc<dyn TableProvider>>,
    pub rows: u64,
    pub data_as_of_ms: u64,
    /// Why it may not serve (stale, expired, disabled, ...); None when it may.
    pub unusable: Option<String>,
    /// Keeps the materialization while the query planned with it lives (the rules hold
    /// their candidates, and the query its session).
    pub lease: Option<super::Lease>,
    /// The dataset is a view of one table under filters: queries on that table with the
    /// same filters (and maybe more) are answered too.
    pub contains: Option<ViewShape>,
}

/// A view that is plain columns of one table under filters.
#[derive(Debug, Clone)]
pub struct ViewShape {
    pub schema: String,
    pub table: String,
    /// The filters' conjuncts, their columns unqualified.
    pub conjuncts: Vec<Expr>,
}

impl ViewShape {
    pub fn of(plan: &LogicalPlan, default_schema: &str) -> Option<ViewShape> {
        let mut node = plan;
        if let LogicalPlan::Projection(p) = node {
            if !p.expr.iter().all(|e| matches!(e, Expr::Column(_))) {
                return None;
            }
            node = p.input.as_ref();
        }
        let mut conjuncts = Vec::new();
        loop {
            match node {
                LogicalPlan::Filter(f) => {
                    conjuncts.extend(split_conjunction(&f.predicate).into_iter().map(unqualified));
                    node = f.input.as_ref();
                }
                LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
                LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                    let (schema, table) = resolve(&scan.table_name, default_schema);
                    return (!conjuncts.is_empty()).then_some(ViewShape {
                        schema,
                        table,
                        conjuncts,
                    });
                }
                _ => return None,
            }
        }
    }
}

/// `expr` with its columns unqualified, to compare filters written over different names.
fn unqualified(expr: &Expr) -> Expr {
    expr.clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                c.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| expr.clone())
}

/// What became of each considered reflection, for EXPLAIN and the job record.
#[derive(Debug, Clone, PartialEq)]
pub struct Considered {
    pub name: String,
    pub chosen: bool,
    pub matched: bool,
    pub detail: String,
    pub data_as_of_ms: u64,
}

#[derive(Debug, Default)]
pub struct Report(Mutex<BTreeMap<String, Considered>>);

impl Report {
    fn note(&self, considered: Considered) {
        let Ok(mut seen) = self.0.lock() else { return };
        // The optimizer runs rules more than once: the first verdict stands, but a
        // reflection chosen later (for another part of the query) is chosen.
        match seen.get(&considered.name) {
            Some(old) if old.chosen || !considered.chosen => {}
            _ => {
                seen.insert(considered.name.clone(), considered);
            }
        }
    }

    /// The chosen reflections were not used after all.
    fn demote_chosen(&self, why: &str) {
        if let Ok(mut seen) = self.0.lock() {
            for considered in seen.values_mut().filter(|c| c.chosen) {
                considered.chosen = false;
                considered.detail = why.to_string();
            }
        }
    }

    pub fn entries(&self) -> Vec<Considered> {
        self.0
            .lock()
            .map(|seen| seen.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The dataset a name refers to, as (schema, name).
pub(crate) fn resolve(name: &TableReference, default_schema: &str) -> (String, String) {
    match name {
        TableReference::Bare { table } => (default_schema.to_string(), table.to_string()),
        TableReference::Partial { schema, table } | TableReference::Full { schema, table, .. } => {
            (schema.to_string(), table.to_string())
        }
    }
}

#[derive(Debug)]
pub struct AggregateRule {
    pub candidates: Arc<Vec<Candidate>>,
    pub default_schema: String,
    pub report: Arc<Report>,
}

/// What an aggregate reads at the bottom of its chain: a table's scan, or a view (whose
/// plan the SQL planner inlined under an alias named after it).
pub(super) struct Leaf {
    pub(super) name: TableReference,
    /// The dataset's columns with their types.
    pub(super) schema: arrow::datatypes::SchemaRef,
    pub(super) view: bool,
}

/// The one dataset under a chain of filters, aliases and projections.
pub(super) struct Chain<'a> {
    pub(super) leaf: Leaf,
    /// Filter predicates and projected expressions: what the chain reads.
    pub(super) exprs: Vec<&'a Expr>,
    /// The name the scan's columns have above the chain (its outermost alias).
    pub(super) qualifier: TableReference,
    /// A projection sits in the chain: columns other than the dataset's are cut off.
    pub(super) projects: bool,
    /// The chain joins other tables: the expressions above and in the joins, which may
    /// read the dataset's columns only where they are dimensions.
    pub(super) joined: Option<Vec<&'a Expr>>,
}

pub(super) fn chain_scan<'a>(
    plan: &'a LogicalPlan,
    is_view: &dyn Fn(&TableReference) -> bool,
    has_candidates: &dyn Fn(&TableReference) -> bool,
) -> Option<Chain<'a>> {
    let mut exprs = Vec::new();
    let mut qualifier = None;
    let mut projects = false;
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(filter) => {
                exprs.push(&filter.predicate);
                node = filter.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(alias) if is_view(&alias.alias) => {
                return Some(Chain {
                    leaf: Leaf {
                        name: alias.alias.clone(),
                        schema: Arc::new(alias.schema.as_arrow().clone()),
                        view: true,
                    },
                    exprs,
                    qualifier: qualifier.unwrap_or_else(|| alias.alias.clone()),
                    projects,
                    joined: None,
                });
            }
            LogicalPlan::SubqueryAlias(alias) => {
                qualifier.get_or_insert_with(|| alias.alias.clone());
                node = alias.input.as_ref();
            }
            LogicalPlan::Projection(projection) => {
                exprs.extend(projection.expr.iter());
                projects = true;
                node = projection.input.as_ref();
            }
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                return Some(Chain {
                    leaf: Leaf {
                        name: scan.table_name.clone(),
                        schema: scan.source.schema(),
                        view: false,
                    },
                    exprs,
                    qualifier: qualifier.unwrap_or_else(|| scan.table_name.clone()),
                    projects,
                    joined: None,
                });
            }
            // A join of the dataset with other tables (a star schema's dimension tables):
            // every row of the dataset meets the same rows of the others whether it is
            // read raw or grouped, so sums, counts, minimums and maximums are kept as long
            // as the dataset's side is never padded with NULL rows.
            LogicalPlan::Join(join) if qualifier.is_none() => {
                use datafusion::logical_expr::JoinType;
                let left_ok = matches!(join.join_type, JoinType::Inner | JoinType::Left);
                let right_ok = matches!(join.join_type, JoinType::Inner | JoinType::Right);
                let side = |plan: &'a LogicalPlan, ok: bool| {
                    ok.then(|| chain_scan(plan, is_view, has_candidates))
                        .flatten()
                        .filter(|c| has_candidates(&c.leaf.name))
                };
                let (fact, other) = match (side(&join.left, left_ok), side(&join.right, right_ok)) {
                    (Some(fact), None) => (fact, join.right.as_ref()),
                    (None, Some(fact)) => (fact, join.left.as_ref()),
                    _ => return None,
                };
                // A self-join reads the dataset on both sides.
                let mut again = false;
                let _ = other.apply(|n| {
                    if let LogicalPlan::TableScan(s) = n
                        && s.table_name == fact.leaf.name
                    {
                        again = true;
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
                if again || join.null_equality == datafusion::common::NullEquality::NullEqualsNull {
                    return None;
                }
                let mut joined = exprs;
                joined.extend(fact.joined.unwrap_or_default());
                for (l, r) in &join.on {
                    joined.push(l);
                    joined.push(r);
                }
                joined.extend(join.filter.iter());
                return Some(Chain {
                    joined: Some(joined),
                    projects: projects || fact.projects,
                    ..fact
                });
            }
            _ => return None,
        }
    }
}

/// The names of the columns `exprs` read.
pub(super) fn columns_of<'a>(exprs: impl IntoIterator<Item = &'a Expr>) -> HashSet<String> {
    exprs
        .into_iter()
        .flat_map(|e| e.column_refs().into_iter().map(|c| c.name.clone()))
        .collect()
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

/// The usable candidates `verdict` accepts, the cheapest chosen; each other one is told
/// why it was not.
pub(super) fn best<'c>(
    report: &Report,
    candidates: impl Iterator<Item = &'c Candidate>,
    verdict: impl Fn(&Candidate) -> Result<(), String>,
) -> Option<&'c Candidate> {
    let mut matched = Vec::new();
    for candidate in candidates {
        let outcome = match &candidate.unusable {
            Some(reason) => Err(reason.clone()),
            None => verdict(candidate),
        };
        match outcome {
            Ok(()) => matched.push(candidate),
            Err(reason) => report.note(Considered {
                name: candidate.name.clone(),
                chosen: false,
                matched: false,
                detail: format!("not matched: {reason}"),
                data_as_of_ms: candidate.data_as_of_ms,
            }),
        }
    }
    choose_cheapest(report, matched)
}

/// Of the reflections that matched, the one with the fewest rows; the others are told
/// what beat them.
fn choose_cheapest<'c>(report: &Report, mut matched: Vec<&'c Candidate>) -> Option<&'c Candidate> {
    matched.sort_by_key(|c| (c.rows, c.name.clone()));
    let chosen = *matched.first()?;
    for other in &matched[1..] {
        report.note(Considered {
            name: other.name.clone(),
            chosen: false,
            matched: true,
            detail: format!(
                "matched, not chosen: {} has fewer rows ({} vs {})",
                chosen.name, chosen.rows, other.rows
            ),
            data_as_of_ms: other.data_as_of_ms,
        });
    }
    report.note(Considered {
        name: chosen.name.clone(),
        chosen: true,
        matched: true,
        detail: format!("chosen ({} rows)", chosen.rows),
        data_as_of_ms: chosen.data_as_of_ms,
    });
    Some(chosen)
}

pub(super) fn holds(display: &[String], read: &HashSet<String>) -> Result<(), String> {
    let mut missing: Vec<&String> = read.iter().filter(|c| !display.contains(c)).collect();
    missing.sort();
    match missing.first() {
        None => Ok(()),
        Some(column) => Err(format!("column {column} is not in the reflection")),
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

/// `plan` projected to exactly `schema` (names, qualifiers, types): `expr(schema, i)` is
/// the value of its i-th field.
pub(super) fn restore_schema(
    plan: LogicalPlan,
    schema: &DFSchemaRef,
    expr: impl Fn(&DFSchemaRef, usize) -> Expr,
) -> DfResult<LogicalPlan> {
    let input_schema = Arc::clone(plan.schema());
    let exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            cast(expr(&input_schema, i), field.data_type().clone())
                .alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(plan),
    )?))
}
