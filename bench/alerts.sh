#!/usr/bin/env bash
# Alerts under load (issue 20), release build, one run:
#   1. /ingest readings per second with no rules and with 100 rules that match every machine
#      (above, below, outside, deviation: 25 each, bounds no reading crosses, so the cost is
#      judging, not notifying), alternated twice, same store and load (bench/ingest.lua);
#   2. from a reading's acknowledgement to a webhook's receipt of the firing it caused, at
#      about 10,000 readings/s (100-reading batches every 10 ms; every 10th batch carries a
#      reading that fires or resolves a rule): p50, p99, max.
#
#   bench/alerts.sh [STORE] [DURATION] [ROUNDS]   STORE: memory (default), sqlite, postgres://…
#
# The machine is shared and noisy: runs alternate, and the medians over ROUNDS (default 5)
# are what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:-memory}
duration=${2:-10s}
rounds=${3:-5}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet
dir=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

: >"$dir/none.toml"
python3 - "$dir/hundred.toml" <<'PY'
import sys
kinds = [("above", "value = 1e12"), ("below", "value = -1e12"),
         ("outside", "value = [-1e12, 1e12]"), ("deviation", "threshold = 1e6")]
with open(sys.argv[1], "w") as f:
    for i in range(100):
        when, bound = kinds[i % 4]
        param = ["temperature", "speed", "pressure"][i % 3]
        f.write(f'[[rule]]\nname = "r{i}"\nmachines = "*"\nparameter = "{param}"\nwhen = "{when}"\n{bound}\nfor = "{i % 5}s"\n\n')
PY

serve() { # RULES [EXTRA ARGS...]: starts serve on $port
  local rules=$1; shift
  port=$(free_port)
  local s=$store
  case "$s" in sqlite) rm -f "$dir"/b.db*; s="sqlite:$dir/b.db" ;; esac
  target/release/millwatch serve --source none --store "$s" --listen "127.0.0.1:$port" \
    --rules "$rules" --log warn "$@" >"$dir/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  cat "$dir/serve.log"; exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

echo "store: $store, duration: $duration, $(nproc) cores"
for round in $(seq "$rounds"); do
  for rules in none hundred; do
    serve "$dir/$rules.toml"
    before=$(cpu_ticks)
    out=$(wrk -t2 -c2 -d"$duration" -s bench/ingest.lua "http://127.0.0.1:$port" -- json)
    after=$(cpu_ticks)
    rate=$(sed -n 's/^result:.* -> \([0-9]*\) readings\/s.*/\1/p' <<<"$out")
    secs=$(sed -n 's/^result:.* in \([0-9.]*\) s .*/\1/p' <<<"$out")
    # The server's CPU time per reading: what the rules cost, less disturbed than the rate
    # by whatever else runs on the machine.
    us=$(python3 -c "print('%.2f' % (($after - $before) * 1e6 / $(getconf CLK_TCK) / ($rate * $secs)))")
    echo "round $round, rules: $rules: $rate readings/s, server CPU $us us/reading"
    echo "$rate" >>"$dir/$rules.rates"
    echo "$us" >>"$dir/$rules.cpu"
    stop
  done
done
python3 - "$dir" <<'PY'
import statistics, sys
d = sys.argv[1]
med = lambda f: statistics.median(float(x) for x in open(f"{d}/{f}"))
none, hundred = med("none.rates"), med("hundred.rates")
cn, ch = med("none.cpu"), med("hundred.cpu")
print("median: no rules %.0f, 100 rules %.0f readings/s: %.0f %%; CPU %.2f vs %.2f us/reading: 100 rules at %.0f %% of the rate CPU allows without"
      % (none, hundred, 100 * hundred / none, cn, ch, 100 * cn / ch))
PY

printf '[[rule]]\nname = "lat"\nmachines = "lat-*"\nparameter = "temperature"\nwhen = "above"\nvalue = 100\n' >"$dir/lat.toml"
hook=$(free_port)
python3 - "$hook" >"$dir/hook.log" <<'PY' &
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        a = json.loads(body)
        print(time.time(), a["machine_id"], a["state"], a["fired_at"], flush=True)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
receiver=$!
serve "$dir/lat.toml" --notify "webhook:http://127.0.0.1:$hook/"
python3 - "$port" "$dir/hook.log" <<'PY'
import http.client, sys, time
port, log = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)
acks = {}
base = 1_800_000_000
start = time.time()
for b in range(2000):  # 20 s at 100 batches/s
    due = start + b * 0.01
    if time.time() < due:
        time.sleep(due - time.time())
    lines = ['{"machine_id":"m-%02d","timestamp":%d.%02d,"temperature":50}' % (i, base + b, i) for i in range(100)]
    key = None
    if b % 10 == 0:
        k = b // 10
        hot = k % 2 == 0
        machine = "lat-%d" % (k // 2 % 10)
        lines[0] = '{"machine_id":"%s","timestamp":%d,"temperature":%d}' % (machine, base + b, 200 if hot else 0)
        key = (machine, "firing" if hot else "ok")
    conn.request("POST", "/ingest", "\n".join(lines), {"Content-Type": "application/x-ndjson"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
    if key:
        acks.setdefault(key, []).append(time.time())
elapsed = time.time() - start
time.sleep(2)
got = {}
for line in open(log):
    t, machine, state, _ = line.split()
    got.setdefault((machine, state), []).append(float(t))
lat = []
for key, times in acks.items():
    for a, g in zip(times, got.get(key, [])):
        lat.append(max(0.0, g - a) * 1000)
lat.sort()
n = sum(len(v) for v in acks.values())
print("ack -> webhook at %.0f readings/s: %d of %d notifications, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (2000 * 100 / elapsed, len(lat), n, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]))
PY
stop
kill $receiver
