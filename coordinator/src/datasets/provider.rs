//! Quarry's catalog as DataFusion sees it: one catalog (`quarry`), its schemas, and the
//! tables and views in them, read from the sled catalog on every lookup so that a change
//! made through any frontend is visible to the next query.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use super::{CATALOG_NAME, Datasets};

#[derive(Debug)]
pub struct QuarryCatalogList(pub Arc<Datasets>);

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
        (name == CATALOG_NAME).then(|| Arc::new(QuarryCatalog(Arc::clone(&self.0))) as _)
    }
}

#[derive(Debug)]
pub struct QuarryCatalog(pub Arc<Datasets>);

impl CatalogProvider for QuarryCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.0.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(system) = self.0.system_schema(name) {
            return Some(system);
        }
        match self.0.catalog().get_schema(name) {
            Ok(Some(_)) => Some(Arc::new(QuarrySchema {
                datasets: Arc::clone(&self.0),
                name: name.to_string(),
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
pub struct QuarrySchema {
    datasets: Arc<Datasets>,
    name: String,
}

#[async_trait]
impl SchemaProvider for QuarrySchema {
    fn table_names(&self) -> Vec<String> {
        match self.datasets.catalog().list_datasets(Some(&self.name)) {
            Ok(datasets) => datasets.into_iter().map(|d| d.record.name).collect(),
            Err(e) => {
                tracing::error!("listing datasets of {}: {e}", self.name);
                Vec::new()
            }
        }
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        self.datasets
            .provider(&self.name, name)
            .await
            .map_err(DataFusionError::from)
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(
            self.datasets.catalog().get_dataset(&self.name, name),
            Ok(Some(_))
        )
    }
}
