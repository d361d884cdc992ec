//! The grammar-aware statement generator of the SQL target: expressions, joins,
//! subqueries, CTEs, window functions, Quarry's DDL and reflection statements over the
//! fixture tables, and pathological shapes (deep nesting, wide lists, huge literals).

use rand::Rng as _;

use super::Rng;
use super::draw::{chance, number, pick, text};

/// Tables the fixtures register, with their columns.
const TABLES: &[(&str, &[&str])] = &[
    ("people", &["id", "name", "age", "city"]),
    ("events", &["event_id", "user_id", "kind", "value"]),
    ("products", &["id", "name", "category", "price"]),
    (
        "sales",
        &["sale_id", "product_id", "qty", "amount", "year", "region"],
    ),
    ("mart.t", &["id", "k", "x"]),
    ("sys.jobs", &["job_id", "state", "sql", "row_count"]),
    ("sys.nodes", &["executor_id", "slots", "running_tasks"]),
];

/// The grammar-aware generator: well-formed statements most of the time, over the
/// fixture tables, so they reach planning and execution rather than stopping at the parser.
pub struct Generator<'a> {
    rng: &'a mut Rng,
    /// Columns in scope, qualified by alias.
    scope: Vec<String>,
    aliases: usize,
}

impl<'a> Generator<'a> {
    pub fn new(rng: &'a mut Rng) -> Self {
        Generator {
            rng,
            scope: Vec::new(),
            aliases: 0,
        }
    }

