//! `sys.recommend_reflections`: aggregation reflections that would have served the
//! aggregates of recent jobs the reader may see, over datasets they may read, with the
//! DDL to create each. Jobs a reflection already answered, and definitions an existing
//! reflection already covers, recommend nothing.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use quarry_catalog::{Catalog, DatasetDefinition, ReflectionKind, ReflectionRecord};

use super::{ms, table, timestamp};
use crate::access::{Viewer, can_read};
use crate::jobs::Jobs;
use crate::reflections::recommend::{Recommendation, recommend};
use crate::reflections::{dimensions_text, measures_text};

/// Recent jobs whose aggregates are considered.
const RECENT_JOBS: usize = 1000;
/// Job ids listed per recommendation.
const LISTED_JOBS: usize = 20;

pub(super) fn recommendations(
    catalog: &Catalog,
    jobs: &Jobs,
    sees_job: impl Fn(&str) -> bool,
    viewer: &Viewer,
) -> Result<Arc<dyn TableProvider>> {
    let external = |e: quarry_common::QuarryError| DataFusionError::External(Box::new(e));
    let mut recent = jobs
        .list(Some(crate::jobs::COMPLETED), RECENT_JOBS)
        .map_err(external)?;
    recent.retain(|j| sees_job(&j.user) && j.data_as_of_ms.is_none() && !j.aggregates.is_empty());
    let existing: Vec<ReflectionRecord> = catalog
        .list_reflections()
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .into_iter()
        .map(|s| s.record)
        .collect();
    let taken = |name: &str| existing.iter().any(|r| r.name == name);
    let mut rows: Vec<(Recommendation, bool)> = Vec::new();
    for r in recommend(&recent, &taken) {
        let Some(dataset) = catalog.get_dataset(&r.schema, &r.dataset).ok().flatten() else {
            continue;
        };
        if !can_read(viewer, &dataset.record) || existing.iter().any(|e| covers(e, &r)) {
            continue;
        }
        let view = matches!(dataset.record.definition, DatasetDefinition::View(_));
        rows.push((r, view));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("reflection", DataType::Utf8, false),
        Field::new("dimensions", DataType::Utf8, false),
        Field::new("measures", DataType::Utf8, false),
        Field::new("ddl", DataType::Utf8, false),
        Field::new("jobs", DataType::UInt64, false),
        Field::new("job_ids", DataType::Utf8, false),
        Field::new("last_seen", timestamp(), true),
    ]));
    let text = |f: &dyn Fn(&Recommendation, bool) -> String| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter().map(|(r, view)| f(r, *view)).collect::<Vec<_>>(),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|r, _| format!("{}.{}", r.schema, r.dataset)),
        text(&|r, _| r.name.clone()),
        text(&|r, _| dimensions_text(&r.dimensions, &|c| c.to_string())),
        text(&|r, _| measures_text(&r.measures, &|c| c.to_string())),
        text(&|r, view| r.ddl(view)),
        Arc::new(UInt64Array::from(
            rows.iter()
                .map(|(r, _)| r.jobs.len() as u64)
                .collect::<Vec<_>>(),
        )),
        text(&|r, _| {
            let listed: Vec<&str> = r
                .jobs
                .iter()
                .take(LISTED_JOBS)
                .map(String::as_str)
                .collect();
            listed.join(", ")
        }),
        ms(rows.iter().map(|(r, _)| Some(r.last_seen_ms)).collect()),
    ];
    table(schema, columns)
}

/// An existing aggregation reflection on the dataset keeps every dimension (at least as
/// finely) and every measure the recommendation asks for.
fn covers(existing: &ReflectionRecord, r: &Recommendation) -> bool {
    if existing.schema != r.schema || existing.dataset != r.dataset || !existing.enabled {
        return false;
    }
    let ReflectionKind::Aggregate {
        dimensions,
        measures,
    } = &existing.kind
    else {
        return false;
    };
    r.dimensions.iter().all(|d| {
        dimensions
            .iter()
            .any(|e| e.column == d.column && (!e.by_day || d.by_day))
    }) && r.measures.iter().all(|m| {
        m.functions.iter().all(|f| {
            measures
                .iter()
                .any(|e| e.column == m.column && e.functions.contains(f))
        })
    })
}
