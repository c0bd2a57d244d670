#!/usr/bin/env bash
# PostgreSQL ingest with this build's layout (chunks + the public relations of SPEC §10)
# against a build of the 0.1 layout (chunks only) and InfluxDB 1.x, in the same run, with the
# same load tool and readings (examples/ingest_load.rs, 2 connections, 1000 readings per
# request), rounds alternating. Each millwatch writes a fresh schema of its own.
#
#   bench/pg_layout.sh OLD_MILLWATCH [DURATION] [ROUNDS] [POSTGRES_URL]
#
# OLD_MILLWATCH: a release binary built from a commit before the public relations (for
# instance `git worktree add /tmp/old 1890498 && cargo build --release` there).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
duration=${2:-10s}
rounds=${3:-3}
base=${4:-postgres://postgres@127.0.0.1:5432/test}
command -v influxd >/dev/null || { apt-get update -qq && apt-get install -y -qq influxdb; }
cargo build --release --quiet --bin millwatch --example ingest_load
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for s in new old; do psql -q "$base" -c "DROP SCHEMA IF EXISTS bench_layout_${s}_$$ CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
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
declare -A port
for s in new old; do
  schema="bench_layout_${s}_$$"
  psql -q "$base" -c "CREATE SCHEMA $schema"
  bin=target/release/millwatch
  [ "$s" = old ] && bin=$old
  port[$s]=$(free_port)
  "$bin" serve --source none --store "$base?options=-csearch_path%3D$schema" \
    --listen "127.0.0.1:${port[$s]}" --log warn >"$dir/$s.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$influx_port/ping" >/dev/null && curl -sf "http://127.0.0.1:${port[new]}/healthz" >/dev/null \
    && curl -sf "http://127.0.0.1:${port[old]}/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf -XPOST "http://127.0.0.1:$influx_port/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
load() { target/release/examples/ingest_load --url "http://127.0.0.1:$1" --format "$2" --duration "$duration" --connections 2; }
echo "$(nproc) cores; $rounds rounds of $duration each, 2 connections, 1000 readings per request"
for r in $(seq "$rounds"); do
  load "${port[new]}" json | sed "s/^/round $r new layout  /"
  load "${port[old]}" json | sed "s/^/round $r 0.1 layout  /"
  load "$influx_port" lp | sed "s/^/round $r influxdb    /"
done
echo "rows in the new layout's samples: $(psql -tA "$base" -c "SELECT count(*) FROM bench_layout_new_$$.samples")"
