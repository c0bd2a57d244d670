#!/usr/bin/env bash
# The store at plant scale (issue 18), in one run, SQLite store:
#   1. anonymous memory of `serve` after M machines x R readings each, for M = 100, 1000, 10000;
#   2. bytes per reading on disk (the database file after a clean stop) of those readings;
#   3. GET /data?machine_id=X&limit=100 (and limit=1, latest) of a machine with BIG readings;
#   4. restart after `echo 3 > /proc/sys/vm/drop_caches` (needs root): time to /healthz and
#      bytes the process read;
#   5. `ingest --store` of a FILE-reading file, then again on the unchanged file (all duplicates);
#      with BASE=path/to/older/millwatch, the fresh ingest of both binaries, same file, same run.
#
#   bench/scale.sh [R] [BIG] [FILE]     defaults: 400 readings per machine, 2,000,000, 1,000,000
#
# The issue's full sizes (40,000 readings per machine, 10M for the newest-N machine, 50M for
# the restart) take hours of generation on a small machine; the defaults keep the run to a few
# minutes, and every figure is printed with the size it was measured at.
set -euo pipefail
cd "$(dirname "$0")/.."
per_machine=${1:-400}
big=${2:-2000000}
file_readings=${3:-1000000}
cargo build --release --quiet --bin millwatch
bin=$PWD/target/release/millwatch
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# gen MACHINES PER_MACHINE OUT [PREFIX]: NDJSON, machines interleaved, one reading per second
# each, 3 numeric parameters and a state, as the simulator's and the bench's readings have.
gen() {
  python3 - "$@" <<'PY'
import sys, random
machines, per, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
prefix = sys.argv[4] if len(sys.argv) > 4 else "press"
rnd = random.Random(7)
with open(out, "w") as f:
    for i in range(per):
        t = 1_700_000_000 + i
        for m in range(machines):
            f.write('{"machine_id":"%s-%05d","timestamp":%d,"temperature":%.2f,"speed":%d,"pressure":%.3f,"status":"%s"}\n'
                    % (prefix, m, t, 60 + rnd.random() * 10, rnd.randint(20, 40), 1 + rnd.random(),
                       "RUNNING" if rnd.random() < 0.9 else "IDLE"))
PY
}

# post FILE PORT: the file to /ingest in bodies of 10,000 lines over one connection.
post() {
  python3 - "$1" "$2" <<'PY'
import sys, http.client
path, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def send(lines):
    c.request("POST", "/ingest", body="".join(lines).encode(), headers={"Content-Type": "application/x-ndjson"})
    r = c.getresponse(); body = r.read()
    if r.status != 200: sys.exit(f"/ingest answered {r.status}: {body[:200]}")
batch = []
for line in open(path):
    batch.append(line)
    if len(batch) == 10000: send(batch); batch = []
if batch: send(batch)
PY
}

serve() { # serve DB PORT
  "$bin" serve --source none --store "sqlite:$1" --listen "127.0.0.1:$2" --log warn >"$dir/serve.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$2/healthz" >/dev/null; do sleep 0.02; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
anon_kb() { awk '/RssAnon/{print $2}' "/proc/$pid/status"; }
# The database file after a clean stop: the log files are then empty (their 16 MiB are
# allocated in advance and reused), and the WAL checkpointed.
disk_bytes() { stat -c %s "$1"; }

echo "== memory and disk: M machines x $per_machine readings (the issue's full size: 40,000)"
for machines in 100 1000 10000; do
  gen "$machines" "$per_machine" "$dir/m.ndjson"
  port=$(free_port)
  serve "$dir/m.db" "$port"
  post "$dir/m.ndjson" "$port"
  anon=$(anon_kb)
  stop
  n=$((machines * per_machine))
  echo "machines $machines readings $n anon_MB $((anon / 1024)) bytes_per_reading $(($(disk_bytes "$dir/m.db") / n))"
  rm -f "$dir"/m.db*
done

echo "== newest-N: one machine with $big readings beside 5 with 40,000 (the issue's: 10M)"
python3 - "$big" "$dir/big.ndjson" <<'PY'
import sys
big, out = int(sys.argv[1]), sys.argv[2]
with open(out, "w") as f:
    for i in range(big):
        f.write('{"machine_id":"big","timestamp":%d,"temperature":%.2f,"speed":%d,"status":"RUNNING"}\n' % (1_600_000_000 + i, 60 + i % 1000 / 100, i % 40))
    for i in range(40000):
        for m in range(5):
            f.write('{"machine_id":"small-%d","timestamp":%d,"temperature":%.2f,"speed":%d,"status":"RUNNING"}\n' % (m, 1_600_000_000 + i, 60 + i % 1000 / 100, i % 40))
PY
"$bin" ingest "$dir/big.ndjson" --interval 0 --store "sqlite:$dir/big.db" --log warn >/dev/null
rm -f "$dir/big.ndjson"
port=$(free_port)
serve "$dir/big.db" "$port"
for q in "machine_id=big&limit=100" "machine_id=big&limit=1" "limit=100"; do
  python3 - "$port" "$q" <<'PY'
import sys, time, http.client, statistics
port, q = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port)
times = []
for _ in range(200):
    t = time.perf_counter(); c.request("GET", "/data?" + q); r = c.getresponse(); r.read()
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f"GET /data?{q}: median {statistics.median(times):.2f} ms p99 {times[197]:.2f} ms (200 requests)")
PY
done
stop

echo "== restart with $((big + 200000)) readings stored (the issue's: 50M), caches dropped"
for _ in 1 2 3; do
  sync
  if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then echo "(not root: page cache kept)"; fi
  port=$(free_port)
  start=$(date +%s.%N)
  serve "$dir/big.db" "$port"
  end=$(date +%s.%N)
  read_bytes=$(awk '/read_bytes/{print $2}' "/proc/$pid/io")
  stop
  echo "restart $(python3 -c "print(f'{$end - $start:.3f}')") s, read $((read_bytes / 1048576)) MB (binary included) of a $(($(disk_bytes "$dir/big.db") / 1048576)) MB store"
done
rm -f "$dir"/big.db*

echo "== ingest --store of a $file_readings-reading file (100 machines), then again unchanged"
gen 100 $((file_readings / 100)) "$dir/file.ndjson"
timed() { # timed BIN DB: seconds of one ingest --store run
  local s e
  s=$(date +%s.%N)
  "$1" ingest "$dir/file.ndjson" --interval 0 --store "sqlite:$2" --log warn >/dev/null
  e=$(date +%s.%N)
  python3 -c "print(f'{$e - $s:.3f}')"
}
for round in 1 2 3; do
  fresh=$(timed "$bin" "$dir/f.db")
  again=$(timed "$bin" "$dir/f.db")
  stored=$("$bin" ingest "$dir/file.ndjson" --interval 0 --store "sqlite:$dir/f.db" --log warn | wc -l)
  line="round $round fresh $fresh s ($(python3 -c "print(int($file_readings / $fresh))")/s), re-ingest $again s ($(python3 -c "print(int($file_readings / $again))")/s, $stored stored by a third run)"
  if [ -n "${BASE:-}" ]; then
    base=$(timed "$BASE" "$dir/b.db")
    line="$line; base fresh $base s, ratio new/base $(python3 -c "print(f'{$base / $fresh:.2f}')")"
    rm -f "$dir"/b.db*
  fi
  echo "$line"
  rm -f "$dir"/f.db*
done
