//! Errors of the catalog store.

/// What kind of object an error is about, for messages users read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Source,
    Schema,
    Dataset,
    Job,
    User,
    Token,
    Role,
    Grant,
    Reflection,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Source => "source",
            ObjectKind::Schema => "schema",
            ObjectKind::Dataset => "dataset",
            ObjectKind::Job => "job",
            ObjectKind::User => "user",
            ObjectKind::Token => "token",
            ObjectKind::Role => "role",
            ObjectKind::Grant => "grant",
            ObjectKind::Reflection => "reflection",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: ObjectKind, name: String },

    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: ObjectKind, name: String },

    #[error(
        "{kind} '{name}' was changed concurrently: expected version {expected}, found {found}; re-read it and retry"
    )]
    Conflict {
        kind: ObjectKind,
        name: String,
        expected: u64,
        found: u64,
    },

    #[error("{kind} '{name}' is still in use by {users}")]
    InUse {
        kind: ObjectKind,
        name: String,
        users: String,
    },

    #[error("invalid {kind} name '{name}': {reason}")]
    InvalidName {
        kind: ObjectKind,
        name: String,
        reason: String,
    },

    #[error("catalog record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },

    #[error(
        "catalog record {key} was written by a newer Quarry (format {found}, this build reads up to {supported})"
    )]
    NewerFormat {
        key: String,
        found: u32,
        supported: u32,
    },

    #[error("catalog storage error: {source}")]
    Storage {
        #[from]
        source: sled::Error,
    },

    /// A backup file that cannot be restored: not one, cut short, damaged or newer.
    #[error("{0}")]
    Backup(String),

    #[error("cannot open catalog directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
