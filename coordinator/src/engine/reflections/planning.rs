//! What a query's planning makes of reflections: the candidates on the datasets it reads,
//! the rules installed for them, and the reports that end in EXPLAIN and the job record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::common::TableReference;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use quarry_catalog::{AggregateShape, DatasetDefinition, ReflectionRecord};
use quarry_common::QuarryError;

use crate::datasets::delta::{self, DeltaTable};
use crate::datasets::schema_codec::{decode_schema, encode_schema};
use crate::engine::session::{ReflectionOptions, quarry_options};
use crate::engine::{Engine, Session};
use crate::error::catalog_error;
use crate::reflections::candidates::{Candidate, Report, ViewShape, resolve};
use crate::reflections::matching::AggregateRule;
use crate::reflections::raw::RawRule;
use crate::reflections::recommend;
use crate::reflections::{self as reflection};
use quarry_catalog::now_ms;

tokio::task_local! {
    static PLANNING: PlanningReports;
}

/// The reflection reports of the statements a job plans, and the shapes of the
/// aggregates it runs, for its record.
#[derive(Clone, Default)]
pub(crate) struct PlanningReports(Arc<std::sync::Mutex<Planned>>);

#[derive(Default)]
struct Planned {
    reports: Vec<Arc<Report>>,
    aggregates: Vec<AggregateShape>,
}

impl PlanningReports {
    /// Run `planning` with its reports collected here.
    pub(crate) async fn scope<F: std::future::Future>(self, planning: F) -> F::Output {
        PLANNING.scope(self, planning).await
    }

    fn note(report: &Arc<Report>) {
        let _ = PLANNING.try_with(|planned| {
            if let Ok(mut planned) = planned.0.lock() {
                planned.reports.push(Arc::clone(report));
            }
        });
    }

    /// Add `shapes` to the job being planned (also for a statement served unplanned,
    /// so its aggregates still count towards recommendations).
    pub(in crate::engine) fn note_aggregates(shapes: Vec<AggregateShape>) {
        let _ = PLANNING.try_with(|planned| {
            if let Ok(mut planned) = planned.0.lock() {
                planned.aggregates.extend(shapes);
            }
        });
    }

