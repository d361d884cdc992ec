//! The reader a query plans for, and whether it may read a dataset: the checks every
//! listing and planning path makes.

use std::sync::Arc;

use quarry_catalog::{DatasetDefinition, DatasetRecord, Privilege};

use super::UserAccess;

/// The reader a catalog is for; None reads everything (the coordinator's own planning).
pub(crate) type Viewer = Option<Arc<UserAccess>>;

/// The source a dataset's files are in, for grants on sources.
pub(crate) fn source_of(record: &DatasetRecord) -> Option<&str> {
    match &record.definition {
        DatasetDefinition::Table(t) => t.source.as_deref(),
        DatasetDefinition::View(_) => None,
    }
}

/// May `viewer` read the dataset?
pub(crate) fn can_read(viewer: &Viewer, record: &DatasetRecord) -> bool {
    viewer.as_ref().is_none_or(|v| {
        v.on_dataset(
            Privilege::Select,
            &record.schema,
            &record.name,
            source_of(record),
        )
    })
}
