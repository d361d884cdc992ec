//! PostgreSQL's `pg_catalog` over Quarry's catalog, for clients of the PostgreSQL protocol
//! (psql's `\d`, `\dt`, `\dn`, `\l`, `\du`; SQLAlchemy's and DBeaver's introspection).
//!
//! datafusion-pg-catalog builds the tables (its static ones, like `pg_type` and `pg_proc`,
//! once per process; `pg_class`, `pg_namespace`, `pg_attribute`, `pg_database` and
//! `pg_roles` from the catalog at each read). Each user gets one provider, kept, because it
//! numbers tables and schemas (their oids) as it first sees them and clients look objects
//! up by oid in one query after finding them in another. What a provider lists is the
//! catalog as its user sees it now: only what they may read.

use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProviderList, SchemaProvider};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use quarry_catalog::Catalog;

use super::Datasets;
use crate::access::{ADMIN_ROLE, Viewer};

/// The schema name PostgreSQL clients expect the system catalog under.
pub(crate) const PG_CATALOG: &str = "pg_catalog";

/// Providers kept for this many users at most (each is small: a map of oids).
const MAX_USERS: u64 = 10_000;

type Provider = PgCatalogSchemaProvider<LiveCatalog, Roles>;

#[derive(Debug, Default)]
pub(crate) struct PgCatalogs {
    /// Built on first use; None when the embedded tables cannot be read (then there is
    /// no `pg_catalog`, and the error was logged).
    static_tables: OnceLock<Option<Arc<PgCatalogStaticTables>>>,
    by_user: OnceLock<moka::sync::Cache<String, (Arc<Provider>, LiveCatalog)>>,
}

impl PgCatalogs {
    fn static_tables(&self) -> Option<Arc<PgCatalogStaticTables>> {
        self.static_tables
            .get_or_init(|| match PgCatalogStaticTables::try_new() {
                Ok(tables) => Some(Arc::new(tables)),
                Err(e) => {
                    tracing::error!("cannot build pg_catalog's tables: {e}");
                    None
                }
            })
            .clone()
    }

    /// `pg_catalog` as `viewer` sees it now.
    pub(crate) fn schema(
        &self,
        datasets: &Arc<Datasets>,
        viewer: &Viewer,
    ) -> Option<Arc<dyn SchemaProvider>> {
        let static_tables = self.static_tables()?;
        let user = viewer.as_ref().map(|v| v.user.clone()).unwrap_or_default();
        let current = datasets.catalog_list(viewer.clone());
        let cache = self
            .by_user
            .get_or_init(|| moka::sync::Cache::builder().max_capacity(MAX_USERS).build());
        let entry = cache
            .try_get_with(user, || {
                let live = LiveCatalog(Arc::new(RwLock::new(Arc::clone(&current))));
                let roles = Roles(datasets.catalog().clone());
                PgCatalogSchemaProvider::try_new(live.clone(), static_tables, roles)
                    .map(|provider| (Arc::new(provider), live))
            })
            .map_err(|e| tracing::error!("cannot build pg_catalog: {e}"))
            .ok()?;
        // The user's grants may have changed since the provider was made.
        entry.1.replace(current);
        Some(entry.0 as Arc<dyn SchemaProvider>)
    }
}

/// The catalog as one user sees it, replaced at each query so that grants given or taken
/// since show at once.
#[derive(Debug, Clone)]
pub(crate) struct LiveCatalog(Arc<RwLock<Arc<dyn CatalogProviderList>>>);

impl LiveCatalog {
    fn replace(&self, current: Arc<dyn CatalogProviderList>) {
        match self.0.write() {
            Ok(mut slot) => *slot = current,
            Err(poisoned) => *poisoned.into_inner() = current,
        }
    }

    fn current(&self) -> Arc<dyn CatalogProviderList> {
        match self.0.read() {
            Ok(slot) => Arc::clone(&slot),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

#[async_trait]
impl CatalogInfo for LiveCatalog {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        CatalogInfo::catalog_names(&self.current()).await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        CatalogInfo::schema_names(&self.current(), catalog).await
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        CatalogInfo::table_names(&self.current(), catalog, schema).await
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        CatalogInfo::table_schema(&self.current(), catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        CatalogInfo::table_type(&self.current(), catalog, schema, table).await
    }
}

/// Quarry's users as PostgreSQL roles (`pg_roles`, psql's `\du`): admins are superusers.
#[derive(Debug, Clone)]
pub(crate) struct Roles(Catalog);

impl Roles {
    fn all(&self) -> Vec<Role> {
        let users = match self.0.list_users() {
            Ok(users) => users,
            Err(e) => {
                tracing::error!("listing users for pg_roles: {e}");
                return Vec::new();
            }
        };
        users
            .into_iter()
            .map(|u| {
                let admin = u.record.roles.iter().any(|r| r == ADMIN_ROLE);
                Role {
                    name: u.record.name,
                    is_superuser: admin,
                    can_login: true,
                    can_create_db: false,
                    can_create_role: admin,
                    can_create_user: admin,
                    can_replication: false,
                    grants: Vec::new(),
                    inherited_roles: u.record.roles,
                }
            })
            .collect()
    }
}

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        self.all().into_iter().map(|r| r.name).collect()
    }

    async fn role(&self, name: &str) -> Option<Role> {
        // pg_roles unwraps this for every name `roles` listed: a user dropped in between
        // still answers, as a role without rights.
        Some(
            self.all()
                .into_iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| Role {
                    name: name.to_string(),
                    is_superuser: false,
                    can_login: false,
                    can_create_db: false,
                    can_create_role: false,
                    can_create_user: false,
                    can_replication: false,
                    grants: Vec::new(),
                    inherited_roles: Vec::new(),
                }),
        )
    }
}