    /// The shapes noted so far for the job being planned.
    pub(in crate::engine) fn noted_aggregates() -> Vec<AggregateShape> {
        PLANNING
            .try_with(|planned| {
                planned
                    .0
                    .lock()
                    .map(|p| p.aggregates.clone())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// The shapes of the aggregates the job's queries run.
    pub(crate) fn aggregates(&self) -> Vec<AggregateShape> {
        self.0
            .lock()
            .map(|p| p.aggregates.clone())
            .unwrap_or_default()
    }

    /// Every considered reflection as `name: verdict`, and when the oldest data used was
    /// read; None when no reflection was considered.
    pub(crate) fn summary(
        &self,
        state: &crate::reflections::ReflectionState,
    ) -> Option<(Vec<String>, Option<u64>)> {
        let planned = self.0.lock().ok()?;
        let reports = &planned.reports;
        if reports.is_empty() {
            return None;
        }
        let entries: Vec<_> = reports.iter().flat_map(|r| r.entries()).collect();
        state.count(&entries);
        let data_as_of = entries
            .iter()
            .filter(|c| c.chosen)
            .map(|c| c.data_as_of_ms)
            .min();
        let lines = entries
            .into_iter()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Some((lines, data_as_of))
    }
}

impl Engine {
    /// Remember the shapes of the aggregates `plan` runs, for `sys.recommend_reflections`.
    pub(in crate::engine) fn note_aggregates(&self, session: &Session, plan: &LogicalPlan) {
        let default_schema = session.default_schema();
        let catalog = self.datasets.catalog();
        let is_view = |name: &TableReference| {
            let (schema, dataset) = resolve(name, &default_schema);
            catalog
                .get_dataset(&schema, &dataset)
                .ok()
                .flatten()
                .is_some_and(|d| matches!(d.record.definition, DatasetDefinition::View(_)))
        };
        PlanningReports::note_aggregates(recommend::shapes(plan, &default_schema, &is_view));
    }

    /// `EXPLAIN REFLECTIONS query`: one row per considered reflection, with what became
    /// of it (`chosen`, `matched, not chosen: ...`, `not matched: <reason>`).
    pub(in crate::engine) async fn explain_reflections(
        &self,
        session: &Session,
        statement: datafusion::sql::parser::Statement,
    ) -> Result<RecordBatch, QuarryError> {
        let state = self.query_state(session)?;
        let plan = state.statement_to_plan(statement).await?;
        let (state, report) = self.with_reflections(session, state, &plan).await?;
        state.optimize(&plan)?;
        let entries = report.map(|r| r.entries()).unwrap_or_default();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("reflection", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("outcome", arrow::datatypes::DataType::Utf8, false),
        ]));
        let names: Vec<String> = entries.iter().map(|c| c.name.clone()).collect();
        let outcomes: Vec<String> = entries.into_iter().map(|c| c.detail).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::StringArray::from(names)),
                Arc::new(arrow::array::StringArray::from(outcomes)),
            ],
        )
        .map_err(|e| QuarryError::invalid(e.to_string()))
    }

    /// `state` with the reflection rules installed for what `plan` reads, and the report
    /// they fill; `state` as it is when no reflection is on those datasets.
    pub(in crate::engine) async fn with_reflections(
        &self,
        session: &Session,
        state: SessionState,
        plan: &LogicalPlan,
    ) -> Result<(SessionState, Option<Arc<Report>>), QuarryError> {
        let options = quarry_options(state.config()).reflections;
        if !options.enabled {
            return Ok((state, None));
        }
        let mut scanned: HashSet<(String, String)> = HashSet::new();
        let default_schema = session.default_schema();
        let _ = plan.apply_with_subqueries(|node| {
            let name = match node {
                LogicalPlan::TableScan(scan) => Some(&scan.table_name),
                // Views are inlined under an alias named after them.
                LogicalPlan::SubqueryAlias(alias) => Some(&alias.alias),
                _ => None,
            };
            if let Some(name) = name {
                let (schema, name) = match name {
                    TableReference::Bare { table } => (default_schema.clone(), table.to_string()),
                    TableReference::Partial { schema, table }
                    | TableReference::Full { schema, table, .. } => {
                        (schema.to_string(), table.to_string())
                    }
                };
                scanned.insert((schema, name));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let mut records = Vec::new();
        let mut shapes = HashMap::new();
        // Per dataset, once: several reflections are often on one.
        let mut views: HashMap<(String, String), Option<ViewShape>> = HashMap::new();
        for stored in self
            .datasets
            .catalog()
            .list_reflections()
            .map_err(catalog_error)?
        {
            let r = stored.record;
            // A reflection on a view of one table with filters also serves queries on
            // that table whose filters include the view's.
            let key = (r.schema.clone(), r.dataset.clone());
            let shape = match views.get(&key) {
                Some(shape) => shape.clone(),
                None => {
                    let shape = self.view_shape(&r.schema, &r.dataset).await;
                    views.insert(key, shape.clone());
                    shape
                }
            };
            let on_scanned = scanned.contains(&(r.schema.clone(), r.dataset.clone()));
            let contains_scanned = shape
                .as_ref()
                .is_some_and(|v| scanned.contains(&(v.schema.clone(), v.table.clone())));
            if on_scanned || contains_scanned {
                if let Some(shape) = shape {
                    shapes.insert(r.name.clone(), shape);
                }
                records.push(r);
            }
        }
        if records.is_empty() {
            return Ok((state, None));
        }
        let candidates = self.candidates(records, shapes, &options).await?;
        let candidates = Arc::new(candidates);
        let report = Arc::new(Report::default());
        let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
            vec![Arc::new(AggregateRule {
                candidates: Arc::clone(&candidates),
                default_schema: default_schema.clone(),
                report: Arc::clone(&report),
            })];
        rules.extend(state.optimizer().rules.iter().cloned());
        rules.push(Arc::new(RawRule {
            candidates,
            default_schema,
            report: Arc::clone(&report),
        }));
        let state = SessionStateBuilder::new_from_existing(state)
            .with_optimizer_rules(rules)
            .build();
        PlanningReports::note(&report);
        Ok((state, Some(report)))
    }

    /// A view that is plain columns of one table under filters: the table and the
    /// filter's conjuncts. None for other views and for tables.
    async fn view_shape(&self, schema: &str, name: &str) -> Option<ViewShape> {
        let dataset = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .ok()??
            .record;
        let DatasetDefinition::View(view) = &dataset.definition else {
            return None;
        };
        let default_schema = view.default_schema.as_deref().unwrap_or(schema);
        let state = self.datasets.planning_state(Some(default_schema));
        let plan = state.create_logical_plan(&view.sql).await.ok()?;
        // Typed as queries are when the rules see them, so filters compare equal.
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .ok()?;
        ViewShape::of(&plan, default_schema)
    }

    async fn candidates(
        &self,
        records: Vec<ReflectionRecord>,
        mut shapes: HashMap<String, ViewShape>,
        options: &ReflectionOptions,
    ) -> Result<Vec<Candidate>, QuarryError> {
        let excluded = ReflectionOptions::names(&options.exclude);
        let chosen = ReflectionOptions::names(&options.choose);
        let max_staleness = options.max_staleness()?;
        let now = now_ms();
        let mut candidates = Vec::new();
        for record in records {
            let dataset = self
                .datasets
                .catalog()
                .get_dataset(&record.schema, &record.dataset)
                .map_err(catalog_error)?
                .map(|s| s.record);
            let current_columns = match &dataset {
                Some(d) => match self.datasets.provider_of(d.clone()).await {
                    Ok(p) => encode_schema(&p.schema()).ok(),
                    Err(_) => None,
                },
                None => None,
            };
            let refreshing = self.datasets.reflection_state().is_refreshing(&record.name);
            let (_, mut unusable) =
                reflection::status(&record, current_columns.as_deref(), refreshing, now);
            let data_as_of_ms = record
                .materialization
                .as_ref()
                .map_or(0, |m| m.data_as_of_ms);
            if unusable.is_none() && excluded.contains(&record.name) {
                unusable = Some("excluded by quarry.reflections.exclude".to_string());
            }
            if unusable.is_none() && !chosen.is_empty() && !chosen.contains(&record.name) {
                unusable = Some("not in quarry.reflections.choose".to_string());
            }
            if unusable.is_none()
                && let Some(limit) = max_staleness
                && let Some(m) = &record.materialization
            {
                let age = Duration::from_millis(now.saturating_sub(m.data_as_of_ms));
                if age > limit {
                    // Data older than asked is still good when its inputs are unchanged.
                    let current = match &dataset {
                        Some(d) => self.input_snapshot(d).await.ok().flatten(),
                        None => None,
                    };
                    if current.as_ref() != Some(&m.inputs) || m.inputs.is_empty() {
                        unusable = Some(format!(
                            "stale: its data is {} old, more than quarry.reflections.max_staleness ({}), and its inputs changed",
                            humantime::format_duration(Duration::from_secs(age.as_secs())),
                            humantime::format_duration(limit)
                        ));
                    }
                }
            }
            let mut lease = None;
            let table = match &record.materialization {
                Some(m) if unusable.is_none() => {
                    let url = delta::folder_url(&m.location)?;
                    lease = Some(self.datasets.reflection_state().lease(url.as_str()));
                    let schema = decode_schema(&m.columns)?;
                    Some(Arc::new(DeltaTable::new(
                        url,
                        schema,
                        record.partition_by.clone(),
                        Arc::clone(self.datasets.commits()),
                    ))
                        as Arc<dyn datafusion::catalog::TableProvider>)
                }
                _ => None,
            };
            candidates.push(Candidate {
                name: record.name.clone(),
                schema: record.schema.clone(),
                dataset: record.dataset.clone(),
                kind: record.kind.clone(),
                view: matches!(
                    dataset.as_ref().map(|d| &d.definition),
                    Some(DatasetDefinition::View(_))
                ),
                table,
                rows: record.materialization.as_ref().map_or(0, |m| m.rows),
                data_as_of_ms,
                unusable,
                lease,
                contains: shapes.remove(&record.name),
            });
        }
        Ok(candidates)
    }
}
