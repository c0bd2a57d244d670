#!/usr/bin/env bash
# millwatch (SQLite store, fsync on every commit) against InfluxDB 1.x, in the same run, with
# the same load tool and the same readings: NDJSON to millwatch's /ingest, line protocol to
# InfluxDB's /write. Both on loopback, both in their own temporary data directories, both
# fsync'ing before they answer. Bounded in time; stops both servers at the end.
#
#   bench/vs_influxdb.sh [DURATION] [ROUNDS] [TOOL]
#
# TOOL is the load tool, the same for both servers:
#   lean (default)  examples/ingest_load.rs: renders each connection's body once and rewrites only
#                   the timestamps, so the server under test keeps nearly all of the two cores;
#   wrk             wrk with bench/ingest.lua, which builds every body in Lua and takes about a
#                   quarter of the machine for itself at these rates.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
rounds=${2:-3}
tool=${3:-lean}
case "$tool" in lean | wrk) ;; *) echo "TOOL must be lean or wrk, not $tool" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v influxd >/dev/null || { apt-get update -qq && apt-get install -y -qq influxdb; }
cargo build --release --quiet --bin millwatch --example ingest_load

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

influx_port=$(free_port)
cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$(free_port)"
[meta]
  dir = "$dir/influx/meta"
[data]
  dir = "$dir/influx/data"
  wal-dir = "$dir/influx/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx_port"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
CONF
influxd -config "$dir/influxdb.conf" >"$dir/influxd.log" 2>&1 &
pids+=($!)
mw_port=$(free_port)
target/release/millwatch serve --source none --store "sqlite:$dir/millwatch.db" \
  --listen "127.0.0.1:$mw_port" --log warn >"$dir/millwatch.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$influx_port/ping" >/dev/null && curl -sf "http://127.0.0.1:$mw_port/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf -XPOST "http://127.0.0.1:$influx_port/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null

# load PORT FORMAT: one round against one server, printing wrk's or ingest_load's result line.
load() {
  if [ "$tool" = wrk ]; then
    wrk -t2 -c2 -d"$duration" --latency -s bench/ingest.lua "http://127.0.0.1:$1" -- "$2" | grep -E '^result:|Non-2xx'
  else
    target/release/examples/ingest_load --url "http://127.0.0.1:$1" --format "$2" --duration "$duration" --connections 2
  fi
}

echo "$(nproc) cores; load tool $tool; $rounds rounds of $duration each, 2 connections, 1000 readings per request"
for r in $(seq "$rounds"); do
  load "$mw_port" json | sed "s/^/round $r millwatch  /"
  load "$influx_port" lp | sed "s/^/round $r influxdb   /"
done
points=$(curl -sf -G "http://127.0.0.1:$influx_port/query" --data-urlencode "db=bench" \
  --data-urlencode "q=SELECT count(temperature) FROM machine" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["results"][0]["series"][0]["values"][0][1])' || echo "?")
echo "InfluxDB holds $points points of temperature; millwatch: $(curl -sf "http://127.0.0.1:$mw_port/metrics" | grep 'millwatch_readings_total{source="http",outcome="accepted"}' | awk '{print $2}') readings accepted"
