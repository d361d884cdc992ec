//! The PostgreSQL protocol door with the clients people use: Debian's `psql`, psycopg 3,
//! psycopg2, SQLAlchemy and pandas, against the real `quarry` binary.

use std::process::{Command, Output};

use crate::harness::{QuarryProcess, run_python, test_cert, workspace};

/// `psql` against `pg` (host:port) with `args`; `env` adds variables (PGPASSWORD...).
fn psql(pg: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let (host, port) = pg.rsplit_once(':').expect("host:port");
    let mut command = Command::new("psql");
    command
        .args(["-X", "-h", host, "-p", port, "-d", "quarry"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGPASSWORD");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("psql runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// psql's own commands list and describe Quarry's objects; scripts stop at an error with
/// psql's exit status; every job records that it came in by the PostgreSQL door.
#[test]
fn psql_lists_describes_and_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "1000"]);
    let pg = quarry.pg.clone().expect("the PostgreSQL door is on");
    let user = [("PGUSER", "ada")];

    let out = psql(
        &pg,
        &user,
        &["-A", "-t", "-c", "SELECT count(*) FROM demo.orders"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");

    // Several statements in one -c run one after another.
    let out = psql(
        &pg,
        &user,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT 'a; b' AS s; SELECT version(); SHOW server_version",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("a; b"), "{printed}");
    assert!(printed.contains("PostgreSQL 16.6 (Quarry"), "{printed}");
    assert!(printed.contains("16.6"), "{printed}");

    for (command, expected) in [
        ("\\dt demo.*", vec!["orders", "table"]),
        ("\\dn", vec!["demo"]),
        ("\\d demo.orders", vec!["order_id", "revenue", "city"]),
        ("\\l", vec!["quarry"]),
        ("\\du", vec!["Role name", "Attributes"]),
    ] {
        let out = psql(&pg, &user, &["-c", command]);
        let shown = text(&out);
        assert!(out.status.success(), "{command}: {shown}");
        for word in expected {
            assert!(
                shown.contains(word),
                "{command} should show {word}:\n{shown}"
            );
        }
    }

    // The SQL psql sends for those commands, replayed as a script: every statement plans.
    let fixture = workspace().join("coordinator/tests/pg_fixtures/psql15_describe.sql");
    let out = psql(
        &pg,
        &user,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            &fixture.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("orders"), "{}", text(&out));

    // A script with an error stops there with psql's status 3.
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "SELECT 1 AS first;\nSELEC oops;\nSELECT 'never reached' AS last;\n",
    )
    .expect("script");
    let out = psql(
        &pg,
        &user,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-f",
            &script.display().to_string(),
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(shown.contains("first"), "{shown}");
    assert!(
        shown.contains("ERROR") && shown.contains("42601"),
        "{shown}"
    );
    assert!(!shown.contains("never reached"), "{shown}");

    let out = psql(
        &pg,
        &user,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT DISTINCT frontend FROM sys.jobs WHERE sql LIKE '%count(*) FROM demo.orders%'",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pgwire",
        "{}",
        text(&out)
    );
}

const PSYCOPG_CLIENT: &str = r#"
import sys, threading, time
import psycopg, psycopg2
from psycopg import sql

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def connect(user="admin", password="pw", **kw):
    return psycopg.connect(host=host, port=port, dbname="quarry", user=user, password=password,
                           connect_timeout=20, **kw)

# A wrong password is refused with SQLSTATE 28P01, after a SCRAM exchange.
try:
    connect(password="wrong")
    raise SystemExit("a wrong password was accepted")
except psycopg.OperationalError as e:
    assert "password authentication failed" in str(e), str(e)
print("wrong password refused")

conn = connect(autocommit=True)
assert conn.info.server_version >= 160000, conn.info.server_version
cur = conn.cursor()

# queries with and without parameters; description types
cur.execute("SELECT count(*) AS n FROM demo.orders")
assert cur.fetchone()[0] == 1000
cur.execute("SELECT order_id, city, revenue FROM demo.orders WHERE order_id BETWEEN %s AND %s ORDER BY order_id",
            (10, 14))
rows = cur.fetchall()
assert [r[0] for r in rows] == [10, 11, 12, 13, 14], rows
names = [d.name for d in cur.description]
assert names == ["order_id", "city", "revenue"], names
types = [d.type_code for d in cur.description]
assert types[0] in (20, 23) and types[1] in (25, 1043) and types[2] == 701, types
cur.execute("SELECT count(*) FROM demo.orders WHERE city = %s", ("Mumbai",))
mumbai = cur.fetchone()[0]
cur.execute("SELECT count(*) FROM demo.orders WHERE city = 'Mumbai'")
assert cur.fetchone()[0] == mumbai
print("parameters ok", mumbai)

# errors carry SQLSTATEs
for statement, code in [("SELEC 1", "42601"), ("SELECT * FROM demo.nope", "42P01"),
                        ("SELECT nope FROM demo.orders", "42703")]:
    try:
        cur.execute(statement)
        raise SystemExit(statement + " was accepted")
    except psycopg.Error as e:
        assert e.sqlstate == code, (statement, e.sqlstate, str(e))
print("sqlstates ok")

# a server-side cursor fetching a large result in batches
with connect() as tx:
    with tx.cursor(name="big") as big:
        big.itersize = 50000
        big.execute("SELECT a.order_id * 1000 + b.order_id AS k FROM demo.orders a, (SELECT order_id FROM demo.orders LIMIT 1000) b")
        total, batches = 0, 0
        while True:
            chunk = big.fetchmany(100000)
            if not chunk:
                break
            total += len(chunk)
            batches += 1
        assert total == 1000000, total
        assert batches >= 10, batches
print("server-side cursor ok", total, batches)

# cancel: a long query is cancelled from another thread and fails with 57014
slow = connect(autocommit=True)
def cancel_soon():
    time.sleep(1.5)
    slow.cancel()
threading.Thread(target=cancel_soon).start()
started = time.time()
try:
    slow.execute("SELECT count(*) FROM demo.orders a, demo.orders b, demo.orders c WHERE a.revenue + b.revenue > c.revenue + a.rating")
    raise SystemExit("the slow query was not cancelled")
except psycopg.errors.QueryCanceled as e:
    assert time.time() - started < 30, time.time() - started
print("cancel ok after %.1f s" % (time.time() - started))
slow.close()

# grants: a user without SELECT is refused with 42501
cur.execute("CREATE USER ada PASSWORD 'ada-pw'")
ada = connect(user="ada", password="ada-pw", autocommit=True)
try:
    ada.execute("SELECT count(*) FROM demo.orders")
    raise SystemExit("ada read demo.orders without a grant")
except psycopg.errors.InsufficientPrivilege as e:
    assert e.sqlstate == "42501", e.sqlstate
tables = [r[0] for r in ada.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo'")]
assert "orders" not in tables, tables
cur.execute("GRANT SELECT ON TABLE demo.orders TO USER ada")
assert ada.execute("SELECT count(*) FROM demo.orders").fetchone()[0] == 1000
print("permission ok")

# a personal access token as the password of user `token`, over TLS (verified against the CA)
cur.execute("CREATE TOKEN pg_token")
token = cur.fetchone()
token = [v for v in token if isinstance(v, str) and len(v) >= 32][0]
tls = psycopg.connect(host="localhost", port=port, dbname="quarry", user="token", password=token,
                      sslmode="verify-full", sslrootcert=ca, connect_timeout=20)
assert tls.info.pgconn.ssl_in_use
assert tls.execute("SELECT current_user").fetchone()[0] == "admin"
tls.close()
# SCRAM over TLS too
tls = connect(sslmode="require")
assert tls.info.pgconn.ssl_in_use
assert tls.execute("SELECT 1").fetchone()[0] == 1
tls.close()
print("tls ok")

# psycopg2: the same door, the classic driver
c2 = psycopg2.connect(host=host, port=port, dbname="quarry", user="admin", password="pw")
k = c2.cursor()
k.execute("SELECT city, count(*) FROM demo.orders WHERE revenue > %s GROUP BY city ORDER BY city", (100.0,))
assert len(k.fetchall()) == 10
named = c2.cursor("named")
named.itersize = 100
named.execute("SELECT order_id FROM demo.orders ORDER BY order_id")
assert sum(1 for _ in named) == 1000
named.close()
c2.rollback()
c2.close()
print("psycopg2 ok")

# SQLAlchemy 2 with psycopg: connect, reflect, pandas.read_sql
import sqlalchemy, pandas
engine = sqlalchemy.create_engine("postgresql+psycopg://admin:pw@%s:%d/quarry" % (host, port))
with engine.connect() as c:
    assert c.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    inspector = sqlalchemy.inspect(c)
    assert "orders" in inspector.get_table_names(schema="demo"), inspector.get_table_names(schema="demo")
    columns = [col["name"] for col in inspector.get_columns("orders", schema="demo")]
    assert "revenue" in columns, columns
    orders = sqlalchemy.Table("orders", sqlalchemy.MetaData(), autoload_with=c, schema="demo")
    assert "city" in orders.c
    frame = pandas.read_sql("SELECT city, sum(revenue) AS revenue FROM demo.orders GROUP BY city ORDER BY city", c)
    assert len(frame) == 10 and list(frame.columns) == ["city", "revenue"], frame
print("sqlalchemy ok")
print("PG OK")
"#;

/// psycopg 3, psycopg2, SQLAlchemy and pandas over SCRAM and TLS, with grants, cursors,
/// parameters, SQLSTATEs and cancel.
#[test]
fn python_postgres_clients_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up_secured(dir.path());
    let pg = quarry.pg.clone().expect("the PostgreSQL door is on");
    let (host, port) = pg.rsplit_once(':').expect("host:port");
    let out = run_python(PSYCOPG_CLIENT, &[host, port, &test_cert("ca.pem")]);
    assert!(out.contains("PG OK"), "{out}");
}

const CONNECT_AND_DROP: &str = r#"
import socket, sys
import psycopg

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    conn = psycopg.connect(host=host, port=port, dbname="quarry", user="ada", connect_timeout=20)
    if i % 4 == 0:
        assert conn.execute("SELECT count(*) FROM demo.orders").fetchone()[0] == 1000
    elif i % 4 == 1:
        # leave in the middle of a result (a cursor, left open)
        cur = conn.cursor(name="c%d" % i)
        cur.execute("SELECT * FROM demo.orders ORDER BY order_id")
        cur.fetchmany(5)
    elif i % 4 == 2:
        # go without a word (no Terminate), a query running
        conn.pgconn.send_query(b"SELECT count(*) FROM demo.orders a, demo.orders b WHERE a.revenue > b.revenue")
        socket.socket(fileno=conn.fileno()).close()
    conn.close()
print("cycles done", n)
"#;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// 200 clients that connect and go (some mid-result, some without a word) leave no job
/// running and the coordinator's memory where it was.
#[test]
fn connections_opened_and_dropped_leak_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "1000"]);
    let pg = quarry.pg.clone().expect("the PostgreSQL door is on");
    let (host, port) = pg.rsplit_once(':').expect("host:port");
    let pid = quarry.child.id();
    run_python(CONNECT_AND_DROP, &[host, port, "40"]);
    let before = rss_kib(pid);
    run_python(CONNECT_AND_DROP, &[host, port, "200"]);
    // Jobs whose clients left are cancelled within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let live = loop {
        let out = psql(
            &pg,
            &[("PGUSER", "ada")],
            &[
                "-A",
                "-t",
                "-c",
                "SELECT count(*) FROM sys.jobs WHERE state IN ('PLANNING', 'QUEUED', 'RUNNING') AND sql NOT LIKE '%sys.jobs%'",
            ],
        );
        let live = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if live == "0" || std::time::Instant::now() > deadline {
            break live;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let after = rss_kib(pid);
    println!(
        "RSS before {} MiB, after 200 connect/drop cycles {} MiB",
        before / 1024,
        after / 1024
    );
    assert_eq!(live, "0", "jobs left running by clients that went away");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 200 connections"
    );
}

const TOO_MANY: &str = r#"
import sys
import psycopg

host, port = sys.argv[1], int(sys.argv[2])
held = [psycopg.connect(host=host, port=port, dbname="quarry", user="ada") for _ in range(2)]
try:
    psycopg.connect(host=host, port=port, dbname="quarry", user="ada", connect_timeout=10)
    raise SystemExit("a connection over the limit was let in")
except psycopg.OperationalError as e:
    assert "too many clients" in str(e), str(e)
for conn in held:
    assert conn.execute("SELECT 1").fetchone()[0] == 1
    conn.close()
# Once they are gone, there is room again.
psycopg.connect(host=host, port=port, dbname="quarry", user="ada").close()
print("LIMIT OK")
"#;

/// Connections over `--max-connections` are refused with SQLSTATE 53300; those open are
/// undisturbed, and a slot frees when a client leaves.
#[test]
fn connections_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "0", "--max-connections", "2"]);
    let pg = quarry.pg.clone().expect("the PostgreSQL door is on");
    let (host, port) = pg.rsplit_once(':').expect("host:port");
    let out = run_python(TOO_MANY, &[host, port]);
    assert!(out.contains("LIMIT OK"), "{out}");
}
