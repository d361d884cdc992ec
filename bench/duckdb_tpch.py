"""Run the TPC-H queries on DuckDB over Quarry's Parquet files.

usage: duckdb_tpch.py DATA_DIR QUERY_DIR ITERATIONS THREADS [QUERIES, e.g. 1,3,22]
prints JSON: {"q1": {"ms": [..], "rows": [[...], ...]}, ...}
"""
import json
import pathlib
import sys
import time

import duckdb

data, queries, iterations, threads = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
con = duckdb.connect()
# No extension downloads: this machine has no internet.
con.execute("SET autoinstall_known_extensions = false")
con.execute("SET autoload_known_extensions = false")
con.execute(f"SET threads = {threads}")
for table in ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]:
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data / table}/*.parquet')")
out = {}
wanted = [int(q) for q in sys.argv[5].split(",")] if len(sys.argv) > 5 and sys.argv[5] else range(1, 23)
for n in wanted:
    sql = (queries / f"q{n}.sql").read_text()
    times = []
    rows = None
    for _ in range(iterations):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    out[f"q{n}"] = {"ms": times, "rows": [[str(v) for v in row] for row in rows]}
print(json.dumps(out))
