//! Tables promoted from files: inferring a new table's schema and partition columns, and
//! rebuilding a `ListingTable` from its catalog record without inferring again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use quarry_catalog::TableDefinition;
use quarry_common::QuarryError;
use quarry_common::object_stores::ObjectStoreRegistrar;
use quarry_common::panics::catch_panic;

use super::schema_codec::{decode_schema, encode_schema};

use crate::error::CoordinatorError;

/// The file formats a table can have.
pub(crate) const FORMATS: [&str; 3] = ["parquet", "csv", "json"];

/// The type DataFusion gives hive partition values.
pub(crate) fn partition_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8))
}

/// The format a file name suggests.
pub(crate) fn format_of(file: &str) -> Option<&'static str> {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".parq") {
        Some("parquet")
    } else if lower.ends_with(".csv") || lower.ends_with(".tsv") {
        Some("csv")
    } else if lower.ends_with(".json") || lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Some("json")
    } else {
        None
    }
}

/// `.parquet` for `x/y.parquet`; empty when the name has no extension.
fn extension_of(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    match name.rfind('.') {
        Some(i) if i > 0 => name[i..].to_string(),
        _ => String::new(),
    }
}

/// Normalise a format name, or refuse it.
pub(crate) fn normalize_format(format: &str) -> Result<&'static str, QuarryError> {
    let lower = format.to_ascii_lowercase();
    match lower.as_str() {
        "parquet" => Ok("parquet"),
        "csv" => Ok("csv"),
        "json" | "ndjson" | "jsonl" => Ok("json"),
        other => Err(QuarryError::invalid(format!(
            "unsupported file format '{other}': use one of {}",
            FORMATS.join(", ")
        ))),
    }
}

/// What is needed to infer a new table.
#[derive(Debug, Clone)]
pub(crate) struct NewTable {
    pub source: Option<String>,
    pub path: Option<String>,
    pub url: String,
    pub sample_file: Option<String>,
    pub format: &'static str,
    /// DataFusion format options (`format.has_header` ...).
    pub options: BTreeMap<String, String>,
    /// Given partition columns; inferred from `key=value` folders when None.
    pub partition_columns: Option<Vec<(String, DataType)>>,
    /// Given columns (without partition columns); inferred from the files when None.
    pub columns: Option<SchemaRef>,
}

fn listing_options(
    state: &dyn Session,
    format: &str,
    options: &BTreeMap<String, String>,
    extension: String,
) -> Result<ListingOptions, QuarryError> {
    let state = state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| {
            QuarryError::from(CoordinatorError::invariant(
                "table building needs a SessionState",
            ))
        })?;
    let factory = state
        .get_file_format_factory(format)
        .ok_or_else(|| QuarryError::invalid(format!("unsupported file format '{format}'")))?;
    let options: HashMap<String, String> = options.clone().into_iter().collect();
    let file_format = factory.create(state, &options)?;
    Ok(ListingOptions::new(file_format).with_file_extension(extension))
}

/// Infer a new table's schema from its files, build it once to prove it reads, and
/// return the definition to store.
pub(crate) async fn infer_table(
    state: &SessionState,
    spec: NewTable,
) -> Result<(TableDefinition, Arc<dyn TableProvider>), QuarryError> {
    let url = ListingTableUrl::parse(&spec.url)?;
    let extension = spec
        .sample_file
        .as_deref()
        .map(extension_of)
        .unwrap_or_default();
    let mut options = listing_options(state, spec.format, &spec.options, extension.clone())?;
    let partition_columns = match spec.partition_columns {
        Some(cols) => cols,
        None if url.is_collection() => options
            .infer_partitions(state, &url)
            .await?
            .into_iter()
            .map(|name| (name, partition_type()))
            .collect(),
        None => Vec::new(),
    };
    options = options.with_table_partition_cols(partition_columns.clone());
    let file_schema = match spec.columns {
        Some(columns) => columns,
        // Readers have panicked on malformed files; that is the file's fault, not ours.
        None => catch_panic(options.infer_schema(state, &url))
            .await
            .map_err(|panic| QuarryError::invalid(format!("a file is malformed ({panic})")))??,
    };
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(file_schema);
    let table = ListingTable::try_new(config)?;
    let definition = TableDefinition {
        source: spec.source,
        path: spec.path,
        location: spec.url,
        format: spec.format.to_string(),
        options: spec.options,
        file_extension: extension,
        partition_columns: partition_columns.into_iter().map(|(n, _)| n).collect(),
        arrow_schema: encode_schema(table.schema().as_ref())?,
    };
    Ok((definition, Arc::new(table)))
}

/// Rebuild a stored table: files are listed at scan time, the schema is not inferred.
/// Its files' statistics are kept in the session's statistics cache under the name
/// `stores` gives its store.
pub(crate) fn open_table(
    state: &dyn Session,
    definition: &TableDefinition,
    stores: &ObjectStoreRegistrar,
) -> Result<Arc<dyn TableProvider>, QuarryError> {
    let full = decode_schema(&definition.arrow_schema)?;
    let url = ListingTableUrl::parse(&definition.location)?;
    let scope = stores.scope(url.object_store().as_str());
    let url = url.with_table_ref(TableReference::bare(scope));
    let mut partition_columns = Vec::new();
    let mut file_fields = Vec::new();
    for field in full.fields() {
        if definition.partition_columns.contains(field.name()) {
            partition_columns.push((field.name().clone(), field.data_type().clone()));
        } else {
            file_fields.push(Arc::clone(field));
        }
    }
    let file_schema = Arc::new(Schema::new_with_metadata(
        file_fields,
        full.metadata().clone(),
    ));
    let listing = listing_options(
        state,
        &definition.format,
        &definition.options,
        definition.file_extension.clone(),
    )?
    .with_table_partition_cols(partition_columns);
    let config = ListingTableConfig::new(url)
        .with_listing_options(listing)
        .with_schema(file_schema);
    let statistics = state.runtime_env().cache_manager.get_file_statistic_cache();
    Ok(Arc::new(
        ListingTable::try_new(config)?.with_cache(statistics),
    ))
}
