"""The PostgreSQL door against the Flight SQL door of one `quarry up`, measured in one run:

- fetching a 10M-row, 4-column result: psycopg 3 (a server-side cursor, 100k rows per
  FETCH, text format, each row a Python tuple) vs the ADBC Flight SQL driver (Arrow
  batches), rows/s;
- `SELECT 1` round trips from one client, p50 and p99: psycopg (extended protocol) vs
  ADBC;
- the coordinator's RSS before and after 200 psycopg connect/query/drop cycles.

    .venv-test/bin/python bench/pgwire.py [--quarry target/release/quarry] [--rows 10000000]

Writes bench/results/pgwire.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def start(quarry, directory):
    args = [quarry, "up", "--dir", directory, "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--pg", "127.0.0.1:0", "--demo-rows", "0", "--executors", "1"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    flight = pg = None
    deadline = time.time() + 60
    for line in process.stdout:
        line = line.strip()
        if line.startswith("Flight SQL:"):
            flight = line.split("://", 1)[1]
        if line.startswith("PostgreSQL:"):
            words = line.split()
            pg = (words[words.index("-h") + 1], int(words[words.index("-p") + 1]))
        if flight and pg:
            return process, flight, pg
        if time.time() > deadline:
            break
    process.kill()
    raise SystemExit("quarry did not start: " + " ".join(args))


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def big_query(rows):
    return ("SELECT value AS id, value * 0.5 AS price, value %% 97 AS bucket, "
            "concat('item-', CAST(value %% 1000 AS VARCHAR)) AS name FROM generate_series(1, %d)" % rows)


def fetch_psycopg(pg, rows):
    import psycopg
    with psycopg.connect(host=pg[0], port=pg[1], dbname="quarry", user="bench") as conn:
        began = time.perf_counter()
        with conn.cursor(name="big") as cur:
            cur.execute(big_query(rows))
            got = 0
            while True:
                chunk = cur.fetchmany(100_000)
                if not chunk:
                    break
                got += len(chunk)
        elapsed = time.perf_counter() - began
    assert got == rows, got
    return rows / elapsed, elapsed


def fetch_adbc(flight, rows):
    import adbc_driver_flightsql.dbapi as flightsql
    conn = flightsql.connect("grpc://" + flight, autocommit=True)
    cur = conn.cursor()
    began = time.perf_counter()
    cur.execute(big_query(rows))
    got = 0
    for batch in cur.fetch_record_batch():
        got += batch.num_rows
    elapsed = time.perf_counter() - began
    conn.close()
    assert got == rows, got
    return rows / elapsed, elapsed


def select_one_psycopg(pg, n):
    import psycopg
    conn = psycopg.connect(host=pg[0], port=pg[1], dbname="quarry", user="bench", autocommit=True)
    for _ in range(50):
        conn.execute("SELECT 1").fetchone()
    latencies = []
    for _ in range(n):
        began = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        latencies.append(time.perf_counter() - began)
    conn.close()
    return latencies


def select_one_adbc(flight, n):
    import adbc_driver_flightsql.dbapi as flightsql
    conn = flightsql.connect("grpc://" + flight, autocommit=True)
    cur = conn.cursor()
    for _ in range(50):
        cur.execute("SELECT 1")
        cur.fetchall()
    latencies = []
    for _ in range(n):
        began = time.perf_counter()
        cur.execute("SELECT 1")
        cur.fetchall()
        latencies.append(time.perf_counter() - began)
    conn.close()
    return latencies


def connect_and_drop(pg, cycles):
    import psycopg
    for i in range(cycles):
        conn = psycopg.connect(host=pg[0], port=pg[1], dbname="quarry", user="bench")
        conn.execute("SELECT %s::BIGINT + 1", (i,)).fetchone()
        conn.close()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", default="target/release/quarry")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, flight, pg = start(args.quarry, directory)
        try:
            results = {"rows": args.rows}
            # Fetch rates, alternating doors, best of two each.
            pg_rates, adbc_rates = [], []
            for _ in range(2):
                pg_rates.append(fetch_psycopg(pg, args.rows)[0])
                adbc_rates.append(fetch_adbc(flight, args.rows)[0])
            results["fetch_rows_per_s"] = {"psycopg": max(pg_rates), "adbc": max(adbc_rates)}
            results["fetch_ratio_adbc_over_psycopg"] = max(adbc_rates) / max(pg_rates)
            # SELECT 1, alternating.
            pings = {"psycopg": [], "adbc": []}
            for _ in range(2):
                pings["psycopg"] += select_one_psycopg(pg, args.pings // 2)
                pings["adbc"] += select_one_adbc(flight, args.pings // 2)
            results["select_one_ms"] = {
                door: {"p50": statistics.median(l) * 1000, "p99": percentile(l, 0.99) * 1000}
                for door, l in pings.items()
            }
            # Memory over connections that come and go.
            connect_and_drop(pg, 20)
            before = rss_mib(process.pid)
            connect_and_drop(pg, 200)
            time.sleep(1)
            after = rss_mib(process.pid)
            results["rss_mib_200_connect_drop"] = {"before": before, "after": after}
        finally:
            process.kill()
            process.wait()
    print(json.dumps(results, indent=2))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pgwire.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
