//! What a parsed statement is: DataFusion's own statements, and Quarry's for sources,
//! file tables, managed tables, security, reflections and `COPY`.

use datafusion::sql::parser::Statement as DFStatement;

use super::copy::CopyTo;
use super::reflections::ReflectionStatement;
use super::security::SecurityStatement;

#[derive(Debug, Clone)]
pub(crate) enum Statement {
    DataFusion(Box<DFStatement>),
    CreateSource(CreateSource),
    DropSource {
        name: String,
        if_exists: bool,
    },
    ShowSources,
    CreateTable(CreateTableFrom),
    Use {
        schema: String,
    },
    /// Users, roles, grants and tokens.
    Security(SecurityStatement),
    /// `CREATE TABLE ... PARTITION BY (columns) [AS SELECT ...]`: DataFusion's statement
    /// without the clause it does not plan, and the clause's columns.
    ManagedTable {
        statement: Box<DFStatement>,
        spec: ManagedSpec,
    },
    /// `COPY (query) TO ...`: plain files.
    Copy(CopyTo),
    /// `DESCRIBE HISTORY [schema.]table`: a managed table's versions.
    DescribeHistory {
        name: Vec<String>,
    },
    /// `OPTIMIZE TABLE name`: compact a managed table's small files.
    Optimize {
        name: Vec<String>,
    },
    /// `VACUUM [TABLE] name [RETAIN n HOURS]`: delete files no version needs.
    Vacuum {
        name: Vec<String>,
        retain_hours: Option<f64>,
    },
    /// Reflections: `ALTER TABLE ... CREATE AGGREGATE REFLECTION ...` and friends.
    Reflection(ReflectionStatement),
    /// `EXPLAIN REFLECTIONS query`: only the Reflections section of EXPLAIN.
    ExplainReflections(Box<DFStatement>),
}

/// Where and how a managed table is laid out: `PARTITION BY (...)` and
/// `WITH (source = 'lake', path = 'daily/')` of its `CREATE TABLE`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ManagedSpec {
    pub partition_by: Vec<String>,
    /// A writable source to create the table in; the warehouse when None.
    pub source: Option<String>,
    /// The folder inside the source (`<schema>/<table>/` when None).
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CreateSource {
    pub name: String,
    pub kind: String,
    pub options: Vec<(String, String)>,
    pub if_not_exists: bool,
    pub or_replace: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CreateTableFrom {
    /// `[schema, name]` or `[name]`.
    pub name: Vec<String>,
    pub source: String,
    pub path: String,
    pub format: Option<String>,
    pub options: Vec<(String, String)>,
    pub if_not_exists: bool,
    pub or_replace: bool,
}
