#!/usr/bin/env bash
# The Grafana panel query of docs/grafana/millwatch-dashboard.json (a parameter with its moving
# average) over one day of one machine at 1 Hz, in a PostgreSQL store holding ten such
# machines: p50 and p99 of 200 runs with pgbench, macros expanded as Grafana does.
#
#   bench/grafana.sh [POSTGRES_URL]     default postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-postgres://postgres@127.0.0.1:5432/test}
# MILLWATCH_BIN: a binary to load the store with instead of this tree's release build (the
# query timed is PostgreSQL's alone).
bin=${MILLWATCH_BIN:-target/release/millwatch}
[ -n "${MILLWATCH_BIN:-}" ] || cargo build --release --quiet --bin millwatch
schema="bench_grafana_$$"
dir=$(mktemp -d)
trap 'psql -q "$base" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
psql -q "$base" -c "CREATE SCHEMA $schema"
url="$base?options=-csearch_path%3D$schema"
python3 bench/gen_readings.py 864000 10 >"$dir/day.ndjson"
"$bin" ingest "$dir/day.ndjson" --interval 0 --store "$url" --log warn >/dev/null
psql -q "$url" -c "ANALYZE" >/dev/null
python3 - "$dir/query.sql" <<'PY'
import json, sys
d = json.load(open("docs/grafana/millwatch-dashboard.json"))
sql = next(t["rawSql"] for p in d["panels"] for t in p["targets"] if "samples" in t["rawSql"])
sql = (sql.replace("$__timeFilter(ts)", "ts BETWEEN '2026-11-01T00:00:00Z' AND '2026-11-01T23:59:59Z'")
          .replace("$machine", "m003").replace("$parameter", "temperature").replace("millwatch.", ""))
open(sys.argv[1], "w").write(sql + ";\n")
PY
rows=$(PGOPTIONS="-csearch_path=$schema" psql -tA "$base" -f "$dir/query.sql" | wc -l)
(cd "$dir" && PGOPTIONS="-csearch_path=$schema" pgbench -n -f query.sql -t 200 -c 1 -l "$base" >/dev/null 2>&1)
cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk -v rows="$rows" '{a[NR]=$1} END {printf "rows %d, runs %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", rows, NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000}'
