//! Datasets: the catalog's tables and views turned into DataFusion table providers, and
//! the checks a new table or view passes before it is stored.
//!
//! This module owns the catalog handle, the object stores (sources, warehouse, reflection
//! store), the managed tables' Delta log and commit locks (`delta/`), and what the `sys`
//! schema is plugged in as. It knows a query's reader only to filter what it lists and to
//! refuse what it may not read (the checks themselves are `access`'s); it starts no jobs
//! and knows nothing of sessions or frontends.

pub(crate) mod delta;
pub(crate) mod location;
mod pg_catalog;
mod provider;
pub(crate) mod schema_codec;
pub(crate) mod sources;
pub(crate) mod tables;

use std::sync::{Arc, OnceLock};

use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionConfig;
use quarry_catalog::{Catalog, DatasetDefinition, DatasetRecord, SYSTEM_SCHEMA, SourceConfig};
use quarry_common::QuarryError;
use quarry_common::object_stores::ObjectStoreRegistrar;
use quarry_common::protocol::ObjectStoreSpec;

pub(crate) use provider::QuarryCatalogList;

use crate::access::{Viewer, source_of};
use crate::error::catalog_error;

/// The provider of the `sys` schema, installed once at start (the system tables read the
/// jobs, the cluster and the reflections, which are built after the datasets).
pub trait SystemSchemas: std::fmt::Debug + Send + Sync {
    /// `sys` as `viewer` sees it.
    fn for_viewer(self: Arc<Self>, viewer: Viewer) -> Arc<dyn SchemaProvider>;
}

/// Views may use views; this deep and no deeper (it also stops definition cycles).
const MAX_VIEW_DEPTH: u32 = 32;

tokio::task_local! {
    static VIEW_DEPTH: u32;
}

/// Plan a new view's definition as one level of views already: a view that can be
/// created can also be queried.
pub(crate) async fn as_view_definition<T>(planning: impl std::future::Future<Output = T>) -> T {
    VIEW_DEPTH.scope(1, planning).await
}

#[derive(Debug)]
pub struct Datasets {
    catalog: Catalog,
    runtime: Arc<RuntimeEnv>,
    base_config: SessionConfig,
    object_stores: ObjectStoreRegistrar,
    system: OnceLock<Arc<dyn SystemSchemas>>,
    /// Managed tables' commit locks.
    commits: Arc<delta::Commits>,
    /// The folder URL managed tables without a source go under.
    warehouse: OnceLock<url::Url>,
    /// The folder URL reflections' materializations go under.
    reflection_store: OnceLock<url::Url>,
    reflections: Arc<crate::reflections::ReflectionState>,
    /// `pg_catalog` for PostgreSQL clients, one per user.
    pg_catalogs: pg_catalog::PgCatalogs,
    /// What every query's planning state starts from (see `session_state`).
    template: OnceLock<SessionState>,
}

impl Datasets {
    /// `base_config` names the catalog and default schema; queries layer their own
    /// settings on top of it.
    pub fn new(
        catalog: Catalog,
        runtime: Arc<RuntimeEnv>,
        base_config: SessionConfig,
        tasks: crate::tasks::Tasks,
    ) -> Result<Arc<Self>, QuarryError> {
        let datasets = Arc::new(Datasets {
            catalog,
            runtime,
            base_config,
            object_stores: ObjectStoreRegistrar::default(),
            system: OnceLock::new(),
            commits: Arc::new(delta::Commits::new(tasks)),
            warehouse: OnceLock::new(),
            reflection_store: OnceLock::new(),
            reflections: Arc::default(),
            pg_catalogs: pg_catalog::PgCatalogs::default(),
            template: OnceLock::new(),
        });
        // Object stores of existing S3 sources, so their tables can be scanned.
        for source in datasets.catalog.list_sources().map_err(catalog_error)? {
            if let SourceConfig::S3(s3) = &source.record.config {
                let spec = sources::s3_store_spec(&source.record.name, s3);
                // Tables made before stores were keyed per source name the bare bucket.
                let legacy = ObjectStoreSpec {
                    url: format!("s3://{}", s3.bucket),
                    options: spec.options.clone(),
                };
                for spec in [spec, legacy] {
                    if let Err(e) = datasets.register_store(&spec) {
                        tracing::warn!(source = %source.record.name, "cannot set up object store: {e}");
                    }
                }
            }
        }
        Ok(datasets)
    }

