#!/usr/bin/env python3
"""Operations costs: `/metrics` scrape time and size on a coordinator with 100 jobs and 3
executors, then backup and restore time and size for a catalog of 1,000 tables and 10,000
jobs, all on one `quarry up` in one run.

    python3 bench/ops.py --quarry target/release/quarry [--tables 1000 --jobs 10000]

Writes bench/results/ops.json.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def post_sql(http, sql):
    request = urllib.request.Request(
        f"{http}/api/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def scrape(http):
    started = time.perf_counter()
    with urllib.request.urlopen(f"{http}/metrics", timeout=30) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def timed(command):
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{command}: {out.stderr}")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", required=True)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--out", default="bench/results/ops.json")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="quarry-ops-")
    ready = os.path.join(root, "ready.json")
    up = subprocess.Popen(
        [args.quarry, "up", "--dir", os.path.join(root, "data"), "--executors", "3",
         "--demo-rows", "0", "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--pg", "off", "--ready-file", ready],
        stdout=subprocess.DEVNULL,
    )
    try:
        while not os.path.exists(ready):
            if up.poll() is not None:
                sys.exit("quarry up exited")
            time.sleep(0.05)
        http = json.load(open(ready))["http"]
        pool = concurrent.futures.ThreadPoolExecutor(8)
        list(pool.map(lambda i: post_sql(http, f"SELECT {i} AS x"), range(100)))
        samples = [scrape(http) for _ in range(50)]
        times = sorted(t for t, _ in samples)
        metrics = {
            "jobs": 100, "executors": 3,
            "scrape_ms_p50": round(statistics.median(times) * 1000, 2),
            "scrape_ms_max": round(times[-1] * 1000, 2),
            "bytes": samples[-1][1],
        }
        print(f"/metrics: {metrics}", flush=True)

        started = time.perf_counter()
        list(pool.map(
            lambda i: post_sql(http, f"CREATE TABLE t{i} AS SELECT {i} AS id, 'row {i}' AS name"),
            range(args.tables)))
        made_tables = time.perf_counter() - started
        started = time.perf_counter()
        list(pool.map(lambda i: post_sql(http, f"SELECT {i} AS x"), range(args.jobs - 100 - args.tables)))
        made_jobs = time.perf_counter() - started
        print(f"made {args.tables} tables in {made_tables:.1f}s, jobs in {made_jobs:.1f}s", flush=True)

        results = {"metrics": metrics, "tables": args.tables, "jobs": args.jobs, "backup": {}}
        for with_jobs in (False, True):
            file = os.path.join(root, f"catalog-{with_jobs}.backup")
            command = [args.quarry, "backup", "--coordinator", http, "--to", file]
            if with_jobs:
                command.append("--jobs")
            runs = sorted(timed(command) for _ in range(3))
            key = "with_jobs" if with_jobs else "without_jobs"
            results["backup"][key] = {
                "seconds_p50": round(runs[1], 3),
                "bytes": os.path.getsize(file),
            }
            restore = timed([args.quarry, "restore", "--from", file,
                             "--dir", os.path.join(root, f"restored-{with_jobs}")])
            results["backup"][key]["restore_seconds"] = round(restore, 3)
            print(f"backup {key}: {results['backup'][key]}", flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(json.dumps(results, indent=2))
    finally:
        up.terminate()
        up.wait()


if __name__ == "__main__":
    main()
