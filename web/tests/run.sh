#!/usr/bin/env bash
# Real-browser end-to-end test of the web client. Starts its own stack on free ports (nats-server,
# a fresh database, every worker, a gateway in development mode and a second one without it; the
# notify worker's webhooks go to the development gateway's receiver, which the page shows),
# then drives Debian's Chromium through a whole session with playwright-core (e2e.mjs).
# Works on a fresh machine: installs Chromium and the npm dependency when missing; never downloads
# a browser of its own. Needs the binaries in target/debug (cargo build --bins; scripts/test.sh does).
#
# Screenshots and process logs: web/tests/artifacts/ (git-ignored).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../../scripts/lib/services.sh"   # ROOT, log, die, find_nats_server, ensure_postgres...
WEB="$ROOT/web"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
ARTIFACTS="$HERE/artifacts"
LOGS="$ARTIFACTS/logs"
started_at=$(date +%s)

PIDS=()
TMP=""
DATABASE_NAME=""
cleanup() {
  local status=$?
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$DATABASE_NAME" ] && command -v psql >/dev/null 2>&1; then
    psql "$DATABASE_ADMIN_URL" -qtAc "DROP DATABASE IF EXISTS $DATABASE_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  stop_started_services
  if [ "$status" -eq 0 ]; then
    log "web e2e passed in $(( $(date +%s) - started_at )) s"
  else
    printf '\033[1;31m[web-e2e]\033[0m failed (exit %s); screenshots and logs in %s\n' "$status" "$ARTIFACTS" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -----------------------------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null 2>&1 || die "/usr/bin/chromium is missing and apt-get is unavailable"
  log "installing Debian's chromium"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
    || die "cannot install chromium"
fi
if ! command -v node >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "installing Debian's nodejs and npm"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null || true
fi
command -v node >/dev/null 2>&1 || die "node is needed (Node.js >= 20)"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] \
  || die "Node.js >= 20 is needed for playwright-core (found $(node --version)); SKIP_BROWSER_TESTS=1 skips this test"
if [ ! -d "$HERE/node_modules/playwright-core" ] || [ ! -d "$HERE/node_modules/socket.io-client" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || die "npm ci failed in web/tests"
fi
for binary in provision lifecycle mediums distance chat expiry notify gateway token; do
  [ -x "$BIN/$binary" ] || die "$BIN/$binary is missing: run cargo build --bins (scripts/test.sh does)"
done

rm -rf "$ARTIFACTS"
mkdir -p "$LOGS"
TMP="$(mktemp -d /tmp/marketplace-web-e2e.XXXXXX)"
UNIT_LOG="$LOGS/client-unit-tests.log"

# The client's delivery logic first: a fake socket, no browser, under a second.
node --test "$HERE/client.test.mjs" >"$UNIT_LOG" 2>&1 || { cat "$UNIT_LOG" >&2; die "client.js unit tests failed"; }
log "client.js unit tests: $(sed -n 's/^# pass //p' "$UNIT_LOG") passed"

find_nats_server
ensure_postgres

# ---- our own stack ---------------------------------------------------------------------------
free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

NATS_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
NODEV_PORT=$(free_port)
while [ "$GATEWAY_PORT" = "$NATS_PORT" ] || [ "$NODEV_PORT" = "$GATEWAY_PORT" ] || [ "$NODEV_PORT" = "$NATS_PORT" ]; do
  NODEV_PORT=$(free_port); GATEWAY_PORT=$(free_port)
done

load_nats_passwords fresh
start_nats "$NATS_PORT" "$TMP/nats" "$LOGS/nats-server.log"
PIDS+=("${STARTED_PIDS[@]}"); STARTED_PIDS=()
export_nats_urls "127.0.0.1:$NATS_PORT"

DATABASE_NAME="marketplace_e2e_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
export NATS_URL="$NATS_WORKER_URL"
export DATABASE_URL="$(database_url_for "$DATABASE_NAME")"
export JWT_SECRET="web-e2e-secret-$RANDOM$RANDOM-$RANDOM$RANDOM-$RANDOM$RANDOM"
export DISTANCE_TICK_SECS=2 TYPING_TTL_SECS=2 DATABASE_POOL_SIZE=4 RUST_LOG="${RUST_LOG:-info}"
unset GATEWAY_DEV_MODE
# Webhooks for offline users go to the development gateway's receiver (its notifications panel);
# notify and that gateway share the secret. The second gateway ignores it (no development mode).
export WEBHOOK_URL="http://127.0.0.1:$GATEWAY_PORT/dev/webhooks"
export WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export WEBHOOK_POLL_MS=100

NATS_URL="$NATS_ADMIN_URL" "$BIN/provision" >"$LOGS/provision.log" 2>&1 || { cat "$LOGS/provision.log" >&2; die "provision failed"; }
for worker in lifecycle mediums distance chat expiry notify; do
  "$BIN/$worker" >"$LOGS/$worker.log" 2>&1 &
  PIDS+=($!)
done
NATS_URL="$NATS_GATEWAY_URL" GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT" GATEWAY_DEV_MODE=1 WEB_ROOT="$WEB" \
  GATEWAY_CORS_ORIGINS="http://escrow-front.test,http://jobs-front.test" \
  "$BIN/gateway" >"$LOGS/gateway.log" 2>&1 &
PIDS+=($!)
# The same system behind a gateway without development mode: the page must ask for a token.
NATS_URL="$NATS_GATEWAY_URL" GATEWAY_ADDR="127.0.0.1:$NODEV_PORT" WEB_ROOT="$WEB" \
  "$BIN/gateway" >"$LOGS/gateway-nodev.log" 2>&1 &
PIDS+=($!)
wait_for_port 127.0.0.1 "$GATEWAY_PORT" 30 || die "the gateway did not start (see $LOGS/gateway.log)"
wait_for_port 127.0.0.1 "$NODEV_PORT" 30 || die "the second gateway did not start (see $LOGS/gateway-nodev.log)"
log "stack up: gateway http://127.0.0.1:$GATEWAY_PORT/ (dev mode), http://127.0.0.1:$NODEV_PORT/ (no dev mode), database $DATABASE_NAME"

# ---- the browser test ------------------------------------------------------------------------
export E2E_GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
export E2E_NODEV_GATEWAY_URL="http://127.0.0.1:$NODEV_PORT"
export E2E_PASTE_TOKEN="$("$BIN/token" --user pasted-seeker --role seeker --name 'Pasted Seeker')"
export E2E_ARTIFACTS="$ARTIFACTS"
node "$HERE/e2e.mjs"

# ---- the Socket.IO clients of seeds 003 and 004 (socket.io-client), against the same stack --------
SOCKETIO_LOG="$LOGS/socketio-tests.log"
node --test --test-concurrency=1 "$HERE/socketio.test.mjs" >"$SOCKETIO_LOG" 2>&1 \
  || { cat "$SOCKETIO_LOG" >&2; die "Socket.IO client tests failed"; }
log "Socket.IO client tests (socket.io-client, seeds 003/004): $(sed -n 's/^# pass //p' "$SOCKETIO_LOG") passed"
