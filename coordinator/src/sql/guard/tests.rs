use super::*;
use crate::sql::parser::parse;

fn sum(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

fn refused(sql: &str, limits: &Limits) -> String {
    match parse(sql, limits) {
        Ok(_) => panic!("{} should be refused", &sql[..sql.len().min(60)]),
        Err(e) => {
            assert_eq!(e.code, quarry_common::ErrorCode::InvalidArgument, "{e}");
            assert!(e.message.len() < 600, "a short message: {}", e.message);
            e.message
        }
    }
}

/// Guards run on the query runtime, whose `#[recursive]` functions keep a red zone.
fn setup() -> Limits {
    quarry_common::stack::configure();
    Limits::default()
}

#[test]
fn long_sums_are_refused_by_depth_and_short_ones_parse() {
    let limits = setup();
    assert!(parse(&sum(1_000), &limits).is_ok());
    for terms in [1_200, 5_000, 100_000] {
        let message = refused(&sum(terms), &limits);
        assert!(message.contains("expression depth"), "{message}");
        assert!(message.contains("--max-expression-depth"), "{message}");
    }
}

#[test]
fn refused_trees_are_taken_apart_without_deep_recursion() {
    let mut limits = setup();
    // Past the token bound's slack, so the parser builds the whole 50,000-deep tree
    // and the exact check refuses it, on this test thread's small stack.
    limits.expression_depth = 20_000;
    let message = refused(&sum(50_000), &limits);
    assert!(message.contains("20,000"), "{message}");
    let mut statement = parse(&sum(10), &Limits::default())
        .expect("parses")
        .pop()
        .expect("one");
    let _ = visit_mut(&mut statement, &mut Dismantle);
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let limits = setup();
    let case = format!(
        "SELECT {}1{}",
        "CASE WHEN 1 = 1 THEN ".repeat(5_000),
        " END".repeat(5_000)
    );
    let calls = format!("SELECT {}1{}", "abs(".repeat(5_000), ")".repeat(5_000));
    let brackets = format!("SELECT {}1{}", "[".repeat(5_000), "]".repeat(5_000));
    for sql in [case, calls, brackets] {
        let message = refused(&sql, &limits);
        assert!(message.contains("nesting"), "{message}");
        assert!(message.contains("line 1, column"), "{message}");
    }
    let nots = format!("SELECT {}true", "NOT ".repeat(5_000));
    let message = refused(&nots, &limits);
    assert!(
        message.contains("expression depth") || message.contains("nesting"),
        "{message}"
    );
}

#[test]
fn unary_chains_the_scan_allows_meet_the_parsers_bound() {
    let mut limits = setup();
    limits.expression_depth = 5_000;
    let nots = format!("SELECT {}true", "NOT ".repeat(2_000));
    let message = refused(&nots, &limits);
    assert!(message.contains("unary operators"), "{message}");
    let mixed = format!("SELECT {}1{}", "NOT (- ".repeat(60), ")".repeat(60));
    let message = refused(&mixed, &limits);
    assert!(message.contains("nesting"), "{message}");
    assert!(parse("SELECT 1 - -1, NOT NOT true, -(-(1))", &limits).is_ok());
}

#[test]
fn explain_of_explain_is_refused() {
    let limits = setup();
    let message = refused(&format!("{}SELECT 1", "EXPLAIN ".repeat(3_000)), &limits);
    assert!(message.contains("EXPLAIN cannot explain"), "{message}");
    assert!(parse("EXPLAIN ANALYZE VERBOSE SELECT 1", &limits).is_ok());
    assert!(parse("EXPLAIN SELECT 1; EXPLAIN SELECT 2", &limits).is_ok());
}

#[test]
fn set_operation_chains_count_as_plan_depth() {
    let mut limits = setup();
    let union = |n: usize| {
        (0..n)
            .map(|i| format!("SELECT {i}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    let message = refused(&union(1_500), &limits);
    assert!(message.contains("plan depth"), "{message}");
    limits.plan_depth = 2_000;
    assert!(parse(&union(1_500), &limits).is_ok());
}

#[test]
fn wide_join_lists_are_refused_before_planning() {
    let mut limits = setup();
    let joined = |n: usize| {
        let tables: Vec<String> = (0..n).map(|i| format!("(VALUES (1)) AS t{i}")).collect();
        format!("SELECT count(*) FROM {}", tables.join(", "))
    };
    let message = refused(&joined(1_000), &limits);
    assert!(message.contains("tables and subqueries"), "{message}");
    assert!(message.contains("--max-relations"), "{message}");
    assert!(parse(&joined(400), &limits).is_ok());
    limits.relations = 1_000;
    assert!(parse(&joined(1_000), &limits).is_ok());
}

#[test]
fn huge_texts_are_refused_without_being_echoed() {
    let limits = setup();
    let sql = format!("SELECT '{}'", "x".repeat(2_000_000));
    let message = refused(&sql, &limits);
    assert!(message.contains("2,000,009 bytes"), "{message}");
    assert!(message.contains("1,000,000"), "{message}");
}

#[test]
fn statements_and_nodes_are_counted() {
    let mut limits = setup();
    limits.statements = 10;
    let message = refused(&"SELECT 1;".repeat(11), &limits);
    assert!(message.contains("statements"), "{message}");
    limits.expression_nodes = 1_000;
    let wide = format!("SELECT {}", vec!["1"; 2_000].join(", "));
    let message = refused(&wide, &limits);
    assert!(message.contains("expression size"), "{message}");
}

#[test]
fn excerpts_are_short() {
    let sql = format!("SELECT {}", "(".repeat(200));
    let message = refused(&sql, &setup());
    assert!(message.contains("near '((((("), "{message}");
    assert!(message.contains('…'), "{message}");
}
