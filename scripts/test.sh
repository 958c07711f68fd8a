#!/usr/bin/env bash
# Runs every test against real services: starts PostgreSQL, Redis and Mosquitto when
# they are down, installs the pinned npm test client (graphql-ws) and the
# Python Modbus simulator (pymodbus), builds the WebAssembly plugins and test
# fixtures from source (plugins/build.sh), creates a fresh PostgreSQL database for this run (dropped
# afterwards), exports its URL and runs the workspace's tests. Extra
# arguments go to `cargo test` (e.g. `scripts/test.sh --test hierarchy_api`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

ensure_postgres
ensure_redis
ensure_mosquitto
scripts/setup-node.sh
scripts/setup-python.sh
plugins/build.sh

pg_admin="postgres://postgres@127.0.0.1:5432/postgres"
db="trackingbms_test_$(date +%s)_$$"
psql -q -v ON_ERROR_STOP=1 "$pg_admin" -c "CREATE DATABASE $db" >/dev/null
cleanup() { psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export TEST_REDIS_URL="redis://127.0.0.1:6379"
export TEST_MQTT_URL="mqtt://127.0.0.1:1883"
echo "PostgreSQL test database: $db; Redis: $TEST_REDIS_URL"

log=$(mktemp)
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
exit "$status"
