//! What goes with a dropped object: the grants on it, a dataset's reflections and their
//! materializations, and a managed table's files (removed in the background).

use std::sync::Arc;

use quarry_catalog::{ReflectionRecord, SecurableKind, Stored};

use super::CatalogOps;
use crate::datasets::delta;
use crate::error::CoordinatorError;

impl CatalogOps {
    /// Grants on a dropped object go with it, so a new object of that name starts bare.
    pub(super) fn forget_grants_on(
        &self,
        kind: SecurableKind,
        object: &str,
    ) -> Result<(), CoordinatorError> {
        self.datasets.catalog().remove_grants_on(kind, object)?;
        self.access.reload().map_err(CoordinatorError::from)
    }

    /// The reflections defined on a dataset.
    pub(crate) fn reflections_of(
        &self,
        schema: &str,
        dataset: &str,
    ) -> Result<Vec<Stored<ReflectionRecord>>, CoordinatorError> {
        Ok(self
            .datasets
            .catalog()
            .list_reflections()?
            .into_iter()
            .filter(|r| r.record.schema == schema && r.record.dataset == dataset)
            .collect())
    }

    /// Drop a dataset's reflections with it.
    pub(super) fn drop_reflections_of(&self, schema: &str, dataset: &str) {
        let policy = quarry_catalog::PolicyOn::Dataset(schema, dataset);
        if let Err(e) = self.datasets.catalog().delete_reflection_policy(policy) {
            tracing::warn!("cannot forget the reflection policy of {schema}.{dataset}: {e}");
        }
        let Ok(reflections) = self.reflections_of(schema, dataset) else {
            return;
        };
        for stored in reflections {
            if self
                .datasets
                .catalog()
                .delete_reflection(&stored.record.name, None)
                .is_ok()
            {
                self.purge_materializations(&stored.record);
            }
        }
    }

    /// Remove every materialization folder of a reflection (in the background).
    pub(crate) fn purge_materializations(&self, record: &ReflectionRecord) {
        if let Ok(folder) = self.datasets.materialization_folder(&record.name)
            && let Ok(parent) = folder.join("..")
        {
            self.purge_in_background(vec![parent]);
        }
    }

    /// After a catalog drop elsewhere (REST, DROP SCHEMA CASCADE): remove the files in
    /// the background, since the caller cannot wait.
    pub(crate) fn purge_in_background(&self, folders: Vec<url::Url>) {
        if folders.is_empty() {
            return;
        }
        let runtime = Arc::clone(self.datasets.runtime());
        self.tasks.spawn(async move {
            for folder in folders {
                if let Err(e) = delta::purge(&runtime, &folder).await {
                    tracing::warn!(%folder, "cannot remove a dropped table's files: {e}");
                }
            }
        });
    }
}
