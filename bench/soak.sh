#!/usr/bin/env bash
# Soak test on loopback, bounded in time: a release server under a steady ingest rate (by
# default half its peak; at that rate curl's event-stream clients cannot keep up and are
# dropped and reconnect all the time, so give a plant-sized RATE to keep them connected),
# with 50 event-stream clients, 20 slow event-stream readers (100 bytes/s) and a job-status
# change every 5 s; every minute it prints the server's RSS, its open descriptors and the
# ingest p99 of that minute.
#
#   bench/soak.sh [DURATION_MINUTES] [STORE] [RATE]   defaults: 60, sqlite (a temporary file),
#                                                     half the measured peak (readings/s)
#
# Starts its own server on a free port and stops everything at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
store=${2:-}
rate=${3:-}
cargo build --release --quiet --bin millwatch --example ingest_load
dir=$(mktemp -d)
store=${store:-sqlite:$dir/soak.db}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
target/release/millwatch serve --source none --store "$store" --listen "127.0.0.1:$port" \
  --log warn >"$dir/serve.log" 2>&1 &
server=$!
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done

load=target/release/examples/ingest_load
peak=$($load --url "$url" --duration 10s --time-base 1000000000 | sed -n 's/.*-> \([0-9]*\) readings\/s.*/\1/p')
rate=${rate:-$((peak / 2))}
echo "store: $store; peak ingest ${peak} readings/s, soaking at ${rate} for ${minutes} min, $(nproc) cores"

for _ in $(seq 50); do
  ( while :; do curl -sN "$url/events" >/dev/null 2>&1; sleep 1; done ) &
  pids+=($!)
done
for _ in $(seq 20); do
  ( while :; do curl -sN --limit-rate 100 "$url/events" >/dev/null 2>&1; sleep 1; done ) &
  pids+=($!)
done
(
  s=RUNNING
  while :; do
    curl -s -o /dev/null -X POST "$url/status" -H 'content-type: application/json' \
      -d "{\"machine_id\": \"soak-1\", \"status\": \"$s\"}"
    if [ "$s" = RUNNING ]; then s=PAUSED; else s=RUNNING; fi
    sleep 5
  done
) &
pids+=($!)

printf '%6s %10s %6s %6s %12s %10s %8s\n' minute rss_mib fds sse readings/s p99_ms failed
for m in $(seq 1 "$minutes"); do
  line=$($load --url "$url" --duration 60s --rate "$rate" --time-base $((1000000000 + m * 1000000)) 2>&1 | grep '^result:' || true)
  rss=$(awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$server/status")
  fds=$(ls "/proc/$server/fd" | wc -l)
  # event-stream clients connected at the end of the minute (curl processes with an open socket)
  sse=$(ss -tnH state established "( dport = :$port )" 2>/dev/null | wc -l)
  got=$(echo "$line" | sed -n 's/.*-> \([0-9]*\) readings\/s.*/\1/p')
  p99=$(echo "$line" | sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p')
  failed=$(echo "$line" | sed -n 's/.*(\([0-9]*\) failed).*/\1/p')
  printf '%6s %10s %6s %6s %12s %10s %8s\n' "$m" "$rss" "$fds" "$sse" "${got:-?}" "${p99:-?}" "${failed:-?}"
done
