//! Plans shipped in pieces that protobuf decoding accepts, and decoded with a bound.
//!
//! prost refuses to decode a message nested more than 100 levels deep, and that limit
//! must stay: it is what keeps a crafted message from any client from recursing the
//! decoder off its stack. A plan fragment nests about two protobuf levels per operator
//! and two to four per expression, so a stage with a few dozen levels of arithmetic,
//! CASE or joins would not decode on an executor at all.
//!
//! [`ChunkingConverter`] hooks DataFusion's encoder: every [`PLAN_LEVELS`] operators and
//! every [`EXPRESSION_LEVELS`] expression levels, the subtree below is encoded as a
//! message of its own and carried as bytes in an extension node, so no single message
//! nests deeper than about 70 levels. Decoding undoes it, counting every plan and
//! expression level it enters: past [`MAX_DECODE_LEVELS`] it stops with an error, so a
//! confused or hostile sender cannot make an executor build a plan deeper than that.
//!
//! Every cycle of DataFusion's encoding and decoding recursion passes through one of the
//! four hooks here, and each is `#[recursive]`: when the thread's stack runs low the walk
//! continues on a fresh stack segment, so encoding and decoding never overflow.

use std::cell::Cell;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{internal_datafusion_err, plan_datafusion_err};
use datafusion::error::Result;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::physical_expr_node::ExprType;
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
use datafusion_proto::protobuf::{
    PhysicalExprNode, PhysicalExtensionExprNode, PhysicalExtensionNode, PhysicalPlanNode,
};
use prost::Message;

/// Operators per message before the rest of a plan goes into a piece of its own.
pub const PLAN_LEVELS: usize = 6;
/// Expression levels per message before the rest goes into a piece of its own.
pub const EXPRESSION_LEVELS: usize = 6;
/// The deepest plan (operators plus expression levels along one path) a decoder builds.
/// The coordinator's limits (`--max-expression-depth`, `--max-plan-depth`) keep what it
/// sends well below this.
pub const MAX_DECODE_LEVELS: usize = 10_000;

/// Marks an extension node's bytes as a piece of the plan rather than a Quarry node.
const PIECE: &[u8] = b"QPIECE1";

/// Encodes and decodes plans in pieces (see the module doc). One instance per plan:
/// it counts the depth of the walk it is in.
#[derive(Default)]
pub struct ChunkingConverter {
    plan_levels: Cell<usize>,
    expression_levels: Cell<usize>,
    decode_levels: Cell<usize>,
    /// Expressions decoded so far by their `expr_id`: an expression one node shares with
    /// another (a TopK's dynamic filter, which the scan below it reads) is one expression
    /// again after decoding, as DataFusion's `DeduplicatingProtoConverter` makes it.
    shared: std::cell::RefCell<std::collections::HashMap<u64, Arc<dyn PhysicalExpr>>>,
}

/// Restores a counter when a level is left, however it is left.
struct Level<'a> {
    counter: &'a Cell<usize>,
    saved: usize,
}

impl<'a> Level<'a> {
    fn set(counter: &'a Cell<usize>, value: usize) -> Self {
        let saved = counter.replace(value);
        Level { counter, saved }
    }
}

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.counter.set(self.saved);
    }
}

fn piece(bytes: Vec<u8>) -> Vec<u8> {
    let mut marked = Vec::with_capacity(PIECE.len() + bytes.len());
    marked.extend_from_slice(PIECE);
    marked.extend_from_slice(&bytes);
    marked
}

impl ChunkingConverter {
    /// Enter one level of decoding, refusing past the bound.
    fn enter_decode(&self) -> Result<Level<'_>> {
        let depth = self.decode_levels.get() + 1;
        if depth > MAX_DECODE_LEVELS {
            return Err(plan_datafusion_err!(
                "the plan nests deeper than {MAX_DECODE_LEVELS} operators and expression \
                 levels; executors do not run it"
            ));
        }
        Ok(Level::set(&self.decode_levels, depth))
    }
}

