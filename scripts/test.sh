#!/usr/bin/env bash
# Runs every test with the same set-up as the running system: finds or installs nats-server
# (>= 2.11) and Postgres, builds the binaries, then runs the test suites. Each system test starts
# its own nats-server on a free port and its own database, so tests never collide with each other
# or with anything else on these servers.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
trap stop_started_services EXIT

find_nats_server
ensure_postgres
export NATS_SERVER_BIN DATABASE_ADMIN_URL

cargo build --workspace --bins --tests -q
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${TEST_THREADS:-3}" "$@"
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads "${TEST_THREADS:-3}"
fi
# A TypeScript client generated from the OpenAPI document type-checks a use of every operation.
if [ "${SKIP_CLIENT_CHECK:-0}" != 1 ]; then
  "$ROOT/scripts/check-client.sh"
fi
# Every REST route fuzzed from the gateway's OpenAPI document: no 5xx, answers as documented.
if [ "${SKIP_REST_FUZZ:-0}" != 1 ]; then
  "$ROOT/scripts/fuzz-rest.sh"
fi
if [ -d "$ROOT/web/tests" ] && [ "${SKIP_BROWSER_TESTS:-0}" != 1 ]; then
  "$ROOT/web/tests/run.sh"
fi
