//! Catalog metadata in the shapes Flight SQL clients expect (GetCatalogs, GetDbSchemas,
//! GetTables, GetTableTypes, GetSqlInfo, GetXdbcTypeInfo and the key commands).

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{Nullable, Searchable, SqlInfo, XdbcDataType};
use quarry_common::QuarryError;

use crate::error::CoordinatorError;
use crate::service::{QueryService, SessionHandle};
use quarry_catalog::CATALOG_NAME;

pub(super) const TABLE_TYPES: [&str; 3] = ["SYSTEM TABLE", "TABLE", "VIEW"];

pub(super) fn catalogs() -> Result<RecordBatch, QuarryError> {
    let mut builder = GetCatalogsBuilder::new();
    builder.append(CATALOG_NAME);
    builder.build().map_err(metadata_error)
}

/// Schemas the caller may see.
pub(super) fn schemas(
    service: &dyn QueryService,
    session: &SessionHandle,
    mut builder: GetDbSchemasBuilder,
) -> Result<RecordBatch, QuarryError> {
    for schema in service.schema_names(session) {
        builder.append(CATALOG_NAME, schema);
    }
    builder.build().map_err(metadata_error)
}

/// Tables and views the caller may read.
pub(super) async fn tables(
    service: &dyn QueryService,
    session: &SessionHandle,
    mut builder: GetTablesBuilder,
) -> Result<RecordBatch, QuarryError> {
    let include_schema = builder.include_schema();
    for table in service.tables(session, include_schema).await? {
        builder
            .append(
                CATALOG_NAME,
                &table.schema,
                &table.name,
                table.kind,
                &table.arrow_schema,
            )
            .map_err(metadata_error)?;
    }
    builder.build().map_err(metadata_error)
}

pub(super) static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Quarry");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    // 0 = no transactions.
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, true);
    builder.append(SqlInfo::SqlDdlTable, true);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlQuotedIdentifierCase, 3i32);
    builder.append(SqlInfo::SqlIdentifierCase, 2i32);
    builder.append(SqlInfo::SqlAllTablesAreSelectable, true);
    builder.build().map_err(|e| e.to_string())
});

/// A metadata builder's rows, or an encoding failure.
pub(super) fn built<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<RecordBatch, QuarryError> {
    batch.map_err(metadata_error)
}

pub(super) fn sql_info() -> Result<&'static SqlInfoData, QuarryError> {
    SQL_INFO.as_ref().map_err(metadata_error)
}

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    size: Option<i32>,
    prefix: Option<&str>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size: size,
        literal_prefix: prefix.map(str::to_string),
        literal_suffix: prefix.map(str::to_string),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

pub(super) static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None),
        xdbc("INTEGER", XdbcDataType::XdbcInteger, Some(10), None),
        xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19), None),
        xdbc("REAL", XdbcDataType::XdbcReal, Some(7), None),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'")),
        xdbc("BINARY", XdbcDataType::XdbcBinary, None, None),
        xdbc("DATE", XdbcDataType::XdbcDate, Some(10), Some("'")),
        xdbc("TIME", XdbcDataType::XdbcTime, None, Some("'")),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, Some("'")),
    ] {
        builder.append(info);
    }
    builder.build().map_err(|e| e.to_string())
});

pub(super) fn xdbc_types() -> Result<&'static XdbcTypeInfoData, QuarryError> {
    XDBC_TYPES.as_ref().map_err(metadata_error)
}

/// GetPrimaryKeys' result schema.
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The result schema of GetExportedKeys, GetImportedKeys and GetCrossReference.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Building a metadata answer failed: the builders and their schemas are ours.
fn metadata_error(e: impl std::fmt::Display) -> QuarryError {
    CoordinatorError::encode("Flight SQL metadata", e).into()
}
