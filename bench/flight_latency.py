"""Flight SQL `SELECT 1` latency and throughput from 16 concurrent ADBC clients, with
authentication off and on (Bearer tokens after one Basic login per client), measured in
one run: two `quarry up` processes, phases alternating between them.

    .venv-test/bin/python bench/flight_latency.py [--quarry target/release/quarry]
        [--clients 16] [--seconds 5] [--rounds 3]

Writes bench/results/flight-latency.json.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time


def start(quarry, directory, extra):
    args = [quarry, "up", "--dir", directory, "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--demo-rows", "0", "--executors", "1"] + extra
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    for line in process.stdout:
        line = line.strip()
        if line.startswith("Flight SQL:"):
            return process, line.split("://", 1)[1]
        if time.time() > deadline:
            break
    process.kill()
    raise SystemExit("quarry did not start: " + " ".join(args))


def client(address, credentials, seconds, start_at, results):
    import adbc_driver_flightsql.dbapi as flightsql

    kwargs = {"username": credentials[0], "password": credentials[1]} if credentials else {}
    conn = flightsql.connect("grpc://" + address, db_kwargs=kwargs, autocommit=True)
    cur = conn.cursor()
    for _ in range(20):
        cur.execute("SELECT 1")
        cur.fetchall()
    while time.time() < start_at:
        time.sleep(0.001)
    latencies = []
    end = start_at + seconds
    while True:
        began = time.perf_counter()
        cur.execute("SELECT 1")
        cur.fetchall()
        latencies.append(time.perf_counter() - began)
        if time.time() >= end:
            break
    conn.close()
    results.put(latencies)


def phase(address, credentials, clients, seconds):
    results = multiprocessing.Queue()
    start_at = time.time() + 3
    workers = [multiprocessing.Process(target=client, args=(address, credentials, seconds, start_at, results))
               for _ in range(clients)]
    for w in workers:
        w.start()
    latencies = []
    for _ in workers:
        latencies.extend(results.get(timeout=seconds + 120))
    for w in workers:
        w.join()
    return latencies


def summary(latencies, seconds):
    ordered = sorted(latencies)

    def at(p):
        return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))] * 1000

    return {"queries": len(ordered), "qps": len(ordered) / seconds, "p50_ms": at(0.5), "p99_ms": at(0.99)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", default="target/release/quarry")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        off, off_address = start(args.quarry, off_dir, [])
        on, on_address = start(args.quarry, on_dir, ["--auth", "--admin-password", "bench-pw"])
        try:
            measured = {"auth off": [], "auth on": []}
            for round_ in range(args.rounds):
                for mode, address, credentials in [("auth off", off_address, None),
                                                   ("auth on", on_address, ("admin", "bench-pw"))]:
                    latencies = phase(address, credentials, args.clients, args.seconds)
                    measured[mode].extend(latencies)
                    s = summary(latencies, args.seconds)
                    print("round %d %-8s %7.0f QPS  p50 %.2f ms  p99 %.2f ms" % (round_ + 1, mode, s["qps"], s["p50_ms"], s["p99_ms"]))
        finally:
            off.kill()
            on.kill()
    total = args.seconds * args.rounds
    report = {mode: summary(latencies, total) for mode, latencies in measured.items()}
    report["auth_cost_qps"] = 1 - report["auth on"]["qps"] / report["auth off"]["qps"]
    report["auth_cost_p50"] = report["auth on"]["p50_ms"] / report["auth off"]["p50_ms"] - 1
    report["clients"] = args.clients
    report["cores"] = os.cpu_count()
    print(json.dumps(report, indent=2))
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/flight-latency.json", "w") as out:
        json.dump(report, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
