//! Catalog queries that PostgreSQL clients send on their own (psql's `\d` family,
//! SQLAlchemy's reflection), rewritten into SQL that DataFusion plans: first by
//! datafusion-pg-catalog's parser (`::regclass` casts, `OPERATOR(pg_catalog.~)`, ...), then
//! by the few rules below for what it leaves. The engine answers them from `pg_catalog`
//! like any query.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, ObjectName, Query, SelectItem, SetExpr, Value, visit_expressions_mut,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

/// SQL a PostgreSQL client sends about the catalog, in a form DataFusion plans. Other SQL
/// is passed on untouched (the engine's own parser reads Quarry's extensions).
pub(super) fn adapt(sql: &str) -> String {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    let lower = sql.to_ascii_lowercase();
    let catalog_query = ["pg_", "::reg", "operator(", "information_schema", "collate"]
        .iter()
        .any(|k| lower.contains(k));
    if !catalog_query {
        return sql.to_string();
    }
    match PARSER
        .get_or_init(PostgresCompatibilityParser::new)
        .parse(sql)
    {
        Ok(mut statements) if statements.len() == 1 => {
            for statement in &mut statements {
                let _ = visit_expressions_mut(statement, |expr| {
                    rewrite(expr);
                    ControlFlow::<()>::Continue(())
                });
            }
            statements
                .into_iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        }
        _ => sql.to_string(),
    }
}

/// `name(arg)`.
fn call(name: &str, arg: Expr) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// The one column a query selects, if it selects one.
fn only_column(query: &mut Query) -> Option<&mut Expr> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    match select.projection.as_mut_slice() {
        [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] => {
            Some(item)
        }
        _ => None,
    }
}

/// Functions that aggregate already.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "first_value",
    "last_value",
    "json_agg",
];

/// Columns of `pg_index` and `pg_constraint` that PostgreSQL keeps as `int2vector` and
/// datafusion-pg-catalog as text.
const INT_VECTORS: &[&str] = &["indkey", "conkey", "confkey", "indclass", "indoption"];

/// Columns PostgreSQL's catalog has and datafusion-pg-catalog's does not.
const MISSING: &[&str] = &["reloptions", "relacl"];

fn last_name(parts: &[Ident]) -> String {
    parts
        .last()
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default()
}

/// One expression, rewritten where DataFusion would refuse it:
/// - `ARRAY(SELECT x FROM ...)` (psql's `\du`) as `(SELECT array_agg(x) FROM ...)`;
/// - a scalar subquery of one unaggregated column as `(SELECT first_value(x) ...)`:
///   PostgreSQL errs at run time when such a subquery finds two rows, DataFusion refuses
///   to plan it at all; SQLAlchemy's column reflection is full of them, over tables with
///   at most one matching row;
/// - `unnest(indkey)` and `generate_subscripts(indkey, 1)` over the int2vector columns
///   as `unnest(pg_int2vector(indkey))` and `unnest(pg_subscripts(indkey))` (SQLAlchemy
///   lists keys and indexes so);
/// - columns datafusion-pg-catalog lacks as NULL.
fn rewrite(expr: &mut Expr) {
    match expr {
        Expr::Function(function) => {
            let name = function.name.to_string().to_ascii_lowercase();
            let name = name.rsplit('.').next().unwrap_or_default();
            if name == "array"
                && let FunctionArguments::Subquery(query) = &function.args
            {
                let mut query = query.clone();
                if let Some(item) = only_column(&mut query) {
                    *item = call("array_agg", item.clone());
                    *expr = Expr::Subquery(query);
                }
                return;
            }
            let FunctionArguments::List(list) = &function.args else {
                return;
            };
            let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) = list.args.first() else {
                return;
            };
            let column = match arg {
                Expr::Identifier(i) => i.value.to_ascii_lowercase(),
                Expr::CompoundIdentifier(parts) => last_name(parts),
                _ => return,
            };
            if !INT_VECTORS.contains(&column.as_str()) {
                return;
            }
            let arg = arg.clone();
            match name {
                "unnest" => *expr = call("unnest", call("pg_int2vector", arg)),
                "generate_subscripts" => *expr = call("unnest", call("pg_subscripts", arg)),
                _ => {}
            }
        }
        Expr::Subquery(query) => {
            let SetExpr::Select(select) = query.body.as_ref() else {
                return;
            };
            let grouped =
                !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
            if grouped || select.having.is_some() || query.limit_clause.is_some() {
                return;
            }
            if let Some(item) = only_column(query) {
                let aggregated = matches!(item, Expr::Function(f)
                    if AGGREGATES.iter().any(|a| f.name.to_string().eq_ignore_ascii_case(a)));
                if !aggregated {
                    *item = call("first_value", item.clone());
                }
            }
        }
        Expr::CompoundIdentifier(parts) if MISSING.contains(&last_name(parts).as_str()) => {
            *expr = Expr::Value(Value::Null.into());
        }
        _ => {}
    }
}