impl PhysicalProtoConverterExtension for ChunkingConverter {
    #[recursive::recursive]
    fn proto_to_execution_plan(
        &self,
        proto: &PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let _level = self.enter_decode()?;
        if let Some(PhysicalPlanType::Extension(extension)) = &proto.physical_plan_type
            && let Some(bytes) = extension.node.strip_prefix(PIECE)
        {
            let inner = PhysicalPlanNode::decode(bytes)
                .map_err(|e| internal_datafusion_err!("malformed plan piece: {e}"))?;
            return self.proto_to_execution_plan(&inner, ctx);
        }
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    #[recursive::recursive]
    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalPlanNode> {
        let depth = self.plan_levels.get() + 1;
        if depth > PLAN_LEVELS {
            // This subtree starts a message of its own.
            let _plans = Level::set(&self.plan_levels, 0);
            let _expressions = Level::set(&self.expression_levels, 0);
            let inner = self.execution_plan_to_proto(plan, codec)?;
            return Ok(PhysicalPlanNode {
                physical_plan_type: Some(PhysicalPlanType::Extension(PhysicalExtensionNode {
                    node: piece(inner.encode_to_vec()),
                    inputs: Vec::new(),
                })),
            });
        }
        let _level = Level::set(&self.plan_levels, depth);
        // Expressions of this operator start counting afresh.
        let _expressions = Level::set(&self.expression_levels, 0);
        PhysicalPlanNode::try_from_physical_plan_with_converter(Arc::clone(plan), codec, self)
    }

    #[recursive::recursive]
    fn proto_to_physical_expr(
        &self,
        proto: &PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let _level = self.enter_decode()?;
        if let Some(ExprType::Extension(extension)) = &proto.expr_type
            && let Some(bytes) = extension.expr.strip_prefix(PIECE)
        {
            let inner = PhysicalExprNode::decode(bytes)
                .map_err(|e| internal_datafusion_err!("malformed expression piece: {e}"))?;
            return self.proto_to_physical_expr(&inner, input_schema, ctx);
        }
        let parsed = parse_physical_expr_with_converter(proto, input_schema, ctx, self)?;
        let Some(id) = proto.expr_id else {
            return Ok(parsed);
        };
        let first = self.shared.borrow().get(&id).cloned();
        match first {
            // Its own children, the state of the first (how a derived filter is made).
            Some(first) => {
                first.with_new_children(parsed.children().into_iter().cloned().collect())
            }
            None => {
                self.shared.borrow_mut().insert(id, Arc::clone(&parsed));
                Ok(parsed)
            }
        }
    }

    #[recursive::recursive]
    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalExprNode> {
        let depth = self.expression_levels.get() + 1;
        if depth > EXPRESSION_LEVELS {
            let _plans = Level::set(&self.plan_levels, 0);
            let _expressions = Level::set(&self.expression_levels, 0);
            let inner = self.physical_expr_to_proto(expr, codec)?;
            return Ok(PhysicalExprNode {
                expr_id: None,
                expr_type: Some(ExprType::Extension(PhysicalExtensionExprNode {
                    expr: piece(inner.encode_to_vec()),
                    inputs: Vec::new(),
                })),
            });
        }
        let _level = Level::set(&self.expression_levels, depth);
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{QuarryCodec, plan_from_bytes, plan_to_bytes};
    use crate::stack::{MAX_EXPRESSION_DEPTH, MAX_PLAN_DEPTH, THREAD_STACK_BYTES};
    use arrow::datatypes::{DataType, Field};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, lit};
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::limit::LocalLimitExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::prelude::SessionContext;

    /// Run `f` on a thread with a quarter of the stack query threads get.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::stack::configure();
        std::thread::Builder::new()
            .stack_size(THREAD_STACK_BYTES / 4)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    fn input() -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(vec![Field::new("n", DataType::Int64, true)]);
        Arc::new(EmptyExec::new(Arc::new(schema)))
    }

    /// `n + 1 - 1 + 1 - ...`: operators alternate, so nothing flattens the chain.
    fn deep_expression(levels: usize) -> Arc<dyn PhysicalExpr> {
        let mut expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new("n", 0));
        for i in 0..levels {
            let op = if i % 2 == 0 {
                Operator::Plus
            } else {
                Operator::Minus
            };
            expr = Arc::new(BinaryExpr::new(expr, op, lit(1i64)));
        }
        Arc::new(BinaryExpr::new(expr, Operator::Gt, lit(0i64)))
    }

    fn round_trip(plan: Arc<dyn ExecutionPlan>) -> Result<()> {
        let ctx = SessionContext::new();
        let bytes = plan_to_bytes(Arc::clone(&plan))?;
        let back = plan_from_bytes(&bytes, &ctx.task_ctx())?;
        assert_eq!(
            displayable(plan.as_ref()).indent(true).to_string(),
            displayable(back.as_ref()).indent(true).to_string()
        );
        Ok(())
    }

    #[test]
    fn deep_expressions_travel_in_pieces() -> Result<()> {
        on_small_stack(|| {
            // Far past what one protobuf message may nest (100 levels).
            let plan = Arc::new(FilterExec::try_new(deep_expression(300), input())?);
            round_trip(plan)
        })
    }

    #[test]
    fn the_deepest_plans_the_limits_allow_travel_on_a_quarter_stack() -> Result<()> {
        on_small_stack(|| {
            // A projection: a filter this deep spends minutes in DataFusion's interval
            // analysis, which compares subexpressions pairwise.
            let expr = (deep_expression(MAX_EXPRESSION_DEPTH), "deep".to_string());
            let mut plan =
                Arc::new(ProjectionExec::try_new([expr], input())?) as Arc<dyn ExecutionPlan>;
            for _ in 0..MAX_PLAN_DEPTH {
                plan = Arc::new(LocalLimitExec::new(plan, 10));
            }
            let ctx = SessionContext::new();
            let bytes = plan_to_bytes(Arc::clone(&plan))?;
            let back = plan_from_bytes(&bytes, &ctx.task_ctx())?;
            assert_eq!(back.name(), plan.name());
            Ok(())
        })
    }

    #[test]
    fn a_decoder_stops_at_its_bound() {
        // Pieces inside pieces, deeper than any coordinator sends: an error, not a crash.
        let result = on_small_stack(|| {
            let ctx = SessionContext::new();
            let mut node = ChunkingConverter::default()
                .execution_plan_to_proto(&input(), &QuarryCodec)
                .expect("encodes");
            for _ in 0..MAX_DECODE_LEVELS + 10 {
                node = PhysicalPlanNode {
                    physical_plan_type: Some(PhysicalPlanType::Extension(PhysicalExtensionNode {
                        node: piece(node.encode_to_vec()),
                        inputs: Vec::new(),
                    })),
                };
            }
            plan_from_bytes(&node.encode_to_vec(), &ctx.task_ctx()).map(|_| ())
        });
        let error = result.expect_err("too deep");
        assert!(error.to_string().contains("nests deeper"), "{error}");
    }
}
