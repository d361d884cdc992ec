//! `INSERT [OVERWRITE] INTO s.t [(columns)] SELECT ... | VALUES ...` into a managed table,
//! planned here rather than by DataFusion: its plan casts every value to the table's type
//! where a value that does not fit cannot be traced to its row and column. Literal VALUES
//! are checked against the table's types here, row by row; other values are cast by the
//! write tasks, which name the row and column they refuse (`quarry_common::table_write`).
//! The target is resolved as a table to write, not to read, so INSERT needs no SELECT.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Insert, Query, SetExpr, Statement as SqlStatement, TableObject, UnaryOperator,
    Value,
};
use quarry_catalog::Privilege;
use quarry_common::{ErrorCode, QuarryError};

use super::{Engine, Outcome, Session};
use crate::sql::words::object_name_parts;

fn unsupported_insert() -> QuarryError {
    QuarryError::new(
        ErrorCode::Unimplemented,
        "this form of INSERT is not supported: INSERT [OVERWRITE] INTO t [(columns)] \
         SELECT ... | VALUES ... is",
    )
}

impl Engine {
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