    /// Set where managed tables go (once, at start).
    pub fn set_warehouse(&self, location: &location::Location) -> Result<(), QuarryError> {
        let url = location.folder(self, location::WAREHOUSE)?;
        let _ = self.warehouse.set(url);
        Ok(())
    }

    /// Set where reflections' materializations go (once, at start).
    pub fn set_reflection_store(&self, location: &location::Location) -> Result<(), QuarryError> {
        let url = location.folder(self, location::REFLECTIONS)?;
        let _ = self.reflection_store.set(url);
        Ok(())
    }

    /// The folder of every materialization, once set.
    pub fn reflection_store(&self) -> Option<&url::Url> {
        self.reflection_store.get()
    }

    /// Running refreshes and how often planning used each reflection.
    pub fn reflection_state(&self) -> &Arc<crate::reflections::ReflectionState> {
        &self.reflections
    }

    /// A new folder for a materialization of reflection `name`.
    pub fn materialization_folder(&self, name: &str) -> Result<url::Url, QuarryError> {
        let store = self
            .reflection_store
            .get()
            .ok_or_else(|| QuarryError::unavailable("no reflection store is configured"))?;
        let folder = format!("{name}/{}/", uuid::Uuid::new_v4().simple());
        store
            .join(&folder)
            .map_err(|e| QuarryError::invalid(format!("materialization folder {folder}: {e}")))
    }

    /// The folder a new managed table `schema.name` gets.
    pub fn managed_location(&self, schema: &str, name: &str) -> Result<url::Url, QuarryError> {
        let warehouse = self
            .warehouse
            .get()
            .ok_or_else(|| QuarryError::unavailable("no warehouse is configured"))?;
        let folder = format!("{schema}/{name}/");
        warehouse
            .join(&folder)
            .map_err(|e| QuarryError::invalid(format!("table folder {folder}: {e}")))
    }

