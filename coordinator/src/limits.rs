//! What one client may ask of the coordinator: the limits every request is held to, with
//! their defaults, the flags that raise them, and the errors that name them.
//!
//! | limit | default | flag (environment) | refused with |
//! |---|---|---|---|
//! | SQL text length | 1,000,000 bytes | `--max-sql-length` (`QUARRY_MAX_SQL_LENGTH`) | INVALID_ARGUMENT, 400 |
//! | statements in one request | 1,000 | `--max-statements` (`QUARRY_MAX_STATEMENTS`) | INVALID_ARGUMENT, 400 |
//! | nesting of parentheses, brackets, CASE and subqueries | 100 | `--max-nesting` (`QUARRY_MAX_NESTING`) | INVALID_ARGUMENT, 400 |
//! | expression depth | 1,000 | `--max-expression-depth` (`QUARRY_MAX_EXPRESSION_DEPTH`) | INVALID_ARGUMENT, 400 |
//! | expression nodes in a statement | 500,000 | `--max-expression-nodes` (`QUARRY_MAX_EXPRESSION_NODES`) | INVALID_ARGUMENT, 400 |
//! | plan depth (operators on one path, set operations in a chain) | 1,000 | `--max-plan-depth` (`QUARRY_MAX_PLAN_DEPTH`) | INVALID_ARGUMENT, 400 |
//! | tables and subqueries in one statement | 500 | `--max-relations` (`QUARRY_MAX_RELATIONS`) | INVALID_ARGUMENT, 400 |
//! | REST request body | 16 MiB | `--max-request-body` (`QUARRY_MAX_REQUEST_BODY`) | RESOURCE_EXHAUSTED, 413 |
//! | Flight SQL message | 64 MiB | `--max-message-size` (`QUARRY_MAX_MESSAGE_SIZE`) | RESOURCE_EXHAUSTED / OUT_OF_RANGE |
//! | open connections per client listener | 1,024 | `--max-connections` (`QUARRY_MAX_CONNECTIONS`) | connection closed; HTTP answers 429 |
//! | iterations of a recursive CTE | 10,000 | `SET quarry.max_recursive_iterations` | RESOURCE_EXHAUSTED, 429 |
//!
//! The shape limits (nesting, expression depth, plan depth) are what keeps recursion over
//! a client's SQL on the stack it runs on; they cannot be raised past the ceilings in
//! [`quarry_common::stack`], which tests check against a quarter of the real stack.
//! Relations bound time rather than stack: DataFusion's planning of an N-way join list
//! grows about as N³ (a 400-way list takes about 2 s in a debug build, 1,000 about 30 s),
//! and planning cannot be interrupted once started, so a wide statement is refused before.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use quarry_common::QuarryError;
use quarry_common::stack::{MAX_EXPRESSION_DEPTH, MAX_PLAN_DEPTH};

/// The highest `--max-nesting` may be set: the parser recurses a few frames per level.
pub const MAX_NESTING: usize = 1_000;

/// Limits on one request; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub sql_length: usize,
    pub statements: usize,
    pub nesting: usize,
    pub expression_depth: usize,
    pub expression_nodes: usize,
    pub plan_depth: usize,
    pub relations: usize,
    pub request_body: usize,
    pub message_size: usize,
    pub connections: usize,
}

pub const DEFAULT_SQL_LENGTH: usize = 1_000_000;
pub const DEFAULT_STATEMENTS: usize = 1_000;
pub const DEFAULT_NESTING: usize = 100;
pub const DEFAULT_EXPRESSION_DEPTH: usize = 1_000;
pub const DEFAULT_EXPRESSION_NODES: usize = 500_000;
pub const DEFAULT_PLAN_DEPTH: usize = 1_000;
pub const DEFAULT_RELATIONS: usize = 500;
pub const DEFAULT_REQUEST_BODY: usize = 16 * 1024 * 1024;
pub const DEFAULT_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
pub const DEFAULT_CONNECTIONS: usize = 1_024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sql_length: DEFAULT_SQL_LENGTH,
            statements: DEFAULT_STATEMENTS,
            nesting: DEFAULT_NESTING,
            expression_depth: DEFAULT_EXPRESSION_DEPTH,
            expression_nodes: DEFAULT_EXPRESSION_NODES,
            plan_depth: DEFAULT_PLAN_DEPTH,
            relations: DEFAULT_RELATIONS,
            request_body: DEFAULT_REQUEST_BODY,
            message_size: DEFAULT_MESSAGE_SIZE,
            connections: DEFAULT_CONNECTIONS,
        }
    }
}

/// One limit as users name it.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// What is counted, for messages: "the SQL text", "nesting".
    pub what: &'static str,
    /// The flag that sets it, without dashes.
    pub flag: &'static str,
}

