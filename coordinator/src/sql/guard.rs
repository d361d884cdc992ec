//! The checks every SQL text passes on its way to the planner, so that no statement can
//! recurse a thread off its stack (see `quarry_common::stack` for the whole guarantee).
//!
//! 1. Before parsing, one pass over the tokens (a loop, no recursion): the length of the
//!    text, how deep parentheses, brackets and CASE ... END nest, an upper bound on how
//!    deep any expression can be (every operator of a run counts, as if each nested the
//!    rest), how long a chain of UNION / EXCEPT / INTERSECT is, and EXPLAIN of an EXPLAIN
//!    (DataFusion's parser recurses on it without a bound). What passes parses into a
//!    tree the parser can also throw away without running out of stack.
//! 2. After parsing, each statement's exact expression depth and size, measured with
//!    sqlparser's visitor (which grows its stack on the heap when it must). A statement
//!    over a limit is taken apart bottom-up before it is dropped, so not even its
//!    destructor recurses deeply.
//!
//! Error messages quote at most [`EXCERPT_CHARS`] characters of the statement.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, TableFactor, Value, Values, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use quarry_common::QuarryError;

use super::copy::CopyFrom;
use super::statement::Statement;
use crate::limits::{
    EXPRESSION_DEPTH, EXPRESSION_NODES, Limits, NESTING, PLAN_DEPTH, RELATIONS, SQL_LENGTH,
    STATEMENTS, group_digits,
};

/// The most characters of a statement an error message quotes.
pub(crate) const EXCERPT_CHARS: usize = 40;

/// How much deeper than `--max-expression-depth` the token-level bound may go before a
/// text is refused unparsed: the bound counts every operator of a run, so `a = 1 OR
/// a = 2 OR ...` counts twice its real depth. The exact check after parsing decides.
const TOKEN_BOUND_FACTOR: usize = 4;

/// `line 3, column 14, near 'SELECT (((((...'`.
fn at(sql: &str, location: Location) -> String {
    let line = sql
        .lines()
        .nth((location.line as usize).saturating_sub(1))
        .unwrap_or_default();
    let from: String = line
        .chars()
        .skip((location.column as usize).saturating_sub(1))
        .take(EXCERPT_CHARS + 1)
        .collect();
    let near = if from.chars().count() > EXCERPT_CHARS {
        let cut: String = from.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        from
    };
    format!(
        "line {}, column {}, near '{near}'",
        location.line, location.column
    )
}

/// Where a token is a word, its keyword.
fn keyword(token: &Token) -> Option<Keyword> {
    match token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    }
}

/// Words that combine expressions into a deeper one.
fn is_operator_word(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::AND
            | Keyword::OR
            | Keyword::XOR
            | Keyword::NOT
            | Keyword::IS
            | Keyword::IN
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::RLIKE
            | Keyword::REGEXP
            | Keyword::BETWEEN
            | Keyword::COLLATE
            | Keyword::AT
            | Keyword::OVERLAPS
            | Keyword::DIV
            | Keyword::MOD
            | Keyword::ESCAPE
            | Keyword::ANY
            | Keyword::ALL
            | Keyword::SOME
            | Keyword::EXISTS
    )
}

/// Words after which a new expression starts (a clause of a statement).
fn ends_expression(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::BY
            | Keyword::HAVING
            | Keyword::QUALIFY
            | Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::JOIN
            | Keyword::ON
            | Keyword::USING
            | Keyword::WINDOW
            | Keyword::AS
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::VALUES
            | Keyword::SET
            | Keyword::WITH
            | Keyword::RETURNING
    )
}

fn is_set_operation(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::MINUS
    )
}

/// One open parenthesis, bracket or CASE while scanning.
#[derive(Default)]
struct Group {
    case: bool,
    /// Unary operators right before the group opened (`NOT (`): the parser recurses once
    /// for each, as for a group.
    prefixes: usize,
    /// Operators in the expression being read at this level.
    operators: usize,
    /// The deepest bound of a group closed inside that expression.
    deepest_child: usize,
    /// The deepest bound of any expression read at this level so far.
    deepest: usize,
    /// UNION / EXCEPT / INTERSECT at this level since the statement began.
    set_operations: usize,
}

impl Group {
    fn end_expression(&mut self) {
        let depth = self.operators + self.deepest_child + 1;
        self.deepest = self.deepest.max(depth);
        self.operators = 0;
        self.deepest_child = 0;
    }
}

