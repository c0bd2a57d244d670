#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: start what the tests need, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Services the tests talk to (loopback). Start any that stopped; tests fail loudly without them
# unless MILLWATCH_SKIP_SERVICES=1.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
# Mosquitto: the local broker on 1883, and the binary the MQTT restart test runs itself.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
fi

# The dashboard's browser test drives headless Chromium through chromedriver (Debian packages).
if [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver
fi

# The alert tests start Debian's Prometheus Alertmanager on a free port of their own.
if [ ! -x /usr/bin/prometheus-alertmanager ]; then
  apt-get update -qq && apt-get install -y -qq prometheus-alertmanager
fi

cargo test --all-targets "$@"
