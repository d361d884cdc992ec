//! The reflections a query may use and the verdict on each: what a materialization is,
//! which one of those that match is chosen (the fewest rows), and the report of what
//! became of each for EXPLAIN and the job record.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan};
use quarry_catalog::ReflectionKind;

/// A reflection a query may use, with its materialization's table.
#[derive(Debug)]
pub(crate) struct Candidate {
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
    #[allow(dead_code)] // held, never read: its drop releases the materialization
    pub lease: Option<super::Lease>,
    /// The dataset is a view of one table under filters: queries on that table with the
    /// same filters (and maybe more) are answered too.
    pub contains: Option<ViewShape>,
}

/// A view that is plain columns of one table under filters.
#[derive(Debug, Clone)]
pub(crate) struct ViewShape {
    pub schema: String,
    pub table: String,
    /// The filters' conjuncts, their columns unqualified.
    pub conjuncts: Vec<Expr>,
}

impl ViewShape {
    pub(crate) fn of(plan: &LogicalPlan, default_schema: &str) -> Option<ViewShape> {
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
pub(super) fn unqualified(expr: &Expr) -> Expr {
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
pub(crate) struct Report(Mutex<BTreeMap<String, Considered>>);

impl Report {
    pub(super) fn note(&self, considered: Considered) {
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
    pub(super) fn demote_chosen(&self, why: &str) {
        if let Ok(mut seen) = self.0.lock() {
            for considered in seen.values_mut().filter(|c| c.chosen) {
                considered.chosen = false;
                considered.detail = why.to_string();
            }
        }
    }

    pub(crate) fn entries(&self) -> Vec<Considered> {
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
