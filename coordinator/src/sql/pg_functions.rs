//! The PostgreSQL functions that PostgreSQL clients call on their own (psql, psycopg,
//! SQLAlchemy, DBeaver): `version()`, `current_schema()`, `current_setting()`,
//! `pg_typeof()`, `to_regtype()`, `pg_get_userbyid()` and friends, answered for the
//! session that runs the query. datafusion-pg-catalog provides those that do not depend on
//! the session (`format_type`, `has_table_privilege`, `pg_get_expr`, ...).
//!
//! All of them are constant for a query, so the optimizer folds them before the plan is
//! cut into stages: executors never see them.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, ListArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    create_udf,
};
use datafusion_pg_catalog::pg_catalog as pg;

/// The PostgreSQL version clients are told, and choose their SQL by.
pub const SERVER_VERSION: &str = "16.6";
const SERVER_VERSION_NUM: &str = "160006";

/// PostgreSQL's settings as this server has them before a client changes any (names in
/// lower case): what `SHOW` over the PostgreSQL door and `current_setting()` answer. The
/// session's own (`search_path`, `session_authorization`, `is_superuser`) are not here.
pub const SETTING_DEFAULTS: &[(&str, &str)] = &[
    ("server_version", SERVER_VERSION),
    ("server_version_num", SERVER_VERSION_NUM),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("application_name", ""),
    ("max_identifier_length", "63"),
    ("bytea_output", "hex"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("client_min_messages", "notice"),
];

/// `version()`'s answer.
pub(crate) fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Quarry {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// What the functions answer for: the session's user, default schema and the settings it
/// changed (`quarry.*`, `datafusion.*`).
pub(crate) struct SessionFacts {
    pub user: String,
    pub schema: String,
    pub settings: std::collections::BTreeMap<String, String>,
}

/// Register the PostgreSQL functions in a query's planning state: those that answer for
/// the session made for it, the others made once per process.
pub(crate) fn register(state: &mut SessionState, facts: &SessionFacts) -> Result<()> {
    static SHARED: OnceLock<Vec<Arc<ScalarUDF>>> = OnceLock::new();
    let text = |name: &str, value: String| constant(name, 0, ScalarValue::Utf8(Some(value)));
    let udfs = [
        text("current_schema", facts.schema.clone()),
        text("current_database", quarry_catalog::CATALOG_NAME.to_string()),
        text("session_user", facts.user.clone()),
        text("current_user", facts.user.clone()),
        constant(
            "pg_get_userbyid",
            1,
            ScalarValue::Utf8(Some(facts.user.clone())),
        ),
        current_schemas(&facts.schema),
        current_setting(facts),
    ];
    for udf in SHARED.get_or_init(shared).iter().cloned() {
        state.register_udf(udf)?;
    }
    for udf in udfs {
        state.register_udf(Arc::new(udf))?;
    }
    Ok(())
}

/// The functions that answer the same for every session.
fn shared() -> Vec<Arc<ScalarUDF>> {
    let mut udfs = vec![
        constant("version", 0, ScalarValue::Utf8(Some(version_string()))),
        ScalarUDF::new_from_impl(PgTypeOf::new()),
        ScalarUDF::new_from_impl(JsonBuildObject::new()),
        constant("pg_get_serial_sequence", 2, ScalarValue::Utf8(None)),
        constant("pg_type_is_visible", 1, ScalarValue::Boolean(Some(true))),
        constant("pg_get_indexdef", 1, ScalarValue::Utf8(None)),
        constant("pg_get_function_result", 1, ScalarValue::Utf8(None)),
        constant("pg_get_function_arguments", 1, ScalarValue::Utf8(None)),
        constant(
            "pg_get_function_identity_arguments",
            1,
            ScalarValue::Utf8(None),
        ),
        constant("pg_get_viewdef", 1, ScalarValue::Utf8(None)),
        constant("pg_get_triggerdef", 1, ScalarValue::Utf8(None)),
        constant("pg_get_functiondef", 1, ScalarValue::Utf8(None)),
        constant(
            "pg_function_is_visible",
            1,
            ScalarValue::Boolean(Some(true)),
        ),
        constant("obj_description", 2, ScalarValue::Utf8(None)),
        constant("col_description", 2, ScalarValue::Utf8(None)),
        constant("shobj_description", 2, ScalarValue::Utf8(None)),
        int_vector("pg_int2vector", false),
        int_vector("pg_subscripts", true),
        to_regtype(),
        pg::create_pg_table_is_visible(),
        pg::format_type::create_format_type_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        pg::pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::quote_ident_udf::create_quote_ident_udf(),
        pg::quote_ident_udf::create_parse_ident_udf(),
        pg::array_bounds_udf::create_array_upper_udf(),
        pg::array_bounds_udf::create_array_lower_udf(),
    ];
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
    ] {
        udfs.push(pg::has_privilege_udf::create_has_privilege_udf(name));
    }
    udfs.into_iter().map(Arc::new).collect()
}

/// A function answering one value whatever its arguments.
fn constant(name: &str, args: usize, value: ScalarValue) -> ScalarUDF {
    let signature = if args == 0 {
        Signature::exact(vec![], Volatility::Stable)
    } else {
        // Catalog functions come in several arities (`pg_get_indexdef(oid)` and
        // `pg_get_indexdef(oid, column, pretty)`): any number of arguments will do.
        Signature::variadic_any(Volatility::Stable)
    };
    ScalarUDF::new_from_impl(Constant {
        name: name.to_string(),
        signature,
        value,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: String,
    signature: Signature,
    value: ScalarValue,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }

    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(
            self.value.clone(),
            None,
        )))
    }
}