    pub fn commits(&self) -> &Arc<delta::Commits> {
        &self.commits
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    pub fn base_config(&self) -> &SessionConfig {
        &self.base_config
    }

    /// Install the provider of the `sys` schema.
    pub fn set_system_schema(&self, schema: Arc<dyn SystemSchemas>) {
        let _ = self.system.set(schema);
    }

    pub(crate) fn system_schema(
        self: &Arc<Self>,
        name: &str,
        viewer: &Viewer,
    ) -> Option<Arc<dyn SchemaProvider>> {
        if name == pg_catalog::PG_CATALOG {
            return self.pg_catalogs.schema(self, viewer);
        }
        (name == SYSTEM_SCHEMA)
            .then(|| {
                self.system
                    .get()
                    .map(|s| Arc::clone(s).for_viewer(viewer.clone()))
            })
            .flatten()
    }

    /// Schemas `viewer` may see: those it may read something in (all without a viewer).
    pub fn visible_schema_names(&self, viewer: &Viewer) -> Vec<String> {
        let schemas = match self.catalog.list_schemas() {
            Ok(schemas) => schemas,
            Err(e) => {
                tracing::error!("listing schemas: {e}");
                Vec::new()
            }
        };
        let mut names: Vec<String> = match viewer.as_ref().filter(|v| !v.admin) {
            None => schemas.into_iter().map(|s| s.record.name).collect(),
            Some(viewer) => {
                // Datasets grouped by schema once, not scanned again for every schema.
                let mut inside: std::collections::HashMap<String, Vec<(String, Option<String>)>> =
                    std::collections::HashMap::new();
                for d in self.catalog.list_datasets(None).unwrap_or_default() {
                    let source = source_of(&d.record).map(str::to_string);
                    inside
                        .entry(d.record.schema)
                        .or_default()
                        .push((d.record.name, source));
                }
                schemas
                    .into_iter()
                    .map(|s| s.record.name)
                    .filter(|schema| {
                        let datasets = inside.get(schema).map(Vec::as_slice).unwrap_or_default();
                        viewer.can_see_schema(schema, datasets)
                    })
                    .collect()
            }
        };
        if self.system.get().is_some() {
            names.push(SYSTEM_SCHEMA.to_string());
        }
        names
    }

    pub fn catalog_list(self: &Arc<Self>, viewer: Viewer) -> Arc<dyn CatalogProviderList> {
        Arc::new(QuarryCatalogList {
            datasets: Arc::clone(self),
            viewer,
        })
    }

    /// A DataFusion session over Quarry's catalog with the given settings, seeing what
    /// `viewer` may read.
    pub fn session_state(self: &Arc<Self>, config: SessionConfig, viewer: Viewer) -> SessionState {
        // A copy of the template with the query's settings, its table options (CSV,
        // Parquet, JSON defaults) following them as a freshly built session's would.
        // Not through DataFusion's builder: its build registers every function again,
        // 0.08 ms of every query (measured on SELECT 1), where a clone shares them.
        let mut state = self.template().clone();
        *state.table_options_mut() =
            datafusion::config::TableOptions::default_from_session_config(config.options());
        *state.config_mut() = config;
        state.register_catalog_list(self.catalog_list(viewer));
        // The functions that follow settings (the time zone of now()), made again for
        // these settings as the builder would.
        let updated: Vec<ScalarUDF> = state
            .scalar_functions()
            .iter()
            .filter(|(name, udf)| *name == udf.name())
            .filter_map(|(_, udf)| udf.inner().with_updated_config(state.config_options()))
            .collect();
        for udf in updated {
            if let Err(e) = state.register_udf(Arc::new(udf)) {
                tracing::debug!("cannot register a function for new settings: {e}");
            }
        }
        // The statement's time: now() and current_date fold to it while planning
        // (DataFusion's SessionContext does this; a state built by hand must too).
        state.mark_start_execution();
        state
    }

    /// DataFusion's functions, formats and rules, registered once: a query's state is a
    /// copy of this one with its own settings and catalog, not a fresh registration of
    /// several hundred functions. It has the base settings and no catalog.
    fn template(&self) -> &SessionState {
        self.template.get_or_init(|| {
            let mut state = SessionStateBuilder::new()
                .with_default_features()
                .with_config(self.base_config.clone())
                .with_runtime_env(Arc::clone(&self.runtime))
                // PostgreSQL's oid types (`::regclass`, `::regtype`) in clients' catalog
                // queries.
                .with_type_planner(Arc::new(
                    datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner,
                ))
                .build();
            // Registering a function Quarry defines cannot clash with DataFusion's.
            if let Err(e) = quarry_common::sketches::register(&mut state) {
                tracing::error!("cannot register the sketch aggregates: {e}");
            }
            state
        })
    }

    /// A session for planning catalog objects, resolving names against `default_schema`.
    pub fn planning_state(self: &Arc<Self>, default_schema: Option<&str>) -> SessionState {
        let mut config = self.base_config.clone();
        if let Some(schema) = default_schema {
            config.options_mut().catalog.default_schema = schema.to_string();
        }
        self.session_state(config, None)
    }

    /// Make an object store reachable from this coordinator, and remember its spec for
    /// the executors.
    pub fn register_store(&self, spec: &ObjectStoreSpec) -> Result<(), QuarryError> {
        self.object_stores.register(&self.runtime, spec)
    }

    /// The store of files in executors' data directories.
    pub fn cluster_files(&self) -> Result<Arc<dyn object_store::ObjectStore>, QuarryError> {
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            quarry_common::protocol::CLUSTER_FILES_URL,
        )?;
        self.runtime.object_store(&url).map_err(QuarryError::from)
    }

