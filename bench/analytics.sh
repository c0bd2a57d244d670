#!/usr/bin/env bash
# GET /analytics over 1 million stored values of one machine: loads them through /ingest,
# then times the query with wrk (one connection, sequential requests) and prints p50/p99.
#
#   bench/analytics.sh [STORE]     STORE: memory (default), sqlite:FILE, postgres://…
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:-memory}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
case "$store" in sqlite:) store="sqlite:$dir/analytics.db" ;; esac
target/release/millwatch serve --source none --store "$store" --listen "127.0.0.1:$port" --log warn &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

python3 - "$port" <<'PY'
import http.client, random, sys, time
port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port)
random.seed(7)
start = time.time()
for batch in range(1000):
    lines = []
    for i in range(1000):
        n = batch * 1000 + i
        v = 1480 + random.gauss(0, 10) + (300 if random.random() < 0.001 else 0)
        lines.append('{"machine_id":"press-01","timestamp":%d,"speed":%.2f}' % (1_700_000_000 + n, v))
    conn.request("POST", "/ingest", "\n".join(lines), {"Content-Type": "application/x-ndjson"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
print("loaded 1,000,000 readings of press-01 in %.1f s" % (time.time() - start))
PY
url="http://127.0.0.1:$port/analytics?machine_id=press-01&parameter=speed"
curl -sf "$url" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("count", d["count"], "average", d["average"], "anomalies", len(d["anomalies"]))'
cat >"$dir/lat.lua" <<'LUA'
function done(summary, latency, requests)
  io.write(string.format("GET /analytics over 1M values: %d requests, p50 %.1f ms, p99 %.1f ms\n",
    summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
wrk -t1 -c1 -d10s -s "$dir/lat.lua" "$url" | grep 'GET /analytics'