/// What one pass over the tokens found.
struct Scan {
    nesting: usize,
    depth_bound: usize,
    set_chain: usize,
}

/// Check the text before parsing it; see the module doc.
pub(crate) fn check_text(sql: &str, limits: &Limits) -> Result<(), QuarryError> {
    if sql.len() > limits.sql_length {
        return Err(SQL_LENGTH.exceeded(
            format!("{} bytes", group_digits(sql.len())),
            limits.sql_length,
        ));
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // Malformed: the parser says where.
        return Ok(());
    };
    let mut stack: Vec<Group> = vec![Group::default()];
    let mut scan = Scan {
        nesting: 0,
        depth_bound: 0,
        set_chain: 0,
    };
    let depth_limit = limits.expression_depth.saturating_mul(TOKEN_BOUND_FACTOR);
    // The words of the current statement so far, for EXPLAIN EXPLAIN.
    let mut leading: Vec<Keyword> = Vec::new();
    let mut in_statement_head = true;
    // Unary operators in a row just read, and whether the last token ended a value (so a
    // `-` after it is binary).
    let mut prefixes = 0usize;
    let mut after_value = false;
    for token in &tokens {
        let location = token.span.start;
        let word = keyword(&token.token);
        if in_statement_head {
            match (&token.token, word) {
                (Token::Whitespace(_), _) => continue,
                (_, Some(k @ (Keyword::EXPLAIN | Keyword::ANALYZE | Keyword::VERBOSE))) => {
                    if k == Keyword::EXPLAIN && leading.contains(&Keyword::EXPLAIN) {
                        return Err(QuarryError::invalid(format!(
                            "EXPLAIN cannot explain another EXPLAIN (at {})",
                            at(sql, location)
                        )));
                    }
                    leading.push(k);
                }
                _ => in_statement_head = false,
            }
        }
        let top = stack.len() - 1;
        let unary = match (&token.token, word) {
            (Token::Whitespace(_), _) => None,
            (_, Some(Keyword::NOT)) => Some(true),
            (Token::Minus | Token::Plus | Token::Tilde, _) => Some(!after_value),
            _ => Some(false),
        };
        if let Some(unary) = unary {
            let opens = matches!(token.token, Token::LParen | Token::LBracket | Token::LBrace)
                || word == Some(Keyword::CASE);
            if unary {
                prefixes += 1;
                let levels = stack.len() - 1 + stack.iter().map(|g| g.prefixes).sum::<usize>();
                if levels + prefixes > limits.nesting {
                    return Err(NESTING.exceeded(
                        format!(
                            "more than {} levels with unary operators at {}",
                            limits.nesting,
                            at(sql, location)
                        ),
                        limits.nesting,
                    ));
                }
            } else if !opens {
                prefixes = 0;
            }
            after_value = matches!(
                token.token,
                Token::Word(_) | Token::Number(..) | Token::RParen | Token::RBracket
            ) && !matches!(word, Some(k) if is_operator_word(k) || ends_expression(k))
                || is_literal(&token.token);
        }
        match (&token.token, word) {
            (Token::Whitespace(_), _) => {}
            (Token::SemiColon, _) => {
                // A new statement: its expressions and chains start afresh.
                stack.truncate(1);
                stack[0].end_expression();
                scan.depth_bound = scan.depth_bound.max(stack[0].deepest);
                stack[0] = Group::default();
                leading.clear();
                in_statement_head = true;
            }
            (Token::LParen | Token::LBracket | Token::LBrace, _) | (_, Some(Keyword::CASE)) => {
                if matches!(token.token, Token::LBracket) {
                    // `a[1][2]...` nests one level per subscript.
                    stack[top].operators += 1;
                }
                stack.push(Group {
                    case: word == Some(Keyword::CASE),
                    prefixes: std::mem::take(&mut prefixes),
                    ..Group::default()
                });
                let levels = stack.len() - 1 + stack.iter().map(|g| g.prefixes).sum::<usize>();
                scan.nesting = scan.nesting.max(levels);
                if scan.nesting > limits.nesting {
                    return Err(NESTING.exceeded(
                        format!(
                            "more than {} levels at {}",
                            limits.nesting,
                            at(sql, location)
                        ),
                        limits.nesting,
                    ));
                }
            }
            (Token::RParen | Token::RBracket | Token::RBrace, _) | (_, Some(Keyword::END))
                if stack.len() > 1 =>
            {
                let closes_case = word == Some(Keyword::END);
                if closes_case != stack[top].case {
                    // `END` of something else, or a parenthesis CASE did not open: the
                    // parser will say what is wrong; keep scanning.
                    continue;
                }
                let mut group = stack.pop().unwrap_or_default();
                group.end_expression();
                let parent = stack.len() - 1;
                // The node the group makes (a call, a subquery, a CASE) is one more level.
                stack[parent].deepest_child = stack[parent].deepest_child.max(group.deepest + 1);
            }
            (Token::Comma, _) => stack[top].end_expression(),
            (_, Some(k)) if is_set_operation(k) => {
                stack[top].end_expression();
                stack[top].set_operations += 1;
                scan.set_chain = scan.set_chain.max(stack[top].set_operations);
                if scan.set_chain > limits.plan_depth {
                    return Err(PLAN_DEPTH.exceeded(
                        format!(
                            "a chain of more than {} UNION, EXCEPT or INTERSECT",
                            limits.plan_depth
                        ),
                        limits.plan_depth,
                    ));
                }
            }
            (_, Some(k)) if ends_expression(k) => stack[top].end_expression(),
            (_, Some(k)) if is_operator_word(k) => stack[top].operators += 1,
            (Token::Word(_), _)
            | (Token::Number(..), _)
            | (Token::EOF, _)
            | (Token::RParen | Token::RBracket | Token::RBrace, _) => {}
            (t, _) if is_literal(t) => {}
            _ => stack[top].operators += 1,
        }
        // The bound of the expression being read now, as if it ended here.
        let pending: usize = stack
            .iter()
            .map(|g| (g.operators + g.deepest_child + 1).max(g.deepest))
            .max()
            .unwrap_or(0);
        let open: usize = stack.iter().map(|g| g.operators + 1).sum();
        scan.depth_bound = scan.depth_bound.max(pending).max(open);
        if scan.depth_bound > depth_limit {
            return Err(EXPRESSION_DEPTH.exceeded(
                format!(
                    "an expression more than {} levels deep (at {})",
                    group_digits(limits.expression_depth),
                    at(sql, location)
                ),
                limits.expression_depth,
            ));
        }
    }
    Ok(())
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
    )
}

