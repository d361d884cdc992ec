//! Schemas: creating and dropping them (with what they hold, under CASCADE).

use quarry_catalog::{CatalogError, Privilege, SchemaRecord, SecurableKind};
use quarry_common::QuarryError;

use crate::access::{UserAccess, dataset_object};
use crate::datasets::delta;
use crate::error::CoordinatorError;

use super::*;

impl CatalogOps {
    pub(crate) fn create_schema(
        &self,
        actor: &UserAccess,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, CoordinatorError> {
        actor.require_system(Privilege::CreateTable, "create schemas")?;
        match self.datasets.catalog().create_schema(SchemaRecord {
            name: name.to_string(),
        }) {
            Ok(_) => Ok(true),
            Err(CatalogError::AlreadyExists { .. }) if if_not_exists => Ok(false),
            Err(e) => Err(CoordinatorError::from(e)),
        }
    }

    pub(crate) fn drop_schema(
        &self,
        actor: &UserAccess,
        name: &str,
        if_exists: bool,
        cascade: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, CoordinatorError> {
        actor.require_schema(Privilege::Alter, name)?;
        let catalog = self.datasets.catalog();
        let Some(current) = catalog.get_schema(name)? else {
            return if if_exists {
                Ok(false)
            } else {
                Err(QuarryError::not_found(format!("schema '{name}' does not exist")).into())
            };
        };
        // A stale version deletes nothing, not even the datasets CASCADE would.
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(CoordinatorError::from(CatalogError::Conflict {
                kind: quarry_catalog::ObjectKind::Schema,
                name: name.to_string(),
                expected,
                found: current.version,
            }));
        }
        if cascade {
            let mut folders = Vec::new();
            for dataset in catalog.list_datasets(Some(name))? {
                folders.extend(delta::managed_folder(&dataset.record));
                catalog.delete_dataset(name, &dataset.record.name, None)?;
                self.drop_reflections_of(name, &dataset.record.name);
                self.forget_grants_on(
                    SecurableKind::Dataset,
                    &dataset_object(name, &dataset.record.name),
                )?;
            }
            self.purge_in_background(folders);
        }
        catalog.delete_schema(name, expected_version)?;
        self.forget_grants_on(SecurableKind::Schema, name)?;
        Ok(true)
    }
}
