//! `RawRule`: once projections are pushed into scans, a scan that reads only columns a
//! raw reflection keeps reads the reflection instead, with its filters (so its PARTITION
//! BY columns prune) and a filter above that keeps the answer right whatever the
//! reflection's provider does with them.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, cast};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use quarry_catalog::ReflectionKind;

use super::candidates::{Candidate, Report, best, holds, resolve};
use super::chain::{columns_of, restore_schema};

#[derive(Debug)]
pub(crate) struct RawRule {
    pub candidates: Arc<Vec<Candidate>>,
    pub default_schema: String,
    pub report: Arc<Report>,
}

impl OptimizerRule for RawRule {
    fn name(&self) -> &str {
        "quarry_reflections_raw"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        if !self
            .candidates
            .iter()
            .any(|c| matches!(c.kind, ReflectionKind::Raw { .. }))
        {
            return Ok(Transformed::no(plan));
        }
        plan.transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let (schema, dataset) = resolve(&scan.table_name, &self.default_schema);
            let read: HashSet<String> = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .chain(columns_of(&scan.filters))
                .collect();
            let raw_on_dataset = self.candidates.iter().filter(|c| {
                c.schema == schema
                    && c.dataset == dataset
                    && matches!(c.kind, ReflectionKind::Raw { .. })
            });
            let verdict = |candidate: &Candidate| match &candidate.kind {
                ReflectionKind::Raw { display } => holds(display, &read),
                ReflectionKind::Aggregate { .. } => Err("not a raw reflection".to_string()),
            };
            let Some(chosen) = best(&self.report, raw_on_dataset, verdict) else {
                return Ok(Transformed::no(node));
            };
            let Some(table) = &chosen.table else {
                return Ok(Transformed::no(node));
            };
            let reflection_schema = table.schema();
            let dataset_schema = scan.source.schema();
            // The columns the scan gives, then those only its filters read.
            let mut needed: Vec<String> = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let mut filtered: Vec<String> = columns_of(&scan.filters).into_iter().collect();
            filtered.sort();
            for column in filtered {
                if !needed.contains(&column) {
                    needed.push(column);
                }
            }
            let projection = needed
                .iter()
                .map(|name| reflection_schema.index_of(name))
                .collect::<Result<Vec<_>, _>>()?;
            // The scan prunes with the filters over its own types; the filter above keeps
            // the answer right whatever the reflection's provider does with them.
            let scan_filters = scan
                .filters
                .iter()
                .map(|f| {
                    f.clone()
                        .transform(|e| match e {
                            Expr::Column(c) => {
                                let stored = reflection_schema.field_with_name(&c.name);
                                let original = dataset_schema.field_with_name(&c.name);
                                match (stored, original) {
                                    (Ok(s), Ok(o)) if s.data_type() != o.data_type() => {
                                        Ok(Transformed::yes(cast(
                                            Expr::Column(c),
                                            o.data_type().clone(),
                                        )))
                                    }
                                    _ => Ok(Transformed::no(Expr::Column(c))),
                                }
                            }
                            other => Ok(Transformed::no(other)),
                        })
                        .map(|t| t.data)
                })
                .collect::<DfResult<Vec<_>>>()?;
            let fetch = if scan.filters.is_empty() {
                scan.fetch
            } else {
                None
            };
            let replacement = LogicalPlan::TableScan(
                datafusion::logical_expr::TableScanBuilder::new(
                    scan.table_name.clone(),
                    provider_as_source(Arc::clone(table)),
                )
                .with_projection(Some(projection))
                .with_filters(scan_filters)
                .with_fetch(fetch)
                .build()?,
            );
            // Every needed column as the dataset types it, under the scan's name.
            let typed: Vec<Expr> = needed
                .iter()
                .map(|name| {
                    let column = Expr::Column(Column::new(Some(scan.table_name.clone()), name));
                    let expr = match dataset_schema.field_with_name(name) {
                        Ok(field) => cast(column, field.data_type().clone()),
                        Err(_) => column,
                    };
                    expr.alias_qualified(Some(scan.table_name.clone()), name)
                })
                .collect();
            let mut restored =
                LogicalPlan::Projection(Projection::try_new(typed, Arc::new(replacement))?);
            if let Some(predicate) =
                datafusion::logical_expr::utils::conjunction(scan.filters.iter().cloned())
            {
                restored = LogicalPlan::Filter(datafusion::logical_expr::Filter::try_new(
                    predicate,
                    Arc::new(restored),
                )?);
            }
            let restored = restore_schema(restored, &scan.projected_schema, |_, i| {
                let name = scan.projected_schema.field(i).name();
                Expr::Column(Column::new(Some(scan.table_name.clone()), name))
            })?;
            Ok(Transformed::yes(restored))
        })
    }
}
