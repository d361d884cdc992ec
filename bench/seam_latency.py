"""What a change to the coordinator costs a query's fixed part: Flight SQL `SELECT 1` from one
ADBC client and from 16 at once, against two `quarry up` processes of two builds (this one
and a baseline), phases alternating between them so the machine's drift hits both alike.

    .venv-test/bin/python bench/seam_latency.py --baseline /path/to/older/quarry
        [--quarry target/debug/quarry] [--seconds 5] [--rounds 3]

Writes bench/results/seam-latency.json.
"""

import argparse
import json
import os
import sys
import tempfile

from flight_latency import phase, start, summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", default="target/release/quarry")
    parser.add_argument("--baseline", required=True, help="the quarry binary of the build compared with")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    builds = {"this build": args.quarry, "baseline": args.baseline}
    measured = {(name, clients): [] for name in builds for clients in (1, 16)}
    with tempfile.TemporaryDirectory() as root:
        running = {}
        try:
            for name, binary in builds.items():
                directory = os.path.join(root, name.replace(" ", "-"))
                os.makedirs(directory)
                running[name] = start(binary, directory, [])
            for round_ in range(args.rounds):
                for clients in (1, 16):
                    for name in builds:
                        latencies, _ = phase(running[name][1], None, clients, args.seconds)
                        measured[(name, clients)].extend(latencies)
                        s = summary(latencies, args.seconds)
                        print("round %d %-10s %2d clients %7.0f QPS  p50 %.2f ms  p99 %.2f ms"
                              % (round_ + 1, name, clients, s["qps"], s["p50_ms"], s["p99_ms"]))
        finally:
            for process, _, _ in running.values():
                process.kill()
    total = args.seconds * args.rounds
    report = {"%s, %d client%s" % (name, clients, "" if clients == 1 else "s"): summary(latencies, total)
              for (name, clients), latencies in measured.items()}
    for clients, label in ((1, "1 client"), (16, "16 clients")):
        this, base = report["this build, " + label], report["baseline, " + label]
        report["p50 ratio, " + label] = this["p50_ms"] / base["p50_ms"]
        report["qps ratio, " + label] = this["qps"] / base["qps"]
    report["cores"] = os.cpu_count()
    print(json.dumps(report, indent=2))
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/seam-latency.json", "w") as out:
        json.dump(report, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
