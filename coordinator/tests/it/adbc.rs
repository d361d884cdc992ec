//! The real `quarry` binary, queried with the ADBC Flight SQL driver from Python: what
//! BI tools and notebooks do.

use crate::harness::{QuarryProcess, run_python};

const CLIENT: &str = r#"
import json
import sys
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager

uri = "grpc://" + sys.argv[1]
conn = flightsql.connect(uri, autocommit=True)

# get_info: who is this?
info = conn.adbc_get_info()
assert info["vendor_name"] == "Quarry", info
print("vendor", info["vendor_name"], info.get("vendor_version"))

cur = conn.cursor()

# execute + fetch_arrow_table
cur.execute("SELECT city, count(*) AS n, sum(revenue) AS revenue FROM demo.orders GROUP BY city ORDER BY n DESC")
table = cur.fetch_arrow_table()
assert table.num_rows == 10, table
assert table.column_names == ["city", "n", "revenue"], table.column_names
assert sum(table.column("n").to_pylist()) == 10000
print("top city", table.column("city")[0])

# a prepared statement with a bound parameter
cur.execute("SELECT count(*) AS n FROM demo.orders WHERE city = ?", parameters=("Mumbai",))
mumbai = cur.fetch_arrow_table().column("n")[0].as_py()
cur.execute("SELECT count(*) AS n FROM demo.orders WHERE city = 'Mumbai'")
assert cur.fetch_arrow_table().column("n")[0].as_py() == mumbai
cur.execute("SELECT order_id FROM demo.orders WHERE order_id BETWEEN ? AND ? ORDER BY order_id", parameters=(10, 14))
assert cur.fetch_arrow_table().column("order_id").to_pylist() == [10, 11, 12, 13, 14]
print("prepared ok", mumbai)

# catalog browsing: one catalog, its schemas, tables with columns
objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
assert [c["catalog_name"] for c in objects] == ["quarry"], objects
schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
assert "demo" in schemas and "public" in schemas, schemas.keys()
tables = {t["table_name"]: t for t in schemas["demo"]["db_schema_tables"]}
assert set(tables) >= {"orders", "orders_csv"}, tables.keys()
columns = [c["column_name"] for c in tables["orders"]["table_columns"]]
assert columns[:3] == ["order_id", "date", "customer_age"], columns
assert "month" in columns, columns

schema = conn.adbc_get_table_schema("orders", db_schema_filter="demo")
assert schema.field("revenue").type.equals(__import__("pyarrow").float64()), schema
types = conn.adbc_get_table_types()
assert "TABLE" in types and "VIEW" in types, types

# DDL through the driver, and the new table is visible at once
cur.execute("CREATE SCHEMA IF NOT EXISTS adbc")
cur.execute("CREATE OR REPLACE VIEW adbc.big_orders AS SELECT * FROM demo.orders WHERE revenue > 50000")
cur.execute("SELECT count(*) AS n FROM adbc.big_orders")
assert cur.fetch_arrow_table().column("n")[0].as_py() > 0

# writes: a managed table from a query, then an update whose count is the rows it added
cur.execute("CREATE TABLE adbc.cities AS SELECT city, count(*) AS n FROM demo.orders GROUP BY city")
assert cur.fetch_arrow_table().column("count")[0].as_py() == 10
stmt = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
stmt.set_sql_query("INSERT INTO adbc.cities SELECT city, n FROM adbc.cities")
assert stmt.execute_update() == 10, "update count"
stmt.close()
cur.execute("SELECT count(*) AS n, sum(n) AS orders FROM adbc.cities")
written = cur.fetch_arrow_table().to_pylist()[0]
assert written == {"n": 20, "orders": 20000}, written
print("writes ok")

# errors carry the server's message and a proper status
try:
    cur.execute("SELEC 1")
    raise SystemExit("malformed SQL was accepted")
except adbc_driver_manager.Error as e:
    assert "Expected" in str(e) and "Column: 1" in str(e), str(e)
    print("syntax error ok")
try:
    cur.execute("SELECT * FROM demo.nope")
    raise SystemExit("a missing table was accepted")
except adbc_driver_manager.Error as e:
    assert "not found" in str(e), str(e)

# the session keeps settings: USE and SET persist between statements
cur.execute("USE demo")
cur.execute("SELECT count(*) AS n FROM orders_csv")
assert cur.fetch_arrow_table().column("n")[0].as_py() == 10000
# session options (Flight's SetSessionOptions / GetSessionOptions)
conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.datafusion.execution.batch_size": "4096"})
options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
assert options["datafusion.execution.batch_size"] == "4096", options
assert options["schema"] == "demo", options
cur.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
assert cur.fetch_arrow_table().column("value")[0].as_py() == "4096"
cur.close()
conn.close()
print("ADBC OK")
"#;

const AUTH_CLIENT: &str = r#"
import sys
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager

uri = "grpc://" + sys.argv[1]
try:
    conn = flightsql.connect(uri, db_kwargs={"username": "admin", "password": "wrong"}, autocommit=True)
    conn.cursor().execute("SELECT 1")
    raise SystemExit("a wrong password was accepted")
except adbc_driver_manager.Error as e:
    assert "wrong user name or password" in str(e) or "UNAUTHENTICATED" in str(e).upper(), str(e)
conn = flightsql.connect(uri, db_kwargs={"username": "admin", "password": "pw"}, autocommit=True)
cur = conn.cursor()
cur.execute("SELECT count(*) AS n FROM demo.orders")
assert cur.fetch_arrow_table().column("n")[0].as_py() == 1000

# A user without SELECT neither reads nor sees demo.orders; a grant opens both, a revoke
# closes them again.
cur.execute("CREATE USER ada PASSWORD 'ada-pw'")
cur.fetchall()
ada = flightsql.connect(uri, db_kwargs={"username": "ada", "password": "ada-pw"}, autocommit=True)
ada_cur = ada.cursor()

def listed():
    names = []
    for catalog in ada.adbc_get_objects(depth="tables").read_all().to_pylist():
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                names.append(schema["db_schema_name"] + "." + table["table_name"])
    return names

def denied():
    try:
        ada_cur.execute("SELECT count(*) FROM demo.orders")
        ada_cur.fetchall()
    except adbc_driver_manager.Error as e:
        assert "no SELECT privilege on demo.orders" in str(e), str(e)
        return "%s %s" % (type(e).__name__, getattr(e, "status_code", ""))
    raise SystemExit("ada read demo.orders without a grant")

print("denied as", denied())
assert "demo.orders" not in listed(), listed()
cur.execute("GRANT SELECT ON TABLE demo.orders TO USER ada")
cur.fetchall()
ada_cur.execute("SELECT count(*) AS n FROM demo.orders")
assert ada_cur.fetch_arrow_table().column("n")[0].as_py() == 1000
assert "demo.orders" in listed(), listed()
cur.execute("REVOKE SELECT ON TABLE demo.orders FROM USER ada")
cur.fetchall()
denied()
assert "demo.orders" not in listed(), listed()
print("AUTH OK")
"#;

/// A client whose deadline passes while its query runs: the driver gives up on the DoGet
/// stream, and the query is cancelled and freed on the executors within seconds.
const DEADLINE_CLIENT: &str = r#"
import json
import sys
import time
import urllib.request
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager

flight, http = sys.argv[1], sys.argv[2]

def sql(q):
    request = urllib.request.Request(
        http + "/api/v1/sql",
        data=json.dumps({"sql": q}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())

conn = flightsql.connect(
    "grpc://" + flight,
    db_kwargs={"adbc.flight.sql.rpc.timeout_seconds.fetch": "2"},
    autocommit=True,
)
cur = conn.cursor()
started = time.time()
try:
    # A billion pairs: still running when the deadline passes.
    cur.execute("SELECT count(*) AS pairs, 'adbc-deadline' AS marker FROM demo.orders a JOIN demo.orders b ON a.city = b.city")
    cur.fetch_arrow_table()
    raise SystemExit("the query finished before the client's deadline")
except adbc_driver_manager.Error as e:
    print("client gave up after %.1f s: %s" % (time.time() - started, str(e)[:100]))

deadline = time.time() + 20
while True:
    rows = sql("SELECT state FROM sys.jobs WHERE sql LIKE '%''adbc-deadline''%' AND sql NOT LIKE '%sys.jobs%'")["rows"]
    if rows and rows[0]["state"] == "CANCELED":
        break
    assert time.time() < deadline, rows
    time.sleep(0.2)
while True:
    nodes = sql("SELECT running_tasks, exchange_outputs, spill_files FROM sys.nodes")["rows"]
    if all(n["running_tasks"] == 0 and n["exchange_outputs"] == 0 and n["spill_files"] == 0 for n in nodes):
        break
    assert time.time() < deadline, nodes
    time.sleep(0.2)
print("everything freed %.1f s after the query started" % (time.time() - started))
print("DEADLINE OK")
"#;

#[test]
fn a_client_whose_deadline_passes_leaves_nothing_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "100000"]);
    let out = run_python(DEADLINE_CLIENT, &[&quarry.flight, &quarry.http]);
    assert!(out.contains("DEADLINE OK"), "{out}");
    eprintln!("{out}");
}

#[test]
fn adbc_driver_against_quarry_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(dir.path(), &["--demo-rows", "10000"]);
    let out = run_python(CLIENT, &[&quarry.flight]);
    assert!(out.contains("ADBC OK"), "{out}");
    assert!(out.contains("vendor Quarry"), "{out}");
}

#[test]
fn adbc_basic_to_bearer_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(
        dir.path(),
        &["--demo-rows", "1000", "--auth", "--admin-password", "pw"],
    );
    let out = run_python(AUTH_CLIENT, &[&quarry.flight]);
    assert!(out.contains("AUTH OK"), "{out}");
}
