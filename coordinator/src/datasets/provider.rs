//! Quarry's catalog as DataFusion sees it: one catalog (`quarry`), its schemas, and the
//! tables and views in them, read from the sled catalog on every lookup so that a change
//! made through any frontend is visible to the next query.
//!
//! A catalog built for a user (`viewer`) lists only what that user may read, and refuses
//! a lookup of a dataset they may not read with PERMISSION_DENIED: this is where every
//! table a statement names is checked, at planning time. Views' own queries are planned
//! through a catalog without a viewer (a view is a security boundary).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use quarry_catalog::{DatasetRecord, Privilege, Stored};

use quarry_catalog::CATALOG_NAME;

use super::Datasets;
use crate::access::{Viewer, can_read, source_of};
use crate::error::catalog_error;
use crate::sql::time_travel::TableAt;

#[derive(Debug)]
pub(crate) struct QuarryCatalogList {
    pub datasets: Arc<Datasets>,
    pub viewer: Viewer,
}

impl CatalogProviderList for QuarryCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![CATALOG_NAME.to_string()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == CATALOG_NAME).then(|| {
            Arc::new(QuarryCatalog {
                datasets: Arc::clone(&self.datasets),
                viewer: self.viewer.clone(),
            }) as _
        })
    }
}

#[derive(Debug)]
pub(crate) struct QuarryCatalog {
    pub datasets: Arc<Datasets>,
    pub viewer: Viewer,
}

impl CatalogProvider for QuarryCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.datasets.visible_schema_names(&self.viewer)
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(system) = self.datasets.system_schema(name, &self.viewer) {
            return Some(system);
        }
        match self.datasets.catalog().get_schema(name) {
            Ok(Some(_)) => Some(Arc::new(QuarrySchema {
                datasets: Arc::clone(&self.datasets),
                name: name.to_string(),
                viewer: self.viewer.clone(),
            })),
            Ok(None) => None,
            Err(e) => {
                tracing::error!("reading schema {name}: {e}");
                None
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct QuarrySchema {
    datasets: Arc<Datasets>,
    name: String,
    viewer: Viewer,
}

impl QuarrySchema {
    fn stored(&self, name: &str) -> Option<Stored<DatasetRecord>> {
        match self.datasets.catalog().get_dataset(&self.name, name) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("reading dataset {}.{name}: {e}", self.name);
                None
            }
        }
    }
}

#[async_trait]
impl SchemaProvider for QuarrySchema {
    fn table_names(&self) -> Vec<String> {
        match self.datasets.catalog().list_datasets(Some(&self.name)) {
            Ok(datasets) => datasets
                .into_iter()
                .filter(|d| can_read(&self.viewer, &d.record))
                .map(|d| d.record.name)
                .collect(),
            Err(e) => {
                tracing::error!("listing datasets of {}: {e}", self.name);
                Vec::new()
            }
        }
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        // `daily VERSION AS OF 3` arrives as a `TableAt` name.
        let TableAt { name, as_of } = TableAt::decode(name);
        // One catalog read serves both the privilege check and the provider.
        let Some(stored) = self
            .datasets
            .catalog()
            .get_dataset(&self.name, name)
            .map_err(|e| DataFusionError::from(catalog_error(e)))?
        else {
            return Ok(None);
        };
        let record = stored.record;
        if let Some(viewer) = &self.viewer {
            viewer
                .require_dataset(
                    Privilege::Select,
                    &record.schema,
                    &record.name,
                    source_of(&record),
                )
                .map_err(DataFusionError::from)?;
        }
        self.datasets
            .provider_as_of(record, as_of)
            .await
            .map(Some)
            .map_err(DataFusionError::from)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.stored(name).is_some()
    }
}