/// Measures expression depth and size, and set operation chains, stopping at the first
/// limit crossed.
struct Measure<'a> {
    limits: &'a Limits,
    depth: usize,
    nodes: usize,
    /// Tables, subqueries and table functions read: each can add a join to the plan.
    relations: usize,
}

impl Visitor for Measure<'_> {
    type Break = QuarryError;

    fn pre_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<QuarryError> {
        self.relations += 1;
        if self.relations > self.limits.relations {
            return ControlFlow::Break(RELATIONS.exceeded(
                format!("more than {}", group_digits(self.limits.relations)),
                self.limits.relations,
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<QuarryError> {
        // Chains of set operations, walked with a stack of our own.
        let mut pending: Vec<(&SetExpr, usize)> = vec![(query.body.as_ref(), 1)];
        while let Some((expr, length)) = pending.pop() {
            if length > self.limits.plan_depth {
                return ControlFlow::Break(PLAN_DEPTH.exceeded(
                    format!("a chain of {length} set operations"),
                    self.limits.plan_depth,
                ));
            }
            if let SetExpr::SetOperation { left, right, .. } = expr {
                pending.push((left, length + 1));
                pending.push((right, length + 1));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QuarryError> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > self.limits.expression_depth {
            return ControlFlow::Break(EXPRESSION_DEPTH.exceeded(
                format!(
                    "an expression more than {} levels deep",
                    group_digits(self.limits.expression_depth)
                ),
                self.limits.expression_depth,
            ));
        }
        if self.nodes > self.limits.expression_nodes {
            return ControlFlow::Break(EXPRESSION_NODES.exceeded(
                format!(
                    "more than {} expression nodes",
                    group_digits(self.limits.expression_nodes)
                ),
                self.limits.expression_nodes,
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QuarryError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Takes a tree apart bottom-up, so dropping what is left recurses one level at most.
struct Dismantle;

impl VisitorMut for Dismantle {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // Set operation chains: every operand's own expressions were taken apart already.
        let placeholder = || {
            Box::new(SetExpr::Values(Values {
                explicit_row: false,
                value_keyword: false,
                rows: Vec::new(),
            }))
        };
        let mut pending = vec![std::mem::replace(&mut query.body, placeholder())];
        while let Some(mut expr) = pending.pop() {
            if let SetExpr::SetOperation { left, right, .. } = expr.as_mut() {
                pending.push(std::mem::replace(left, placeholder()));
                pending.push(std::mem::replace(right, placeholder()));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // Its subexpressions are leaves by now: dropping it does not recurse.
        drop(std::mem::replace(expr, Expr::value(Value::Null)));
        ControlFlow::Continue(())
    }
}

/// Visit every sqlparser tree inside one of Quarry's statements.
fn visit_df<V: Visitor>(statement: &DFStatement, v: &mut V) -> ControlFlow<V::Break> {
    match statement {
        DFStatement::Statement(sql) => sql.visit(v),
        DFStatement::CreateExternalTable(create) => {
            create.columns.visit(v)?;
            create.order_exprs.visit(v)
        }
        DFStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(v),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(explain) => visit_df(&explain.statement, v),
        DFStatement::Reset(_) => ControlFlow::Continue(()),
    }
}

fn visit_df_mut<V: VisitorMut>(statement: &mut DFStatement, v: &mut V) -> ControlFlow<V::Break> {
    match statement {
        DFStatement::Statement(sql) => VisitMut::visit(sql.as_mut(), v),
        DFStatement::CreateExternalTable(create) => {
            VisitMut::visit(&mut create.columns, v)?;
            VisitMut::visit(&mut create.order_exprs, v)
        }
        DFStatement::CopyTo(copy) => match &mut copy.source {
            CopyToSource::Query(query) => VisitMut::visit(query.as_mut(), v),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(explain) => visit_df_mut(&mut explain.statement, v),
        DFStatement::Reset(_) => ControlFlow::Continue(()),
    }
}

fn visit<V: Visitor>(statement: &Statement, v: &mut V) -> ControlFlow<V::Break> {
    match statement {
        Statement::DataFusion(df)
        | Statement::ManagedTable { statement: df, .. }
        | Statement::ExplainReflections(df) => visit_df(df, v),
        Statement::Copy(copy) => match &copy.from {
            CopyFrom::Query(query) => query.visit(v),
            CopyFrom::Table(_) => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    }
}

fn visit_mut<V: VisitorMut>(statement: &mut Statement, v: &mut V) -> ControlFlow<V::Break> {
    match statement {
        Statement::DataFusion(df)
        | Statement::ManagedTable { statement: df, .. }
        | Statement::ExplainReflections(df) => visit_df_mut(df, v),
        Statement::Copy(copy) => match &mut copy.from {
            CopyFrom::Query(query) => VisitMut::visit(query.as_mut(), v),
            CopyFrom::Table(_) => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    }
}

/// Check one parsed statement; one over a limit is taken apart and dropped.
pub(crate) fn check_statement(
    statement: Statement,
    limits: &Limits,
) -> Result<Statement, QuarryError> {
    let mut measure = Measure {
        limits,
        depth: 0,
        nodes: 0,
        relations: 0,
    };
    match visit(&statement, &mut measure) {
        ControlFlow::Continue(()) => Ok(statement),
        ControlFlow::Break(error) => {
            discard(statement);
            Err(error)
        }
    }
}

/// Drop a statement of any depth without deep recursion.
pub(crate) fn discard(mut statement: Statement) {
    let _ = visit_mut(&mut statement, &mut Dismantle);
    drop(statement);
}

/// Refuse a script of too many statements.
pub(crate) fn check_count(count: usize, limits: &Limits) -> Result<(), QuarryError> {
    if count > limits.statements {
        return Err(STATEMENTS.exceeded(group_digits(count), limits.statements));
    }
    Ok(())
}

/// Parsers' own nesting guard, for the unary chains the token scan does not see as
/// nesting (`NOT NOT NOT ...`): a few parser frames per level of nesting we allow.
pub(crate) fn parser_recursion_limit(limits: &Limits) -> usize {
    limits.nesting * 4 + 16
}

/// The parser's "recursion limit exceeded", said as the limit it is.
pub(crate) fn nesting_error(limits: &Limits) -> QuarryError {
    NESTING.exceeded(
        "more levels than the parser follows (unary operators count too)",
        limits.nesting,
    )
}

/// Is this the parser's nesting guard tripping?
pub(crate) fn is_recursion_limit(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        datafusion::error::DataFusionError::SQL(inner, _) => {
            matches!(inner.as_ref(), ParserError::RecursionLimitExceeded)
        }
        datafusion::error::DataFusionError::Diagnostic(_, inner)
        | datafusion::error::DataFusionError::Context(_, inner) => is_recursion_limit(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
