//! Serialization of Quarry's own plan nodes inside DataFusion's protobuf plans.

use std::sync::Arc;

use arrow::datatypes::Schema;
use bytes::Bytes;
use datafusion::common::{internal_datafusion_err, not_impl_err};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::parse_protobuf_partitioning;
use datafusion_proto::physical_plan::to_proto::serialize_partitioning;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::plan_chunks::ChunkingConverter;
use crate::shuffle_reader::{ShuffleLocation, ShuffleReaderExec};
use crate::stall::StallExec;
use crate::table_write::{FileWriteExec, WriteTarget};

#[derive(Clone, PartialEq, Message)]
pub struct ExtensionNode {
    #[prost(oneof = "extension_node::Kind", tags = "1, 2, 3")]
    pub kind: Option<extension_node::Kind>,
}

pub mod extension_node {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        ShuffleReader(super::ShuffleReaderNode),
        #[prost(message, tag = "2")]
        Stall(super::StallNode),
        #[prost(message, tag = "3")]
        FileWrite(super::FileWriteNode),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ShuffleReaderNode {
    #[prost(uint32, tag = "1")]
    pub stage_id: u32,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<protobuf::Schema>,
    #[prost(message, repeated, tag = "3")]
    pub partitions: Vec<PartitionPieces>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StallNode {
    #[prost(uint32, tag = "1")]
    pub partitions: u32,
    #[prost(bool, tag = "2")]
    pub with_column: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct FileWriteNode {
    #[prost(string, tag = "1")]
    pub base_url: String,
    #[prost(string, repeated, tag = "2")]
    pub partition_by: Vec<String>,
    #[prost(message, optional, tag = "3")]
    pub sink_schema: Option<protobuf::Schema>,
    #[prost(string, tag = "4")]
    pub format: String,
    #[prost(string, tag = "5")]
    pub compression: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PartitionPieces {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<ShuffleLocation>,
}

/// Encodes and decodes Quarry's extension nodes; everything else is DataFusion's.
#[derive(Debug, Default, Clone)]
pub struct QuarryCodec;

impl PhysicalExtensionCodec for QuarryCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = ExtensionNode::decode(buf)
            .map_err(|e| internal_datafusion_err!("malformed Quarry plan node: {e}"))?;
        match node.kind {
            Some(extension_node::Kind::ShuffleReader(reader)) => {
                let schema = reader
                    .schema
                    .as_ref()
                    .ok_or_else(|| internal_datafusion_err!("shuffle reader without schema"))?;
                let schema: Schema = schema.try_into()?;
                let partitions = reader.partitions.into_iter().map(|p| p.pieces).collect();
                Ok(Arc::new(ShuffleReaderExec::new(
                    reader.stage_id,
                    Arc::new(schema),
                    partitions,
                )))
            }
            Some(extension_node::Kind::Stall(stall)) => Ok(Arc::new(StallExec::new(
                stall.partitions as usize,
                stall.with_column,
            ))),
            Some(extension_node::Kind::FileWrite(write)) => {
                let [input] = inputs else {
                    return Err(internal_datafusion_err!("a file write has one input"));
                };
                let schema = write
                    .sink_schema
                    .as_ref()
                    .ok_or_else(|| internal_datafusion_err!("file write without schema"))?;
                let schema: Schema = schema.try_into()?;
                let target = WriteTarget {
                    base_url: write.base_url,
                    partition_by: write.partition_by,
                    format: write.format,
                    compression: write.compression,
                };
                Ok(Arc::new(FileWriteExec::new(
                    Arc::clone(input),
                    target,
                    Arc::new(schema),
                )?))
            }
            None => Err(internal_datafusion_err!("empty Quarry plan node")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let message = ExtensionNode {
                kind: Some(extension_node::Kind::ShuffleReader(ShuffleReaderNode {
                    stage_id: reader.stage_id(),
                    schema: Some(reader.schema().as_ref().try_into()?),
                    partitions: reader
                        .partitions()
                        .iter()
                        .map(|pieces| PartitionPieces {
                            pieces: pieces.clone(),
                        })
                        .collect(),
                })),
            };
            message
                .encode(buf)
                .map_err(|e| internal_datafusion_err!("encoding Quarry plan node: {e}"))?;
            return Ok(());
        }
        if let Some(stall) = node.downcast_ref::<StallExec>() {
            let message = ExtensionNode {
                kind: Some(extension_node::Kind::Stall(StallNode {
                    partitions: stall.partitions() as u32,
                    with_column: stall.with_column(),
                })),
            };
            message
                .encode(buf)
                .map_err(|e| internal_datafusion_err!("encoding Quarry plan node: {e}"))?;
            return Ok(());
        }
        if let Some(write) = node.downcast_ref::<FileWriteExec>() {
            let message = ExtensionNode {
                kind: Some(extension_node::Kind::FileWrite(FileWriteNode {
                    base_url: write.target().base_url.clone(),
                    partition_by: write.target().partition_by.clone(),
                    sink_schema: Some(write.sink_schema().as_ref().try_into()?),
                    format: write.target().format.clone(),
                    compression: write.target().compression.clone(),
                })),
            };
            message
                .encode(buf)
                .map_err(|e| internal_datafusion_err!("encoding Quarry plan node: {e}"))?;
            return Ok(());
        }
        not_impl_err!("Quarry cannot ship {} to executors", node.name())
    }
}

/// A physical plan as bytes, with Quarry's extension nodes, in pieces any depth of plan
/// decodes from (see [`crate::plan_chunks`]).
pub fn plan_to_bytes(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    physical_plan_to_bytes_with_proto_converter(plan, &QuarryCodec, &ChunkingConverter::default())
}

/// A physical plan from bytes, resolved against `ctx` (functions, object stores); refused
/// when it nests deeper than [`crate::plan_chunks::MAX_DECODE_LEVELS`].
pub fn plan_from_bytes(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    physical_plan_from_bytes_with_proto_converter(
        bytes,
        ctx,
        &QuarryCodec,
        &ChunkingConverter::default(),
    )
}

/// A partitioning as bytes (empty for "one partition").
pub fn partitioning_to_bytes(partitioning: Option<&Partitioning>) -> Result<Vec<u8>> {
    match partitioning {
        None => Ok(Vec::new()),
        Some(p) => Ok(
            serialize_partitioning(p, &QuarryCodec, &ChunkingConverter::default())?.encode_to_vec(),
        ),
    }
}

/// A partitioning from bytes, its expressions bound to `input_schema`.
pub fn partitioning_from_bytes(
    bytes: &[u8],
    input_schema: &Schema,
    ctx: &TaskContext,
) -> Result<Option<Partitioning>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let proto = protobuf::Partitioning::decode(bytes)
        .map_err(|e| internal_datafusion_err!("malformed partitioning: {e}"))?;
    let decode_ctx = PhysicalPlanDecodeContext::new(ctx, &QuarryCodec);
    parse_protobuf_partitioning(
        Some(&proto),
        &decode_ctx,
        input_schema,
        &ChunkingConverter::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ExchangeTicket;
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn reader() -> ShuffleReaderExec {
        let piece = |task: u32, executor: &str| ShuffleLocation {
            executor_id: executor.to_string(),
            endpoint: format!("http://{executor}:1"),
            ticket: Some(ExchangeTicket {
                query_id: "q".to_string(),
                stage_id: 3,
                partition: task,
                attempt: 1,
                output_partition: 0,
            }),
            // A piece sent back with its task's result travels inside the plan.
            inline: (task == 1).then(|| bytes::Bytes::from_static(b"an IPC stream")),
        };
        ShuffleReaderExec::new(
            3,
            schema(),
            vec![vec![piece(0, "a"), piece(1, "b")], vec![piece(1, "b")]],
        )
    }

    #[test]
    fn shuffle_reader_round_trips() -> Result<()> {
        let ctx = SessionContext::new();
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(CoalescePartitionsExec::new(Arc::new(reader())));
        let bytes = plan_to_bytes(Arc::clone(&plan))?;
        let back = plan_from_bytes(&bytes, &ctx.task_ctx())?;
        assert_eq!(
            displayable(plan.as_ref()).indent(true).to_string(),
            displayable(back.as_ref()).indent(true).to_string()
        );
        let decoded = back.children()[0]
            .downcast_ref::<ShuffleReaderExec>()
            .expect("a shuffle reader");
        assert_eq!(decoded.stage_id(), 3);
        assert_eq!(decoded.partitions(), reader().partitions());
        assert_eq!(decoded.schema(), schema());
        Ok(())
    }

    #[test]
    fn hash_partitioning_round_trips() -> Result<()> {
        let ctx = SessionContext::new();
        let partitioning = Partitioning::Hash(vec![Arc::new(Column::new("city", 0))], 4);
        let bytes = partitioning_to_bytes(Some(&partitioning))?;
        let back = partitioning_from_bytes(&bytes, &schema(), &ctx.task_ctx())?;
        assert_eq!(back.map(|p| p.to_string()), Some(partitioning.to_string()));
        assert!(partitioning_from_bytes(&[], &schema(), &ctx.task_ctx())?.is_none());
        Ok(())
    }

    #[test]
    fn unknown_nodes_are_refused_not_mangled() {
        let ctx = SessionContext::new();
        assert!(plan_from_bytes(b"\x00\x01garbage", &ctx.task_ctx()).is_err());
    }
}
