//! How big a thread's stack is, and why that is enough.
//!
//! A stack overflow aborts the whole process; it cannot be caught like a panic. Quarry
//! keeps every recursion over something a client sends within a bound checked before the
//! recursion starts, and runs that work on threads whose stacks hold the bound with a
//! wide margin:
//!
//! - SQL text is refused past `--max-sql-length`, nesting (parentheses, CASE, subqueries)
//!   past `--max-nesting` before parsing, and an expression deeper than
//!   `--max-expression-depth` or larger than `--max-expression-nodes` right after parsing,
//!   before anything walks it (the coordinator's `sql::guard`). The check itself and the
//!   disposal of a refused statement never recurse on the thread's own stack.
//! - A plan deeper than `--max-plan-depth` is refused before it is cut into stages.
//! - Plans travel to executors in pieces and are decoded with a bound of their own
//!   ([`crate::plan_chunks`]), so neither a deep plan nor a confused coordinator can
//!   recurse an executor's decoder off its stack.
//!
//! DataFusion's own planner and optimizer walk trees with the `recursive` crate's
//! protection, and so do Quarry's plan encoder and decoder: when less than
//! [`RED_ZONE_BYTES`] of the stack is left at one of those functions, the walk goes on in
//! a fresh [`SEGMENT_BYTES`] segment on the heap. What is left unprotected — cloning,
//! comparing, printing and dropping expressions, evaluating them — recurses once per
//! level of a tree the limits above have bounded, and fits in the red zone.
//!
//! The ceilings the limits may be raised to ([`MAX_EXPRESSION_DEPTH`] and
//! [`MAX_PLAN_DEPTH`]) are tested at these sizes on threads with a quarter of
//! [`THREAD_STACK_BYTES`]. Stack memory is reserved, not used: a thread touches only the
//! pages its deepest call reached.

/// The stack of every runtime thread that plans, encodes, decodes or runs queries.
pub const THREAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Protected recursion moves to a new segment when less than this is left: room for an
/// unprotected walk of the deepest tree the limits allow (a few megabytes).
pub const RED_ZONE_BYTES: usize = 8 * 1024 * 1024;

/// The size of each segment protected recursion continues on.
pub const SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// Apply [`RED_ZONE_BYTES`] and [`SEGMENT_BYTES`] to every `#[recursive]` function in the
/// process (DataFusion's and Quarry's). Idempotent; every query runtime calls it.
pub fn configure() {
    recursive::set_minimum_stack_size(RED_ZONE_BYTES);
    recursive::set_stack_allocation_size(SEGMENT_BYTES);
}

/// The highest `--max-expression-depth` may be set.
pub const MAX_EXPRESSION_DEPTH: usize = 5_000;

/// The highest `--max-plan-depth` may be set.
pub const MAX_PLAN_DEPTH: usize = 2_000;
