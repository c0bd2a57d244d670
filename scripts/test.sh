#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: start what the tests need, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Services the tests talk to (loopback). Start any that stopped; tests fail loudly without them
# unless MILLWATCH_SKIP_SERVICES=1.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

cargo test --all-targets "$@"
