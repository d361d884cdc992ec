//! A backup of the running catalog, for `quarry backup --coordinator`.

use super::CatalogOps;
use crate::access::UserAccess;
use crate::error::CoordinatorError;

impl CatalogOps {
    /// The catalog's entries as of one moment, as a backup file's bytes (admins only).
    /// Writes wait while the keyspaces are read (milliseconds); the serving runtime does not.
    pub(crate) async fn backup(
        &self,
        actor: &UserAccess,
        with_jobs: bool,
    ) -> Result<Vec<u8>, CoordinatorError> {
        actor.require_admin("back up the catalog")?;
        let store = std::sync::Arc::clone(self.datasets.catalog().store());
        tokio::task::spawn_blocking(move || {
            quarry_catalog::write_backup(store.as_ref(), with_jobs).map_err(CoordinatorError::from)
        })
        .await
        .map_err(|e| CoordinatorError::crashed("a catalog backup", e))?
    }
}