/// `current_schemas(include_implicit)`: the search path.
fn current_schemas(schema: &str) -> ScalarUDF {
    let schema = schema.to_string();
    create_udf(
        "current_schemas",
        vec![DataType::Boolean],
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let implicit = match args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(b)))) => *b,
                _ => false,
            };
            let mut names = vec![schema.clone()];
            if implicit {
                names.insert(0, "pg_catalog".to_string());
            }
            let values: ArrayRef = Arc::new(StringArray::from(names));
            let list = ListArray::try_new(
                Arc::new(Field::new("item", DataType::Utf8, true)),
                datafusion::arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                values,
                None,
            )?;
            Ok(ColumnarValue::Scalar(ScalarValue::List(Arc::new(list))))
        }),
    )
}

/// `current_setting(name)`: the session's settings, its search path, else the server's
/// defaults; NULL for what nobody knows.
fn current_setting(facts: &SessionFacts) -> ScalarUDF {
    let settings = facts.settings.clone();
    let schema = facts.schema.clone();
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let lookup = |name: Option<&str>| {
                let name = name?;
                if name.eq_ignore_ascii_case("search_path") {
                    return Some(schema.clone());
                }
                settings
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(SETTING_DEFAULTS.iter().copied())
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
            };
            Ok(match args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Utf8(name))) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(lookup(name.as_deref())))
                }
                Some(ColumnarValue::Array(array)) => {
                    let names = datafusion::common::cast::as_string_array(array)?;
                    ColumnarValue::Array(Arc::new(
                        names.iter().map(lookup).collect::<StringArray>(),
                    ))
                }
                _ => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            })
        }),
    )
}

/// The PostgreSQL name of an Arrow type, as `pg_typeof` shows it.
fn pg_type_name(data_type: &DataType) -> String {
    match arrow_pg::datatypes::into_pg_type(data_type) {
        Ok(t) => match t.name() {
            "int2" => "smallint".to_string(),
            "int4" => "integer".to_string(),
            "int8" => "bigint".to_string(),
            "float4" => "real".to_string(),
            "float8" => "double precision".to_string(),
            "bool" => "boolean".to_string(),
            "varchar" => "character varying".to_string(),
            "timestamp" => "timestamp without time zone".to_string(),
            "timestamptz" => "timestamp with time zone".to_string(),
            other => other.to_string(),
        },
        Err(_) => "unknown".to_string(),
    }
}

/// `pg_typeof(x)`: the type of its argument, known when the query is planned.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeOf {
    signature: Signature,
}

