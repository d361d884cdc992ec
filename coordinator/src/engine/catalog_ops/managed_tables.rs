//! Managed tables as catalog objects: the folder a write may go to in a writable source,
//! a managed table for a statement with the privilege it needs, VACUUM of its old files,
//! and dropping its record with its files.

use quarry_catalog::{DatasetRecord, Privilege};
use quarry_common::QuarryError;

use super::CatalogOps;
use crate::access::source_of;
use crate::datasets::delta::{self, managed_folder};
use crate::datasets::sources::writable_folder;
use crate::error::CoordinatorError;

impl CatalogOps {
    /// A folder to write at `path` in a writable source, for a user who may create
    /// tables in it.
    pub(crate) fn source_folder(
        &self,
        actor: &crate::access::UserAccess,
        source: &str,
        path: &str,
    ) -> Result<url::Url, CoordinatorError> {
        actor.require_source(Privilege::CreateTable, source)?;
        let record =
            self.datasets.catalog().get_source(source)?.ok_or_else(|| {
                QuarryError::not_found(format!("source '{source}' does not exist"))
            })?;
        writable_folder(source, &record.record.config, path).map_err(CoordinatorError::from)
    }

    /// The managed table `schema.name`, for a statement that needs `privilege` on it.
    pub(crate) fn managed_table(
        &self,
        actor: &crate::access::UserAccess,
        schema: &str,
        name: &str,
        privilege: Privilege,
    ) -> Result<(DatasetRecord, url::Url), CoordinatorError> {
        let record = self
            .datasets
            .catalog()
            .get_dataset(schema, name)?
            .map(|stored| stored.record)
            .ok_or_else(|| {
                QuarryError::not_found(format!("table {schema}.{name} does not exist"))
            })?;
        actor.require_dataset(privilege, schema, name, source_of(&record))?;
        let folder = managed_folder(&record).ok_or_else(|| {
            QuarryError::invalid(format!("{schema}.{name} is not a managed table"))
        })?;
        Ok((record, folder))
    }

    /// `VACUUM`: files no version needs, removed longer ago than `retain_hours` (7 days by
    /// default, as in Delta), are deleted.
    pub(crate) async fn vacuum(
        &self,
        actor: &crate::access::UserAccess,
        schema: &str,
        name: &str,
        retain_hours: Option<f64>,
    ) -> Result<usize, CoordinatorError> {
        let (_, folder) = self.managed_table(actor, schema, name, Privilege::Alter)?;
        let retain = std::time::Duration::from_secs_f64(retain_hours.unwrap_or(168.0) * 3600.0);
        delta::vacuum(
            self.datasets.runtime(),
            self.datasets.commits(),
            &folder,
            retain,
        )
        .await
        .map_err(CoordinatorError::from)
    }

    /// The one way a dataset is dropped (SQL `DROP TABLE|VIEW`, REST, a failed CREATE
    /// TABLE AS): its record (with its grants and reflections) on a blocking thread, then,
    /// for a managed table, its files. `kind` ("table" or "view") must match when given.
    pub(crate) async fn drop_dataset_and_files(
        &self,
        actor: &crate::access::UserAccess,
        schema: &str,
        name: &str,
        kind: Option<&'static str>,
        if_exists: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, CoordinatorError> {
        let folder = self
            .datasets
            .catalog()
            .get_dataset(schema, name)?
            .and_then(|stored| managed_folder(&stored.record));
        let (actor, schema, name) = (actor.clone(), schema.to_string(), name.to_string());
        let dropped = self
            .write(move |ops| {
                ops.drop_dataset(&actor, &schema, &name, kind, if_exists, expected_version)
            })
            .await?;
        if dropped && let Some(folder) = folder {
            delta::purge(self.datasets.runtime(), &folder).await?;
        }
        Ok(dropped)
    }
}