    /// The spec of a registered store URL, for shipping to executors.
    pub fn store_spec(&self, url: &str) -> Option<ObjectStoreSpec> {
        self.object_stores.spec(url)
    }

    /// The table provider of a dataset, or None when it does not exist.
    pub async fn provider(
        self: &Arc<Self>,
        schema: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QuarryError> {
        let Some(stored) = self
            .catalog
            .get_dataset(schema, name)
            .map_err(catalog_error)?
        else {
            return Ok(None);
        };
        self.provider_of(stored.record).await.map(Some)
    }

    /// The table provider of a dataset record already read from the catalog.
    pub async fn provider_of(
        self: &Arc<Self>,
        record: DatasetRecord,
    ) -> Result<Arc<dyn TableProvider>, QuarryError> {
        self.provider_as_of(record, None).await
    }

    /// The provider of a dataset as of a version (time travel; managed tables only).
    pub async fn provider_as_of(
        self: &Arc<Self>,
        record: DatasetRecord,
        as_of: Option<crate::sql::time_travel::AsOf>,
    ) -> Result<Arc<dyn TableProvider>, QuarryError> {
        let (schema, name) = (record.schema.as_str(), record.name.as_str());
        let is_managed = matches!(
            &record.definition,
            DatasetDefinition::Table(t) if t.format == delta::DELTA_FORMAT
        );
        if as_of.is_some() && !is_managed {
            return Err(QuarryError::invalid(format!(
                "{schema}.{name} has no versions: VERSION AS OF and TIMESTAMP AS OF read managed tables"
            )));
        }
        match record.definition {
            DatasetDefinition::Table(table) if table.format == delta::DELTA_FORMAT => {
                let columns = schema_codec::decode_schema(&table.arrow_schema)?;
                let url = delta::folder_url(&table.location)?;
                let version = match as_of {
                    None => None,
                    Some(as_of) => Some(delta::resolve_version(&self.runtime, &url, as_of).await?),
                };
                let table = delta::DeltaTable::new(
                    url,
                    columns,
                    table.partition_columns.clone(),
                    Arc::clone(&self.commits),
                );
                Ok(Arc::new(match version {
                    Some(v) => table.at_version(v),
                    None => table,
                }))
            }
            // Opening a table needs only the formats and their default options: the
            // template has both, and a copy of a whole session per table is not needed.
            DatasetDefinition::Table(table) => {
                tables::open_table(self.template(), &table, &self.object_stores)
            }
            DatasetDefinition::View(view) => {
                let depth = VIEW_DEPTH.try_with(|d| *d).unwrap_or(0);
                if depth >= MAX_VIEW_DEPTH {
                    return Err(QuarryError::invalid(format!(
                        "view {schema}.{name} nests views more than {MAX_VIEW_DEPTH} deep (does a view use itself?)"
                    )));
                }
                let state = self.planning_state(view.default_schema.as_deref().or(Some(schema)));
                let sql = view.sql.clone();
                let plan = VIEW_DEPTH
                    .scope(
                        depth + 1,
                        // Held to the ceilings of the limits: what the stacks are sized for,
                        // whatever limits the view was created under.
                        async move {
                            crate::sql::parser::plan_query_text(
                                &state,
                                &sql,
                                &crate::limits::Limits::ceilings(),
                            )
                            .await
                        },
                    )
                    .await
                    .map_err(|e| e.context(format!("in view {schema}.{name}")))?;
                Ok(Arc::new(ViewTable::new(plan, Some(view.sql))))
            }
        }
    }
}
