#!/usr/bin/env bash
# millwatch export of N readings (default 10 million, 10 machines at 1 Hz) from a SQLite store
# (or the PostgreSQL URL given) to CSV and Parquet: seconds, readings/s and peak RSS of each.
#
#   bench/export.sh [N] [STORE]      STORE: sqlite (default, a temporary file) or postgres://…
#
# The store is filled first with `millwatch ingest --interval 0` (not timed).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000000}
store=${2:-sqlite}
cargo build --release --quiet --bin millwatch
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
[ "$store" = sqlite ] && store="sqlite:$dir/m.db"
# READINGS: a file made by bench/gen_readings.py beforehand, to skip making it here.
readings=${READINGS:-$dir/readings.ndjson}
[ -n "${READINGS:-}" ] || python3 bench/gen_readings.py "$n" 10 >"$readings"
start=$(date +%s.%N)
target/release/millwatch ingest "$readings" --interval 0 --durability process \
  --store "$store" --log warn >/dev/null
echo "loaded $n readings in $(echo "$(date +%s.%N) - $start" | bc) s"
for format in csv parquet; do
  out="$dir/out.$format"
  /usr/bin/time -f "%e %M" -o "$dir/time" target/release/millwatch export --store "$store" \
    --format "$format" --out "$out" --log warn
  read -r secs rss_kb <"$dir/time"
  rows=$(python3 -c "print(int($n / $secs))")
  echo "export $format: $secs s, $rows readings/s, peak RSS $((rss_kb / 1024)) MiB, $(du -m "$out" | cut -f1) MiB"
done
