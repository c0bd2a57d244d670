#!/usr/bin/env bash
# Load test on loopback, bounded in time: /ingest readings per second (1000-reading NDJSON
# batches) and /data/latest requests per second with p50/p99 latency.
#
#   bench/load.sh [STORE] [DURATION]      STORE: memory (default), sqlite:FILE, postgres://…
#
# Installs wrk from Debian's packages when it is missing. Starts its own server on a free
# port and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:-memory}
duration=${2:-10s}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
target/release/millwatch serve --source none --store "$store" --listen "127.0.0.1:$port" \
  --log warn >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

echo "store: $store, duration: $duration, $(nproc) cores"
wrk -t2 -c2 -d"$duration" --latency -s bench/ingest.lua "http://127.0.0.1:$port" -- json | grep -E "^result:|Socket errors|Non-2xx" || true
wrk -t2 -c8 -d"$duration" --latency -s bench/latest.lua "http://127.0.0.1:$port/data/latest" | grep -E '^latest:|Socket errors|Non-2xx' || true
