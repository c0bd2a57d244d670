#!/usr/bin/env bash
# GET /states and GET /oee from SQLite (SPEC §8): a year of one machine with 1,000,000 status
# changes, and /oee?by=day over 30 days for each of 1,000 machines (1,000 requests). Loads the
# data through the store's API into a temporary file (or DIR, reused when it holds states.db),
# then times sequential requests over loopback. See examples/states_bench.rs.
#
#   bench/states.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --example states_bench -- "$@"
