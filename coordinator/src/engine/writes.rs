//! Statements that write managed tables: `CREATE TABLE` (with columns, or `AS SELECT`),
//! `INSERT INTO` / `INSERT OVERWRITE`, `COPY ... TO`, `OPTIMIZE`. Planning turns a write
//! into write tasks for the executors and a commit on the coordinator (`datasets::delta`);
//! where a table may be written is the catalog's (`catalog_ops/managed_tables.rs`).
//!
//! `INSERT [OVERWRITE] INTO s.t [(columns)] SELECT ... | VALUES ...` is planned here rather
//! than by DataFusion: its plan casts every value to the table's type where a value that
//! does not fit cannot be traced to its row and column. Literal VALUES are checked against
//! the table's types here, row by row; other values are cast by the write tasks, which name
//! the row and column they refuse (`quarry_common::table_write`). The target is resolved as
//! a table to write, not to read, so INSERT needs no SELECT.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    CreateMemoryTable, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Insert, Query, SetExpr, Statement as SqlStatement, TableObject, UnaryOperator,
    Value,
};
use quarry_catalog::{DatasetDefinition, Privilege, TableDefinition};
use quarry_common::table_write::{FileWriteExec, WriteTarget, WrittenRowsExec};
use quarry_common::{ErrorCode, QuarryError};

use super::catalog_ops::CreateMode;
use super::{Engine, Outcome, Session, message_batch};
use crate::access::source_of;
use crate::datasets::delta::{self, DELTA_FORMAT, MANAGED, managed_folder};
use crate::datasets::schema_codec::encode_schema;
use crate::error::catalog_error;
use crate::sql::copy::{CopyFrom, CopyTo};
use crate::sql::parser::ManagedSpec;
use crate::sql::words::object_name_parts;

/// A folder given as an absolute local path or a URL (COPY by an admin).
fn raw_folder(path: &str) -> Result<url::Url, QuarryError> {
    if path.contains("://") {
        return delta::folder_url(path);
    }
    let local = std::path::Path::new(path);
    if !local.is_absolute() {
        return Err(QuarryError::invalid(format!(
            "COPY TO '{path}': give an absolute path, a URL, or a source: COPY ... TO source 'path'"
        )));
    }
    url::Url::from_directory_path(local)
        .map_err(|_| QuarryError::invalid(format!("COPY TO '{path}' is not a usable path")))
}

/// INSERT and DELETE, which managed tables take.
pub(super) fn is_write(dml: &DmlStatement) -> bool {
    matches!(dml.op, WriteOp::Insert(_) | WriteOp::Delete)
}

impl Engine {
    /// INSERT needs the INSERT privilege on a managed table, DELETE and INSERT OVERWRITE
    /// (which remove rows) ALTER; tables over files in sources are read-only whoever asks.
    pub(super) fn require_write(
        &self,
        session: &Session,
        dml: &DmlStatement,
    ) -> Result<(), QuarryError> {
        let (schema, name) = session.dataset_name(&dml.table_name)?;
        let privilege = match dml.op {
            WriteOp::Insert(InsertOp::Append) => Privilege::Insert,
            _ => Privilege::Alter,
        };
        self.require_write_to(session, &schema, &name, privilege)
    }

    pub(super) fn require_write_to(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        privilege: Privilege,
    ) -> Result<(), QuarryError> {
        let actor = self.access_for(session);
        let record = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .map_err(catalog_error)?
            .map(|stored| stored.record);
        let Some(record) = record else {
            return Err(QuarryError::not_found(format!(
                "table {schema}.{name} does not exist"
            )));
        };
        actor.require_dataset(privilege, schema, name, source_of(&record))?;
        if managed_folder(&record).is_none() {
            return Err(QuarryError::invalid(format!(
                "{schema}.{name} is not a managed table: tables over files in a source are \
                 read-only; create a managed table with CREATE TABLE ... AS SELECT"
            )));
        }
        Ok(())
    }

