#!/usr/bin/env bash
# A Quarry cluster of separate processes on this machine: one coordinator and N
# executors, each with its own directory and log. Ctrl-C stops them all.
#
#   deploy/local-cluster.sh [EXECUTORS] [DIR]
#
# QUARRY_BIN picks the binary (default: target/release/quarry).
set -euo pipefail
executors="${1:-3}"
dir="${2:-./quarry-cluster}"
bin="${QUARRY_BIN:-target/release/quarry}"
flight="${QUARRY_FLIGHT:-127.0.0.1:32010}"
http="${QUARRY_HTTP:-127.0.0.1:9047}"
internal="${QUARRY_INTERNAL:-127.0.0.1:45678}"

if [ ! -x "$bin" ]; then
  echo "no quarry binary at $bin: run 'cargo build --release' or set QUARRY_BIN" >&2
  exit 1
fi
mkdir -p "$dir"
# Every process of the cluster shows this secret; one without it cannot join.
export QUARRY_CLUSTER_SECRET="${QUARRY_CLUSTER_SECRET:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$bin" coordinator --dir "$dir/coordinator" --flight "$flight" --http "$http" --internal "$internal" \
  >"$dir/coordinator.log" 2>&1 &
pids+=($!)
for i in $(seq 1 "$executors"); do
  "$bin" executor --coordinator "http://$internal" --id "executor-$i" --dir "$dir/executor-$i" \
    >"$dir/executor-$i.log" 2>&1 &
  pids+=($!)
done

for _ in $(seq 1 100); do
  if curl -s --max-time 1 "http://$http/healthz" | grep -q "\"executors\":$executors"; then
    echo "Quarry cluster up: coordinator + $executors executors (logs in $dir)"
    echo "  Flight SQL:  grpc://$flight"
    echo "  HTTP:        http://$http"
    wait
    exit 0
  fi
  sleep 0.2
done
echo "the cluster did not come up; see the logs in $dir" >&2
exit 1
