#!/usr/bin/env python3
"""The cost of tracing: `SELECT 1` and a distributed GROUP BY over REST on `quarry up`
without `--otlp-endpoint` and with it (spans exported over OTLP/gRPC to a receiver that
accepts and drops them), both in one run, alternating, on the same machine.

    python3 bench/traces.py --quarry target/release/quarry [--rounds 300] [--tpch DIR]

With --tpch (a folder of TPC-H Parquet tables, as quarry-bench generates them), the 22
queries also run on both, alternating, and the totals of their medians are compared.

Needs grpcio (the receiver); writes bench/results/traces.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent import futures

import grpc


def receiver():
    """An OTLP trace endpoint that answers every export with an empty response."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(
            lambda request, context: b"",
            request_deserializer=lambda b: b, response_serializer=lambda b: b)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"http://127.0.0.1:{port}"


def start(quarry, root, name, extra):
    ready = os.path.join(root, f"{name}.ready")
    process = subprocess.Popen(
        [quarry, "up", "--dir", os.path.join(root, name), "--demo-rows", "200000",
         "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0", "--pg", "off",
         "--ready-file", ready] + extra,
        stdout=subprocess.DEVNULL)
    while not os.path.exists(ready):
        if process.poll() is not None:
            sys.exit(f"{name} exited")
        time.sleep(0.05)
    return process, json.load(open(ready))["http"]


def run(http, sql):
    request = urllib.request.Request(
        f"{http}/api/v1/sql", data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


TPCH_TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def tpch(args, off_http, on_http):
    """The 22 queries on both, alternating; the totals of their medians."""
    for http in (off_http, on_http):
        run(http, f"CREATE SOURCE IF NOT EXISTS tpch TYPE local WITH (root = '{args.tpch}')")
        for table in TPCH_TABLES:
            run(http, f"CREATE TABLE IF NOT EXISTS {table} FROM tpch '{table}' FORMAT parquet")
    queries = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tpch", "queries")
    totals = {"off": 0.0, "on": 0.0}
    for n in range(1, 23):
        sql = open(os.path.join(queries, f"q{n}.sql")).read()
        times = {"off": [], "on": []}
        for _ in range(args.iterations):
            times["off"].append(run(off_http, sql))
            times["on"].append(run(on_http, sql))
        for k in totals:
            totals[k] += statistics.median(times[k])
    return {
        "iterations": args.iterations,
        "total_s_off": round(totals["off"], 3),
        "total_s_on": round(totals["on"], 3),
        "ratio_on_off": round(totals["on"] / totals["off"], 3),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", required=True)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--tpch", help="TPC-H Parquet tables to run the 22 queries over")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", default="bench/results/traces.json")
    args = parser.parse_args()
    server, endpoint = receiver()
    root = tempfile.mkdtemp(prefix="quarry-traces-")
    off, off_http = start(args.quarry, root, "off", [])
    on, on_http = start(args.quarry, root, "on", ["--otlp-endpoint", endpoint])
    queries = {
        "select_1": ("SELECT 1", args.rounds),
        "group_by": ("SELECT city, count(*), sum(revenue) FROM demo.orders GROUP BY city", args.rounds // 10),
    }
    results = {}
    try:
        for name, (sql, rounds) in queries.items():
            for http in (off_http, on_http):
                for _ in range(5):
                    run(http, sql)
            times = {"off": [], "on": []}
            for _ in range(rounds):
                times["off"].append(run(off_http, sql))
                times["on"].append(run(on_http, sql))
            p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
            results[name] = {
                "rounds": rounds,
                "p50_ms_off": round(p50["off"], 3),
                "p50_ms_on": round(p50["on"], 3),
                "ratio_on_off": round(p50["on"] / p50["off"], 3),
            }
            print(name, results[name], flush=True)
        if args.tpch:
            results["tpch"] = tpch(args, off_http, on_http)
            print("tpch", results["tpch"], flush=True)
    finally:
        for p in (off, on):
            p.terminate()
            p.wait()
        server.stop(0)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
