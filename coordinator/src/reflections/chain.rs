//! The plan shapes the substitution rules read: the one dataset under a chain of filters,
//! aliases, projections and star-schema joins, the columns expressions read, and a plan
//! put back to exactly the schema it replaced.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, TableReference};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, cast};

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