    pub fn statement(&mut self, made: &mut Vec<String>) -> String {
        let n = self.rng.random::<u32>() % 10_000;
        match self.rng.random_range(0..20) {
            0..=9 => self.query(2),
            10 => format!("EXPLAIN {}", self.query(2)),
            11 => format!("EXPLAIN ANALYZE {}", self.query(1)),
            12 => {
                let name = format!("fz_v{n}");
                made.push(name.clone());
                format!("CREATE VIEW {name} AS {}", self.query(2))
            }
            13 => {
                let name = format!("mart.fz_t{n}");
                made.push(name.clone());
                format!("CREATE TABLE {name} AS {} LIMIT 50", self.query(1))
            }
            14 => format!(
                "INSERT INTO mart.t SELECT id + {n}, k, x FROM mart.t WHERE {} LIMIT 5",
                {
                    self.scope = vec!["id".into(), "k".into(), "x".into()];
                    self.expr(2)
                }
            ),
            15 => match self.rng.random_range(0..6) {
                0 => "OPTIMIZE TABLE mart.t".to_string(),
                1 => "VACUUM mart.t RETAIN 0 HOURS".to_string(),
                2 => "DESCRIBE HISTORY mart.t".to_string(),
                3 => "SHOW TABLES".to_string(),
                4 => "SHOW SOURCES".to_string(),
                _ => format!("DESCRIBE {}", pick(self.rng, TABLES).0),
            },
            16 => self.reflection(n),
            17 => match made.last() {
                Some(name) if name.starts_with("fz_v") => format!("DROP VIEW {name}"),
                Some(name) => format!("DROP TABLE {name}"),
                None => format!("DROP VIEW IF EXISTS fz_v{n}"),
            },
            18 => format!(
                "SET {} = '{}'",
                pick(
                    self.rng,
                    &[
                        "quarry.query_timeout",
                        "quarry.max_recursive_iterations",
                        "datafusion.execution.batch_size",
                        "datafusion.execution.target_partitions",
                        "nope.setting",
                    ]
                ),
                text(self.rng).replace('\'', "''")
            ),
            _ => {
                let (table, _) = *pick(self.rng, TABLES);
                let recursive = format!(
                    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {}) SELECT count(*), max(n) FROM r",
                    self.rng.random_range(0..20_000)
                );
                let path = text(self.rng).replace('\'', "''");
                let statements = [
                    recursive,
                    format!("SELECT count(*) FROM {table}"),
                    format!("CREATE SOURCE fz_s{n} TYPE local WITH (root = '{path}')"),
                    format!("CREATE TABLE fz_x{n} FROM files '{path}'"),
                ];
                pick(self.rng, &statements).clone()
            }
        }
    }

    fn reflection(&mut self, n: u32) -> String {
        match self.rng.random_range(0..4) {
            0 => format!(
                "ALTER TABLE mart.t CREATE AGGREGATE REFLECTION fz_r{n} USING DIMENSIONS (k) MEASURES (x (SUM, COUNT{}))",
                if chance(self.rng, 0.5) {
                    ", MIN, MAX"
                } else {
                    ""
                }
            ),
            1 => format!(
                "ALTER TABLE people CREATE RAW REFLECTION fz_r{n} USING DISPLAY (id, city, age) PARTITION BY (city)"
            ),
            2 => format!(
                "ALTER TABLE people CREATE AGGREGATE REFLECTION fz_r{n} USING DIMENSIONS ({}) MEASURES ({} (SUM))",
                pick(self.rng, &["city", "nope", "age BY DAY", "name"]),
                pick(self.rng, &["age", "id", "city"])
            ),
            _ => "EXPLAIN REFLECTIONS SELECT k, sum(x) FROM mart.t GROUP BY k".to_string(),
        }
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    fn relation(&mut self, depth: u32) -> String {
        if depth > 0 && chance(self.rng, 0.2) {
            let saved = std::mem::take(&mut self.scope);
            let inner = self.query(depth - 1);
            self.scope = saved;
            let alias = self.alias();
            // The subquery's columns are unknown here; refer to it by `*` only.
            return format!("({inner}) AS {alias}");
        }
        match self.rng.random_range(0..8) {
            0 => {
                let alias = self.alias();
                self.scope.push(format!("{alias}.value"));
                format!("range({}) AS {alias}", self.rng.random_range(0..2000))
            }
            1 => {
                let alias = self.alias();
                self.scope.push(format!("{alias}.a"));
                self.scope.push(format!("{alias}.b"));
                format!("(VALUES (1, 'x'), (NULL, 'y'), (3, NULL)) AS {alias}(a, b)")
            }
            _ => {
                let (table, columns) = *pick(self.rng, &TABLES[..5]);
                let alias = self.alias();
                for column in columns {
                    self.scope.push(format!("{alias}.{column}"));
                }
                format!("{table} AS {alias}")
            }
        }
    }

    pub fn query(&mut self, depth: u32) -> String {
        let outer = std::mem::take(&mut self.scope);
        let mut from = self.relation(depth);
        for _ in 0..self.rng.random_range(0..3) {
            let right = self.relation(depth);
            let kind = pick(
                self.rng,
                &[
                    "JOIN",
                    "LEFT JOIN",
                    "RIGHT JOIN",
                    "FULL JOIN",
                    "CROSS JOIN",
                    "JOIN",
                ],
            );
            if *kind == "CROSS JOIN" {
                from = format!("{from} CROSS JOIN {right}");
            } else {
                let on = self.expr(1);
                from = format!("{from} {kind} {right} ON {on}");
            }
        }
        let grouped = chance(self.rng, 0.3);
        let mut select = Vec::new();
        for _ in 0..self.rng.random_range(1..4) {
            let e = if grouped {
                self.aggregate(depth)
            } else if chance(self.rng, 0.15) {
                self.window()
            } else {
                self.expr(depth + 1)
            };
            select.push(format!("{e} AS c{}", select.len()));
        }
        let mut sql = format!(
            "SELECT {}{} FROM {from}",
            if chance(self.rng, 0.1) {
                "DISTINCT "
            } else {
                ""
            },
            select.join(", ")
        );
        if chance(self.rng, 0.5) {
            sql += &format!(" WHERE {}", self.expr(depth + 1));
        }
        if grouped {
            let key = self.column();
            sql += &format!(" GROUP BY {key}");
            if chance(self.rng, 0.3) {
                sql += &format!(" HAVING {} > {}", self.aggregate(0), number(self.rng));
            }
        }
        if chance(self.rng, 0.3) {
            sql += " ORDER BY 1";
        }
        if chance(self.rng, 0.5) {
            sql += &format!(" LIMIT {}", self.rng.random_range(0..100));
        }
        if chance(self.rng, 0.1) {
            let more = self.query(0);
            sql = format!("{sql} UNION ALL {more}");
        }
        if depth > 0 && chance(self.rng, 0.15) {
            sql = format!("WITH w AS ({sql}) SELECT * FROM w");
        }
        self.scope = outer;
        sql
    }

    fn column(&mut self) -> String {
        if self.scope.is_empty() {
            return "1".to_string();
        }
        pick(self.rng, &self.scope).clone()
    }

    fn literal(&mut self) -> String {
        match self.rng.random_range(0..9) {
            0 => "NULL".to_string(),
            1 => format!("'{}'", text(self.rng).replace('\'', "''")),
            2 => pick(self.rng, &["TRUE", "FALSE"]).to_string(),
            3 => format!("{}.{}", number(self.rng), self.rng.random_range(0..1000)),
            4 => pick(
                self.rng,
                &[
                    "DATE '2024-01-31'",
                    "TIMESTAMP '2024-02-29 12:00:00'",
                    "INTERVAL '3' DAY",
                    "1e308",
                    "-0.0",
                    "'NaN'",
                ],
            )
            .to_string(),
            _ => number(self.rng).to_string(),
        }
    }

    fn aggregate(&mut self, depth: u32) -> String {
        let arg = self.expr(depth.min(1));
        let f = pick(
            self.rng,
            &[
                "count",
                "sum",
                "avg",
                "min",
                "max",
                "approx_distinct",
                "array_agg",
                "stddev",
                "median",
                "count(DISTINCT",
            ],
        );
        if *f == "count(DISTINCT" {
            format!("count(DISTINCT {arg})")
        } else {
            format!("{f}({arg})")
        }
    }

    fn window(&mut self) -> String {
        let f = pick(
            self.rng,
            &[
                "row_number()",
                "rank()",
                "dense_rank()",
                "lag(1)",
                "sum(1)",
                "count(*)",
                "first_value(1)",
            ],
        )
        .to_string();
        let f = if f.contains("(1)") {
            f.replace("(1)", &format!("({})", self.column()))
        } else {
            f
        };
        let partition = self.column();
        let order = self.column();
        let frame = pick(
            self.rng,
            &[
                "",
                " ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
                " ROWS UNBOUNDED PRECEDING",
                " RANGE BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING",
            ],
        );
        format!("{f} OVER (PARTITION BY {partition} ORDER BY {order}{frame})")
    }

    pub fn expr(&mut self, depth: u32) -> String {
        if depth == 0 {
            return if chance(self.rng, 0.6) {
                self.column()
            } else {
                self.literal()
            };
        }
        let d = depth - 1;
        match self.rng.random_range(0..16) {
            0..=2 => self.column(),
            3 => self.literal(),
            4 | 5 => {
                let op = pick(
                    self.rng,
                    &[
                        "+",
                        "-",
                        "*",
                        "/",
                        "%",
                        "=",
                        "<>",
                        "<",
                        ">=",
                        "AND",
                        "OR",
                        "||",
                        "LIKE",
                        "IS DISTINCT FROM",
                    ],
                );
                format!("({} {op} {})", self.expr(d), self.expr(d))
            }
            6 => format!("NOT ({})", self.expr(d)),
            7 => {
                let f = pick(
                    self.rng,
                    &[
                        "abs",
                        "round",
                        "upper",
                        "lower",
                        "length",
                        "coalesce",
                        "concat",
                        "substr",
                        "nullif",
                        "greatest",
                        "sqrt",
                        "ln",
                        "power",
                        "date_trunc",
                        "to_timestamp",
                        "md5",
                        "regexp_replace",
                        "split_part",
                        "array_length",
                        "make_array",
                    ],
                );
                let args: Vec<String> = (0..self.rng.random_range(0..4))
                    .map(|_| self.expr(d))
                    .collect();
                format!("{f}({})", args.join(", "))
            }
            8 => format!(
                "CAST({} AS {})",
                self.expr(d),
                pick(
                    self.rng,
                    &[
                        "INT",
                        "BIGINT",
                        "DOUBLE",
                        "VARCHAR",
                        "DATE",
                        "TIMESTAMP",
                        "DECIMAL(38, 10)",
                        "BOOLEAN",
                        "SMALLINT"
                    ]
                )
            ),
            9 => format!(
                "CASE WHEN {} THEN {} WHEN {} THEN {} ELSE {} END",
                self.expr(d),
                self.expr(d),
                self.expr(d),
                self.expr(d),
                self.expr(d)
            ),
            10 => {
                let list: Vec<String> = (0..self.rng.random_range(1..5))
                    .map(|_| self.literal())
                    .collect();
                format!("{} IN ({})", self.expr(d), list.join(", "))
            }
            11 => format!(
                "{} BETWEEN {} AND {}",
                self.expr(d),
                self.literal(),
                self.literal()
            ),
            12 => format!("{} IS NULL", self.expr(d)),
            13 if depth > 1 => {
                let saved = std::mem::take(&mut self.scope);
                let inner = self.query(0);
                self.scope = saved;
                format!("EXISTS ({inner})")
            }
            14 if depth > 1 => {
                let (table, columns) = *pick(self.rng, &TABLES[..5]);
                let column = pick(self.rng, columns);
                format!("(SELECT max({column}) FROM {table})")
            }
            _ => self.column(),
        }
    }

    /// Statements built to be deep or wide: long operator chains, deep nesting, many
    /// unions or joins, huge literals.
    pub fn pathological(&mut self) -> String {
        let n = *pick(self.rng, &[10usize, 100, 500, 1000, 2000, 5000, 20_000]);
        match self.rng.random_range(0..10) {
            0 => format!("SELECT {}", vec!["1"; n].join(" + ")),
            1 => format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
            2 => format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n)),
            3 => format!(
                "SELECT {}1{}",
                "CASE WHEN TRUE THEN ".repeat(n),
                " END".repeat(n)
            ),
            4 => vec!["SELECT 1"; n.min(3000)].join(" UNION ALL "),
            5 => format!(
                "SELECT count(*) FROM {}",
                (0..n.min(1500))
                    .map(|i| format!("(VALUES (1)) AS v{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            6 => format!("SELECT '{}'", "x".repeat(n * 100)),
            7 => format!(
                "SELECT {}",
                (0..n)
                    .map(|i| format!("{i} AS c{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            8 => format!("SELECT 1 WHERE {}", vec!["id = 1"; n].join(" OR "))
                .replace("WHERE", "FROM people WHERE"),
            _ => format!("SELECT {}1", "- ".repeat(n)),
        }
    }
}
