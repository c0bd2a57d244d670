#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target under fuzz/, one after another, for SECONDS each
# (default 60), and prints executions, seconds and corpus size per target. Fails on a crash
# (the input is left in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Environment:
#   FUZZ_RUNS=N     stop each target after N executions instead of (or before) SECONDS
#   FUZZ_NICE=N     nice level of the build and the runs (default 19: other work keeps the CPU)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It uses nightly features; on stable Rust
# RUSTC_BOOTSTRAP=1 enables them. Inputs found are kept in fuzz/work/<target>/ (not in git);
# the committed seed corpus fuzz/corpus/<target>/ is only read. To refresh it, minimise:
#   cargo fuzz cmin -O -a -s none TARGET fuzz/work/TARGET   (then copy into fuzz/corpus/TARGET)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
nice_level=${FUZZ_NICE:-19}
export RUSTC_BOOTSTRAP=1
# The same flags for build and run, so that run does not rebuild. No sanitizer: the parsers
# are safe Rust, and without ASan the targets run about twice as fast; debug assertions and
# overflow checks stay on.
flags=(-O -a -s none --codegen-units 16)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//')
fi

nice -n "$nice_level" cargo fuzz build "${flags[@]}"

limit=(-max_total_time="$seconds")
if [ -n "${FUZZ_RUNS:-}" ]; then
  limit+=(-runs="$FUZZ_RUNS")
fi

printf '%-18s %14s %9s %12s %8s\n' target executions seconds exec/s corpus
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/corpus/$t"
  log="fuzz/work/$t.log"
  extra=()
  case "$t" in
    # Its inputs are recipes for records: 512 bytes make 10 to 25 records, several chunks of
    # 1 to 5 records and two machines, which is every case the codec has; at libFuzzer's
    # default of 4 KiB it ran eight times slower for no new coverage.
    codec_roundtrip) extra=(-max_len=512) ;;
    # Framing is about lines and buffer edges (the stream reads through a 1 to 16 byte
    # buffer, which is what makes this target slow): 1 KiB holds dozens of lines. The limits
    # of a single reading (256 parameters, 256-byte states) are the reading_* targets' work,
    # at 4 KiB.
    ndjson) extra=(-max_len=1024) ;;
  esac
  if nice -n "$nice_level" cargo fuzz run "${flags[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
      "${limit[@]}" "${extra[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  corpus=$(find "fuzz/work/$t" "fuzz/corpus/$t" -type f -exec sha1sum {} + | cut -d' ' -f1 | sort -u | wc -l)
  rate=$(( ${secs:-0} > 0 ? ${runs:-0} / ${secs:-1} : 0 ))
  line=$(printf '%-18s %14s %9s %12s %8s %s' "$t" "${runs:-?}" "${secs:-?}" "$rate" "$corpus" "$result")
  echo "$line"
  if [ "$result" = CRASH ]; then
    grep -E 'panicked|SUMMARY|Test unit written|ERROR' "$log" | head -5 >&2 || true
  fi
done
exit "$status"