impl PgTypeOf {
    fn new() -> Self {
        PgTypeOf {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgTypeOf {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = args
            .arg_fields
            .first()
            .map(|f| pg_type_name(f.data_type()))
            .unwrap_or_else(|| "unknown".to_string());
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match args.first().map(|a| info.get_data_type(a)) {
            Some(Ok(data_type)) => Ok(ExprSimplifyResult::Simplified(Expr::Literal(
                ScalarValue::Utf8(Some(pg_type_name(&data_type))),
                None,
            ))),
            _ => Ok(ExprSimplifyResult::Original(args)),
        }
    }
}

/// `to_regtype(name)`: the type's name when PostgreSQL knows it, else NULL.
fn to_regtype() -> ScalarUDF {
    let known = |name: &str| -> Option<String> {
        let name = name.trim().trim_start_matches("pg_catalog.").to_lowercase();
        let name = match name.as_str() {
            "int" | "integer" | "int4" => "integer",
            "bigint" | "int8" => "bigint",
            "smallint" | "int2" => "smallint",
            "real" | "float4" => "real",
            "double precision" | "float8" | "float" => "double precision",
            "text" => "text",
            "varchar" | "character varying" => "character varying",
            "bool" | "boolean" => "boolean",
            "date" => "date",
            "timestamp" | "timestamp without time zone" => "timestamp without time zone",
            "timestamptz" | "timestamp with time zone" => "timestamp with time zone",
            "numeric" | "decimal" => "numeric",
            "bytea" => "bytea",
            "json" => "json",
            "jsonb" => "jsonb",
            "uuid" => "uuid",
            "interval" => "interval",
            "time" => "time without time zone",
            "oid" => "oid",
            "regclass" => "regclass",
            "regtype" => "regtype",
            "name" => "name",
            "char" => "\"char\"",
            _ => return None,
        };
        Some(name.to_string())
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            Ok(match args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Utf8(name))) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(name.as_deref().and_then(known)))
                }
                Some(ColumnarValue::Array(array)) => {
                    let names = datafusion::common::cast::as_string_array(array)?;
                    ColumnarValue::Array(Arc::new(
                        names
                            .iter()
                            .map(|n| n.and_then(known))
                            .collect::<StringArray>(),
                    ))
                }
                _ => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            })
        }),
    )
}

/// `json_build_object(key, value, ...)`: the pairs as a JSON object, as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn json_of(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(n)) => Value::from(*n),
        ScalarValue::Int16(Some(n)) => Value::from(*n),
        ScalarValue::Int32(Some(n)) => Value::from(*n),
        ScalarValue::Int64(Some(n)) => Value::from(*n),
        ScalarValue::UInt8(Some(n)) => Value::from(*n),
        ScalarValue::UInt16(Some(n)) => Value::from(*n),
        ScalarValue::UInt32(Some(n)) => Value::from(*n),
        ScalarValue::UInt64(Some(n)) => Value::from(*n),
        ScalarValue::Float32(Some(n)) => Value::from(*n),
        ScalarValue::Float64(Some(n)) => Value::from(*n),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in columns.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = match pair.get(1) {
                    Some(array) => json_of(&ScalarValue::try_from_array(array, row)?),
                    None => serde_json::Value::Null,
                };
                let key = match json_of(&key) {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, value);
            }
            out.push(Some(serde_json::Value::Object(object).to_string()));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `pg_int2vector(v)`: an `int2vector` column (`pg_index.indkey`, `pg_constraint.conkey`,
/// kept as text like `1 2` or `{1,2}`) as an array, so `unnest` takes it; with
/// `subscripts`, the positions 1..n of its elements instead (`generate_subscripts`).
fn int_vector(name: &str, subscripts: bool) -> ScalarUDF {
    let item = Arc::new(Field::new("item", DataType::Int16, true));
    let list_field = Arc::clone(&item);
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::List(item),
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = match args.first() {
                Some(ColumnarValue::Array(a)) => a.len(),
                _ => 1,
            };
            let text = match args.first() {
                Some(arg) => arg.to_array(rows)?,
                None => return Ok(ColumnarValue::Scalar(ScalarValue::Null)),
            };
            let text = datafusion::common::cast::as_string_array(&text)?;
            let mut builder = datafusion::arrow::array::ListBuilder::new(
                datafusion::arrow::array::Int16Builder::new(),
            )
            .with_field(Arc::clone(&list_field));
            for value in text.iter() {
                match value {
                    None => builder.append_null(),
                    Some(v) => {
                        let numbers = v
                            .split([' ', ',', '{', '}'])
                            .filter(|p| !p.is_empty())
                            .filter_map(|p| p.parse::<i16>().ok());
                        for (i, n) in numbers.enumerate() {
                            builder.values().append_value(if subscripts {
                                i16::try_from(i + 1).unwrap_or(i16::MAX)
                            } else {
                                n
                            });
                        }
                        builder.append(true);
                    }
                }
            }
            Ok(ColumnarValue::Array(Arc::new(builder.finish())))
        }),
    )
}