    /// `CREATE TABLE s.t (columns) [PARTITION BY (...)]` or `... AS SELECT`: a new
    /// managed table in the warehouse, then (for AS SELECT) an insert of the query's rows.
    pub(super) async fn create_managed(
        self: &Arc<Self>,
        session: &Arc<Session>,
        state: &SessionState,
        create: CreateMemoryTable,
        spec: ManagedSpec,
    ) -> Result<Outcome, QuarryError> {
        if create.temporary {
            return Err(QuarryError::new(
                ErrorCode::Unimplemented,
                "Quarry does not support temporary tables",
            ));
        }
        let (schema, name) = session.dataset_name(&create.name)?;
        let actor = self.access_for(session);
        self.catalog.require_schema(&schema)?;
        actor.require_schema(Privilege::CreateTable, &schema)?;
        let mode = CreateMode::from_flags(create.if_not_exists, create.or_replace);
        if self
            .catalog
            .check_existing(&actor, &schema, &name, mode, false)?
            .is_some()
        {
            let batch =
                message_batch("result", &[format!("Table {schema}.{name} already exists")])?;
            return Ok(Outcome::Rows(batch.schema(), vec![batch]));
        }
        if mode == CreateMode::OrReplace {
            self.catalog
                .drop_dataset_and_files(&actor, &schema, &name, Some("table"), true, None)
                .await?;
        }
        let table_schema = delta::storable_schema(create.input.schema().as_arrow())?;
        let folder = match &spec.source {
            None => self.datasets.managed_location(&schema, &name)?,
            Some(source) => {
                let path = spec
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("{schema}/{name}/"));
                self.catalog.source_folder(&actor, source, &path)?
            }
        };
        let partition_by = spec.partition_by;
        let runtime = Arc::clone(self.datasets.runtime());
        // No catalog record names this folder: whatever is in it was left by a failed
        // create or an interrupted drop.
        delta::purge(&runtime, &folder).await?;
        delta::create_table(&runtime, &folder, &name, &table_schema, &partition_by).await?;
        let definition = TableDefinition {
            source: spec.source,
            path: spec.path,
            location: folder.to_string(),
            format: DELTA_FORMAT.to_string(),
            options: [(MANAGED.to_string(), "true".to_string())].into(),
            file_extension: ".parquet".to_string(),
            partition_columns: partition_by,
            arrow_schema: encode_schema(&table_schema)?,
        };
        if let Err(e) = self.catalog.store_dataset(
            &schema,
            &name,
            DatasetDefinition::Table(definition),
            CreateMode::Create,
        ) {
            let _ = delta::purge(&runtime, &folder).await;
            return Err(e.into());
        }
        self.catalog.grant_to_creator(&actor, &schema, &name)?;
        if matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(e) if !e.produce_one_row) {
            let batch = message_batch("result", &[format!("Table {schema}.{name} created")])?;
            return Ok(Outcome::Rows(batch.schema(), vec![batch]));
        }
        let planned = self
            .plan_table_insert(
                state,
                &schema,
                &name,
                create.input.as_ref().clone(),
                &[],
                InsertOp::Append,
            )
            .await;
        match planned {
            Ok(insert) => Ok(Outcome::Created(
                Box::new(insert),
                super::CreatedTable {
                    actor,
                    schema,
                    name,
                },
            )),
            Err(e) => {
                self.catalog
                    .drop_dataset_and_files(&actor, &schema, &name, Some("table"), true, None)
                    .await?;
                Err(e)
            }
        }
    }

    /// An insert of `input`'s rows into the named `columns` (all, by position, when none
    /// are named; the others get NULL). The types are left as the query gives them: the
    /// write tasks cast each value and refuse one that does not fit by row and column.
    pub(super) async fn plan_table_insert(
        &self,
        state: &SessionState,
        schema: &str,
        name: &str,
        input: LogicalPlan,
        columns: &[String],
        op: InsertOp,
    ) -> Result<Outcome, QuarryError> {
        let provider = self
            .datasets
            .provider(schema, name)
            .await?
            .ok_or_else(|| QuarryError::not_found(format!("table {schema}.{name} vanished")))?;
        let table_schema = provider.schema();
        let given = input.schema().columns();
        let positions = insert_positions(&table_schema, columns, given.len())?;
        let exprs = positions
            .iter()
            .zip(table_schema.fields())
            .map(|(position, field)| {
                let value = match position {
                    Some(i) => Expr::Column(given[*i].clone()),
                    None => Expr::Literal(ScalarValue::try_from(field.data_type())?, None),
                };
                Ok(value.alias(field.name()))
            })
            .collect::<datafusion::error::Result<Vec<Expr>>>()?;
        let projected = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
        let plan = LogicalPlanBuilder::insert_into(
            projected,
            TableReference::partial(schema, name),
            provider_as_source(provider),
            op,
        )?
        .build()?;
        self.plan_query(state, &plan).await
    }

    /// `COPY (query) TO ...`: the query's rows as files, written by the tasks that
    /// compute them; answers the number of rows.
    pub(super) async fn plan_copy(
        &self,
        session: &Arc<Session>,
        copy: CopyTo,
    ) -> Result<Outcome, QuarryError> {
        let actor = self.access_for(session);
        let folder = match &copy.source {
            Some(source) => self.catalog.source_folder(&actor, source, &copy.path)?,
            None => {
                actor.require_admin("COPY to a raw path or URL; COPY into a writable source")?;
                raw_folder(&copy.path)?
            }
        };
        let query = match copy.from {
            CopyFrom::Query(query) => query,
            CopyFrom::Table(name) => {
                let text = format!("SELECT * FROM {name}");
                datafusion::sql::sqlparser::parser::Parser::new(
                    &datafusion::sql::sqlparser::dialect::GenericDialect {},
                )
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_query())
                .map_err(|e| QuarryError::invalid(e.to_string()))?
            }
        };
        let state = self.query_state(session)?;
        let statement = DFStatement::Statement(Box::new(SqlStatement::Query(query)));
        let plan = state.statement_to_plan(statement).await?;
        let input = self.physical_plan(&state, &plan).await?;
        let schema = input.schema();
        for column in &copy.partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(QuarryError::invalid(format!(
                    "PARTITION BY names '{column}', which the query does not return"
                )));
            }
        }
        let target = WriteTarget {
            base_url: folder.to_string(),
            partition_by: copy.partition_by,
            format: copy.format.as_str().to_string(),
            compression: copy.compression,
        };
        let write = FileWriteExec::new(input, target, schema)?;
        let gathered = Arc::new(CoalescePartitionsExec::new(Arc::new(write)));
        let plan: Arc<dyn ExecutionPlan> = Arc::new(WrittenRowsExec::new(gathered));
        self.plan_physical(&state, plan)
    }

    /// `OPTIMIZE TABLE`: small files compacted by the executors, one commit.
    pub(super) async fn plan_optimize(
        &self,
        session: &Arc<Session>,
        name: &[String],
    ) -> Result<Outcome, QuarryError> {
        let (schema, table) = session.dataset_name(&super::ddl::reference_of(name)?)?;
        let actor = self.access_for(session);
        let (record, _) = self
            .catalog
            .managed_table(&actor, &schema, &table, Privilege::Alter)?;
        let provider = self.datasets.provider_of(record).await?;
        let delta = provider
            .downcast_ref::<delta::DeltaTable>()
            .ok_or_else(|| {
                QuarryError::invalid(format!("{schema}.{table} is not a managed table"))
            })?;
        let state = self.query_state(session)?;
        let plan = delta.optimize_plan(&state).await?;
        self.plan_physical(&state, plan)
    }

    pub(super) async fn plan_insert(
        &self,
        session: &Arc<Session>,
        insert: Insert,
    ) -> Result<Outcome, QuarryError> {
        let Insert {
            table: TableObject::TableName(table),
            source: Some(query),
            columns,
            overwrite,
            ..
        } = &insert
        else {
            return Err(unsupported_insert());
        };
        let plain = insert.or.is_none()
            && !insert.ignore
            && insert.table_alias.is_none()
            && insert.assignments.is_empty()
            && insert.partitioned.is_none()
            && insert.after_columns.is_empty()
            && insert.on.is_none()
            && insert.returning.is_none()
            && insert.output.is_none()
            && !insert.replace_into
            && insert.insert_alias.is_none()
            && insert.settings.is_none()
            && insert.format_clause.is_none()
            && insert.multi_table_insert_type.is_none();
        if !plain {
            return Err(unsupported_insert());
        }
        let reference = super::ddl::reference_of(&object_name_parts(table))?;
        let (schema, name) = session.dataset_name(&reference)?;
        let (op, privilege) = if *overwrite {
            (InsertOp::Overwrite, Privilege::Alter)
        } else {
            (InsertOp::Append, Privilege::Insert)
        };
        self.require_write_to(session, &schema, &name, privilege)?;
        let table_schema = self
            .datasets()
            .provider(&schema, &name)
            .await?
            .ok_or_else(|| QuarryError::not_found(format!("table {schema}.{name} does not exist")))?
            .schema();
        let named: Vec<String> = columns
            .iter()
            .map(|column| object_name_parts(column).join("."))
            .collect();
        let state = self.query_state(session)?;
        let input = match literal_values(query, &table_schema, &named)? {
            Some(values) => values,
            None => {
                let statement =
                    DFStatement::Statement(Box::new(SqlStatement::Query(query.clone())));
                state.statement_to_plan(statement).await?
            }
        };
        self.plan_table_insert(&state, &schema, &name, input, &named, op)
            .await
    }
}