pub const SQL_LENGTH: Limit = Limit {
    what: "the SQL text",
    flag: "max-sql-length",
};
pub const STATEMENTS: Limit = Limit {
    what: "statements in one request",
    flag: "max-statements",
};
pub const NESTING: Limit = Limit {
    what: "nesting of parentheses, brackets, CASE and subqueries",
    flag: "max-nesting",
};
pub const EXPRESSION_DEPTH: Limit = Limit {
    what: "expression depth",
    flag: "max-expression-depth",
};
pub const EXPRESSION_NODES: Limit = Limit {
    what: "expression size (nodes in the statement)",
    flag: "max-expression-nodes",
};
pub const PLAN_DEPTH: Limit = Limit {
    what: "plan depth",
    flag: "max-plan-depth",
};
pub const RELATIONS: Limit = Limit {
    what: "tables and subqueries in one statement",
    flag: "max-relations",
};
pub const REQUEST_BODY: Limit = Limit {
    what: "the request body",
    flag: "max-request-body",
};

impl Limit {
    /// The environment variable of the flag.
    pub fn env(&self) -> String {
        format!(
            "QUARRY_{}",
            self.flag.replace('-', "_").to_ascii_uppercase()
        )
    }

    /// How to raise it, for the end of an error message.
    pub fn how_to_raise(&self) -> String {
        format!("the server sets it with --{} ({})", self.flag, self.env())
    }

    /// `what` came to `actual` (or more) where `limit` is allowed.
    pub fn exceeded(&self, actual: impl std::fmt::Display, limit: usize) -> QuarryError {
        QuarryError::invalid(format!(
            "{} exceeds the limit: {actual} where at most {} is allowed; simplify the \
             statement, or ask an operator to raise the limit ({})",
            self.what,
            group_digits(limit),
            self.how_to_raise()
        ))
    }
}

/// `1000000` as `1,000,000`.
pub fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Limits {
    /// The most any limit may be raised to: what stored SQL (views) is read with, so a
    /// view created under raised limits still plans after they are lowered.
    pub fn ceilings() -> Self {
        Limits {
            sql_length: usize::MAX,
            statements: usize::MAX,
            nesting: MAX_NESTING,
            expression_depth: MAX_EXPRESSION_DEPTH,
            expression_nodes: usize::MAX,
            plan_depth: MAX_PLAN_DEPTH,
            relations: MAX_PLAN_DEPTH,
            request_body: usize::MAX,
            message_size: usize::MAX,
            connections: usize::MAX,
        }
    }

    /// Refuse a physical plan with more operators on one path than `plan_depth`, before
    /// anything else walks it (measured with a stack of our own, not by recursion).
    pub fn check_plan_depth(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<(), QuarryError> {
        let mut pending = vec![(Arc::clone(plan), 1usize)];
        while let Some((node, depth)) = pending.pop() {
            if depth > self.plan_depth {
                return Err(PLAN_DEPTH.exceeded(
                    format!(
                        "more than {} operators on one path",
                        group_digits(self.plan_depth)
                    ),
                    self.plan_depth,
                ));
            }
            pending.extend(
                node.children()
                    .into_iter()
                    .map(|c| (Arc::clone(c), depth + 1)),
            );
        }
        Ok(())
    }

    /// Refuse settings that are zero, or past what the stacks are sized for.
    pub fn validate(&self) -> Result<(), QuarryError> {
        let checks = [
            ("max-sql-length", self.sql_length, usize::MAX),
            ("max-statements", self.statements, usize::MAX),
            ("max-nesting", self.nesting, MAX_NESTING),
            (
                "max-expression-depth",
                self.expression_depth,
                MAX_EXPRESSION_DEPTH,
            ),
            ("max-expression-nodes", self.expression_nodes, usize::MAX),
            ("max-plan-depth", self.plan_depth, MAX_PLAN_DEPTH),
            ("max-relations", self.relations, MAX_PLAN_DEPTH),
            ("max-request-body", self.request_body, usize::MAX),
            ("max-message-size", self.message_size, usize::MAX),
            ("max-connections", self.connections, usize::MAX),
        ];
        for (flag, value, ceiling) in checks {
            if value == 0 {
                return Err(QuarryError::invalid(format!("--{flag} must be at least 1")));
            }
            if value > ceiling {
                return Err(QuarryError::invalid(format!(
                    "--{flag} may be at most {} (the stacks of query threads are sized for \
                     that), not {}",
                    group_digits(ceiling),
                    group_digits(value)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_limit_and_how_to_raise_it() {
        let e = SQL_LENGTH.exceeded("2,000,000 bytes", 1_000_000);
        assert_eq!(e.code, quarry_common::ErrorCode::InvalidArgument);
        assert!(e.message.contains("1,000,000"), "{}", e.message);
        assert!(e.message.contains("--max-sql-length"), "{}", e.message);
        assert!(e.message.contains("QUARRY_MAX_SQL_LENGTH"), "{}", e.message);
    }

    #[test]
    fn limits_past_the_stack_ceilings_are_refused() {
        assert!(Limits::default().validate().is_ok());
        let deep = Limits {
            expression_depth: MAX_EXPRESSION_DEPTH + 1,
            ..Limits::default()
        };
        assert!(deep.validate().is_err());
        let zero = Limits {
            statements: 0,
            ..Limits::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(5), "5");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(16_777_216), "16,777,216");
    }
}
