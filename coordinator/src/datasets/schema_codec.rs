//! Arrow schemas as catalog text: DataFusion's protobuf encoding, base64'd.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion_proto::protobuf;
use prost::Message;
use quarry_common::QuarryError;

use crate::error::CoordinatorError;

pub(crate) fn encode_schema(schema: &Schema) -> Result<String, QuarryError> {
    let proto: protobuf::Schema = schema
        .try_into()
        .map_err(|e| QuarryError::from(CoordinatorError::encode("a table schema", e)))?;
    Ok(STANDARD.encode(proto.encode_to_vec()))
}

pub fn decode_schema(text: &str) -> Result<SchemaRef, QuarryError> {
    let bytes = STANDARD.decode(text).map_err(|e| {
        QuarryError::from(CoordinatorError::StoredSchema(format!("not base64: {e}")))
    })?;
    let proto = protobuf::Schema::decode(bytes.as_slice())
        .map_err(|e| QuarryError::from(CoordinatorError::StoredSchema(e.to_string())))?;
    let schema: Schema =
        (&proto)
            .try_into()
            .map_err(|e: datafusion_proto::protobuf::FromProtoError| {
                QuarryError::from(CoordinatorError::StoredSchema(e.to_string()))
            })?;
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn schemas_round_trip() -> Result<(), QuarryError> {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new(
                "month",
                DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
                true,
            ),
        ]);
        assert_eq!(decode_schema(&encode_schema(&schema)?)?.as_ref(), &schema);
        Ok(())
    }
}