fn unsupported_insert() -> QuarryError {
    QuarryError::new(
        ErrorCode::Unimplemented,
        "this form of INSERT is not supported: INSERT [OVERWRITE] INTO t [(columns)] \
         SELECT ... | VALUES ... is",
    )
}

/// For each column of the table, the position of the query's column that fills it (None:
/// NULL). `named` lists the columns the INSERT names; none means all, in order.
pub(super) fn insert_positions(
    table: &Schema,
    named: &[String],
    given: usize,
) -> Result<Vec<Option<usize>>, QuarryError> {
    let names = || {
        table
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted = if named.is_empty() {
        table.fields().len()
    } else {
        named.len()
    };
    if given != wanted {
        return Err(QuarryError::invalid(format!(
            "the INSERT gives {given} values for {wanted} columns ({})",
            if named.is_empty() {
                names()
            } else {
                named.join(", ")
            }
        )));
    }
    if named.is_empty() {
        return Ok((0..given).map(Some).collect());
    }
    let mut positions = vec![None; table.fields().len()];
    for (i, column) in named.iter().enumerate() {
        let index = table.index_of(column).map_err(|_| {
            QuarryError::invalid(format!(
                "the table has no column '{column}'; its columns are {}",
                names()
            ))
        })?;
        if positions[index].replace(i).is_some() {
            return Err(QuarryError::invalid(format!(
                "column '{column}' is named twice in the INSERT"
            )));
        }
    }
    Ok(positions)
}

/// `VALUES` of plain literals as rows of the table's types, each value checked on its
/// own; None when the query is anything else (it is planned as a query then).
fn literal_values(
    query: &Query,
    table: &Schema,
    named: &[String],
) -> Result<Option<LogicalPlan>, QuarryError> {
    let SetExpr::Values(values) = query.body.as_ref() else {
        return Ok(None);
    };
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || values.rows.is_empty()
    {
        return Ok(None);
    }
    // The table column each VALUES column fills; a mismatch is refused when planned.
    let targets: Option<Vec<(&str, &DataType)>> = if named.is_empty() {
        Some(
            table
                .fields()
                .iter()
                .map(|f| (f.name().as_str(), f.data_type()))
                .collect(),
        )
    } else {
        named
            .iter()
            .map(|n| {
                table
                    .field_with_name(n)
                    .ok()
                    .map(|f| (f.name().as_str(), f.data_type()))
            })
            .collect()
    };
    let Some(targets) = targets else {
        return Ok(None);
    };
    let mut rows = Vec::with_capacity(values.rows.len());
    for (i, row) in values.rows.iter().enumerate() {
        if row.content.len() != targets.len() {
            return Ok(None);
        }
        let mut cells = Vec::with_capacity(targets.len());
        for (cell, (name, data_type)) in row.content.iter().zip(&targets) {
            let Some(value) = literal(cell) else {
                return Ok(None);
            };
            let value = value.cast_to(data_type).map_err(|_| {
                QuarryError::invalid(format!(
                    "row {}: {cell} does not fit column '{name}' of type {data_type}; \
                     nothing was written",
                    i + 1
                ))
            })?;
            cells.push(Expr::Literal(value, None));
        }
        rows.push(cells);
    }
    Ok(Some(LogicalPlanBuilder::values(rows)?.build()?))
}

/// A number, string, boolean or NULL literal (a negative number too) as a value.
fn literal(expr: &SqlExpr) -> Option<ScalarValue> {
    let (value, negative) = match expr {
        SqlExpr::Value(v) => (&v.value, false),
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            SqlExpr::Value(v) if matches!(v.value, Value::Number(..)) => (&v.value, true),
            _ => return None,
        },
        _ => return None,
    };
    Some(match value {
        Value::Number(text, _) => {
            let text = if negative {
                format!("-{text}")
            } else {
                text.clone()
            };
            // Integers as BIGINT, others as DOUBLE: the types DataFusion gives them.
            match text.parse::<i64>() {
                Ok(n) => ScalarValue::Int64(Some(n)),
                Err(_) => ScalarValue::Float64(Some(text.parse::<f64>().ok()?)),
            }
        }
        Value::SingleQuotedString(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Value::Null => ScalarValue::Null,
        _ => return None,
    })
}
