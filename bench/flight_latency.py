"""Flight SQL `SELECT 1` latency and throughput from 16 concurrent ADBC clients, with
authentication off and on (Bearer tokens after one Basic login per client), and with
authentication on while another client sends failed logins as fast as it can, measured
in one run: two `quarry up` processes, phases alternating between them.

    .venv-test/bin/python bench/flight_latency.py [--quarry target/release/quarry]
        [--clients 16] [--seconds 5] [--rounds 3] [--modes off,on,attack] [--out FILE]

Writes bench/results/flight-latency.json (or --out). `--modes off` measures only the
unauthenticated path (one `quarry up`), as the small-query numbers do.
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
    args = [quarry, "up", "--dir", directory, "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0", "--pg", "127.0.0.1:0",
            "--demo-rows", "0", "--executors", "1"] + extra
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    flight = None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("Flight SQL:"):
            flight = line.split("://", 1)[1]
        if line.startswith("HTTP:") and flight:
            return process, flight, line.split(":", 1)[1].strip()
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


def failed_logins(http, start_at, seconds, counter):
    import urllib.error
    import urllib.request

    while time.time() < start_at:
        time.sleep(0.001)
    attempts = 0
    while time.time() < start_at + seconds:
        request = urllib.request.Request(http + "/api/v1/login", data=b'{"user": "admin", "password": "wrong"}',
                                         headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
        attempts += 1
    counter.put(attempts)


def phase(address, credentials, clients, seconds, attacker=None):
    results = multiprocessing.Queue()
    start_at = time.time() + 3
    workers = [multiprocessing.Process(target=client, args=(address, credentials, seconds, start_at, results))
               for _ in range(clients)]
    attempts = multiprocessing.Queue()
    if attacker:
        workers.append(multiprocessing.Process(target=failed_logins, args=(attacker, start_at, seconds, attempts)))
    for w in workers:
        w.start()
    latencies = []
    for _ in range(clients):
        latencies.extend(results.get(timeout=seconds + 120))
    logins = attempts.get(timeout=seconds + 120) if attacker else 0
    for w in workers:
        w.join()
    return latencies, logins


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
    parser.add_argument("--modes", default="off,on,attack")
    parser.add_argument("--out", default="bench/results/flight-latency.json")
    args = parser.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        off, off_address, _ = start(args.quarry, off_dir, [])
        on, on_address, on_http = start(args.quarry, on_dir, ["--auth", "--admin-password", "bench-pw"])
        try:
            measured = {"auth off": [], "auth on": [], "auth on, failed logins": []}
            failed = 0
            for round_ in range(args.rounds):
                for key, mode, address, credentials, attacker in [
                        ("off", "auth off", off_address, None, None),
                        ("on", "auth on", on_address, ("admin", "bench-pw"), None),
                        ("attack", "auth on, failed logins", on_address, ("admin", "bench-pw"), on_http)]:
                    if key not in modes:
                        continue
                    latencies, logins = phase(address, credentials, args.clients, args.seconds, attacker)
                    failed += logins
                    measured[mode].extend(latencies)
                    s = summary(latencies, args.seconds)
                    extra = "  (%d failed logins)" % logins if attacker else ""
                    print("round %d %-22s %7.0f QPS  p50 %.2f ms  p99 %.2f ms%s" % (round_ + 1, mode, s["qps"], s["p50_ms"], s["p99_ms"], extra))
        finally:
            off.kill()
            on.kill()
    total = args.seconds * args.rounds
    report = {mode: summary(latencies, total) for mode, latencies in measured.items() if latencies}
    report["failed_logins"] = failed
    if "auth on" in report and "auth on, failed logins" in report:
        report["failed_login_cost_qps"] = 1 - report["auth on, failed logins"]["qps"] / report["auth on"]["qps"]
    if "auth on" in report and "auth off" in report:
        report["auth_cost_qps"] = 1 - report["auth on"]["qps"] / report["auth off"]["qps"]
        report["auth_cost_p50"] = report["auth on"]["p50_ms"] / report["auth off"]["p50_ms"] - 1
    report["clients"] = args.clients
    report["cores"] = os.cpu_count()
    print(json.dumps(report, indent=2))
    os.makedirs("bench/results", exist_ok=True)
    with open(args.out, "w") as out:
        json.dump(report, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
