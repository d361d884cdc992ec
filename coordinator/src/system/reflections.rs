//! `sys.reflections` (definition, status, policy, freshness, size and how often planning
//! used each) and `sys.materializations` (what each current materialization was computed
//! from, how, and what it holds). A user sees only reflections on datasets they may read.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use quarry_catalog::{Catalog, ReflectionKind, ReflectionRecord, Stored};

use super::{ms, table, timestamp};
use crate::access::{Viewer, can_read};
use crate::reflections::{ReflectionState, describe, status};

fn visible(catalog: &Catalog, viewer: &Viewer) -> Result<Vec<ReflectionRecord>> {
    Ok(visible_stored(catalog, viewer)?
        .into_iter()
        .map(|s| s.record)
        .collect())
}

/// The reflections `viewer` may see, with their versions.
fn visible_stored(catalog: &Catalog, viewer: &Viewer) -> Result<Vec<Stored<ReflectionRecord>>> {
    let records = catalog
        .list_reflections()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(records
        .into_iter()
        .filter(|Stored { record: r, .. }| {
            catalog
                .get_dataset(&r.schema, &r.dataset)
                .ok()
                .flatten()
                .is_some_and(|d| can_read(viewer, &d.record))
        })
        .collect())
}

fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn optional_text(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn numbers(values: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(values))
}

pub(super) fn reflections(
    catalog: &Catalog,
    state: &ReflectionState,
    viewer: &Viewer,
) -> Result<Arc<dyn TableProvider>> {
    let stored = visible_stored(catalog, viewer)?;
    let versions: Vec<u64> = stored.iter().map(|s| s.version).collect();
    let records: Vec<ReflectionRecord> = stored.into_iter().map(|s| s.record).collect();
    let now = quarry_catalog::now_ms();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
        Field::new("enabled", DataType::Boolean, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("refresh_policy", DataType::Utf8, false),
        Field::new("grace", DataType::Utf8, false),
        Field::new("last_refresh", timestamp(), true),
        Field::new("data_as_of", timestamp(), true),
        Field::new("expires_at", timestamp(), true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("considered", DataType::UInt64, false),
        Field::new("matched", DataType::UInt64, false),
        Field::new("chosen", DataType::UInt64, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("version", DataType::UInt64, false),
    ]));
    let duration =
        |ms: u64| humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string();
    let (mut statuses, mut reasons) = (Vec::new(), Vec::new());
    for r in &records {
        let (s, reason) = status(r, None, state.is_refreshing(&r.name), now);
        statuses.push(s.to_string());
        reasons.push(reason);
    }
    let usage: Vec<_> = records.iter().map(|r| state.usage(&r.name)).collect();
    let m = |f: fn(&quarry_catalog::Materialization) -> u64| -> Vec<Option<u64>> {
        records
            .iter()
            .map(|r| r.materialization.as_ref().map(f))
            .collect()
    };
    let expires: Vec<Option<u64>> = records
        .iter()
        .map(|r| {
            r.materialization
                .as_ref()
                .map(|m| m.data_as_of_ms.saturating_add(r.grace_ms))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        text(records.iter().map(|r| r.name.clone()).collect()),
        text(
            records
                .iter()
                .map(|r| format!("{}.{}", r.schema, r.dataset))
                .collect(),
        ),
        text(
            records
                .iter()
                .map(|r| match r.kind {
                    ReflectionKind::Raw { .. } => "RAW".to_string(),
                    ReflectionKind::Aggregate { .. } => "AGGREGATE".to_string(),
                })
                .collect(),
        ),
        text(records.iter().map(describe).collect()),
        Arc::new(BooleanArray::from(
            records.iter().map(|r| r.enabled).collect::<Vec<_>>(),
        )),
        text(statuses),
        optional_text(reasons),
        text(
            records
                .iter()
                .map(|r| match r.refresh_every_ms {
                    Some(every) => format!("EVERY {}", duration(every)),
                    None => "NEVER".to_string(),
                })
                .collect(),
        ),
        text(records.iter().map(|r| duration(r.grace_ms)).collect()),
        ms(m(|m| m.finished_ms)),
        ms(m(|m| m.data_as_of_ms)),
        ms(expires),
        numbers(m(|m| m.rows).into_iter().map(|v| v.unwrap_or(0)).collect()),
        numbers(m(|m| m.bytes).into_iter().map(|v| v.unwrap_or(0)).collect()),
        numbers(usage.iter().map(|u| u.considered).collect()),
        numbers(usage.iter().map(|u| u.matched).collect()),
        numbers(usage.iter().map(|u| u.chosen).collect()),
        optional_text(records.iter().map(|r| r.last_error.clone()).collect()),
        numbers(versions),
    ];
    table(schema, columns)
}

pub(super) fn materializations(
    catalog: &Catalog,
    viewer: &Viewer,
) -> Result<Arc<dyn TableProvider>> {
    let records: Vec<ReflectionRecord> = visible(catalog, viewer)?
        .into_iter()
        .filter(|r| r.materialization.is_some())
        .collect();
    let all: Vec<(&ReflectionRecord, &quarry_catalog::Materialization)> = records
        .iter()
        .filter_map(|r| r.materialization.as_ref().map(|m| (r, m)))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("reflection", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("data_as_of", timestamp(), true),
        Field::new("finished", timestamp(), true),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("inputs", DataType::UInt64, false),
        Field::new("inputs_snapshot", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        text(all.iter().map(|(r, _)| r.name.clone()).collect()),
        text(all.iter().map(|(_, m)| m.job_id.clone()).collect()),
        text(all.iter().map(|(_, m)| m.method.clone()).collect()),
        text(all.iter().map(|(_, m)| m.reason.clone()).collect()),
        ms(all.iter().map(|(_, m)| Some(m.data_as_of_ms)).collect()),
        ms(all.iter().map(|(_, m)| Some(m.finished_ms)).collect()),
        numbers(all.iter().map(|(_, m)| m.duration_ms).collect()),
        numbers(all.iter().map(|(_, m)| m.rows).collect()),
        numbers(all.iter().map(|(_, m)| m.bytes).collect()),
        numbers(all.iter().map(|(_, m)| m.files).collect()),
        numbers(all.iter().map(|(_, m)| m.inputs.len() as u64).collect()),
        text(
            all.iter()
                .map(|(_, m)| serde_json::to_string(&m.inputs).unwrap_or_default())
                .collect(),
        ),
        text(all.iter().map(|(_, m)| m.location.clone()).collect()),
    ];
    table(schema, columns)
}
