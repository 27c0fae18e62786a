#!/usr/bin/env bash
# Runs the whole system on this machine: NATS and Postgres (found or started), migrations, the
# JetStream stream/consumers/KV buckets, the gateway and one of each worker. Prints the URLs and
# demo tokens. Ctrl-C stops everything it started.
#
#   scripts/stack.sh                   # build, provision, run
#   scripts/stack.sh --provision-only  # just migrations + NATS definitions
#
# Knobs (environment): NATS_CLUSTER=3 (a local 3-node NATS cluster, streams and buckets at 3
# replicas), NATS_URL (a server of yours; else one is started with the users of
# nats/server.conf and their passwords in .stack/nats-users.env), DATABASE_ADMIN_URL, DATABASE_URL, JWT_SECRET, GATEWAY_ADDR,
# DISTANCE_TICK_SECS, DISTANCE_MIN_MOVE_M, CHAT_RETENTION_SECS, TYPING_TTL_SECS, EXPIRY_SWEEP_SECS,
# GATEWAY_DEV_MODE (1 = the gateway mints demo tokens for the web page; never in production),
# STACK_BIN_DIR (run these binaries instead of building: .stack/image/bin runs the image's).
# WEBHOOK_URL and WEBHOOK_SECRET (the notify worker's webhooks for offline users; unset: none sent,
# except in development mode, where they go to the gateway's development receiver and the web
# page's "Notifications" panels show them).
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"

trap 'log "stopping"; kill $(jobs -p) 2>/dev/null; stop_started_services; exit 0' INT TERM
trap 'kill $(jobs -p) 2>/dev/null; stop_started_services' EXIT

ensure_nats
ensure_postgres
export DATABASE_URL="${DATABASE_URL:-$(database_url_for marketplace)}"
export GATEWAY_ADDR="${GATEWAY_ADDR:-127.0.0.1:8080}"
export GATEWAY_DEV_MODE="${GATEWAY_DEV_MODE:-1}"
# Development mode may use the built-in secret; otherwise the gateway refuses it, so a stack
# started without one gets a random secret of its own (its demo tokens are printed below).
if [ -z "${JWT_SECRET:-}" ]; then
  if [ "$GATEWAY_DEV_MODE" = 1 ]; then JWT_SECRET=dev-secret-change-me; else JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"; fi
fi
export JWT_SECRET
# Development mode without a receiver of one's own: the notify worker delivers to the gateway's
# development receiver (gateway/src/dev.rs), which verifies with the same secret (generated here
# unless given), so the web page shows what a push would have said.
if [ "$GATEWAY_DEV_MODE" = 1 ] && [ -z "${WEBHOOK_URL:-}" ]; then
  export WEBHOOK_URL="http://$GATEWAY_ADDR/dev/webhooks"
  [ -n "${WEBHOOK_SECRET:-}" ] || WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  export WEBHOOK_SECRET
fi

if [ -n "${STACK_BIN_DIR:-}" ]; then
  # e.g. .stack/image/bin: the container image's binaries (scripts/image.sh), nothing built
  BIN="$(cd "$STACK_BIN_DIR" && pwd)"
  log "using the binaries in $BIN"
else
  log "building (cargo build --bins; PROFILE=release for an optimised build)"
  if [ "${PROFILE:-debug}" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
  BIN="$ROOT/target/${PROFILE:-debug}"
fi
NATS_URL="$NATS_ADMIN_URL" "$BIN/provision"
[ "${1:-}" = "--provision-only" ] && exit 0

# Each process connects as its own NATS user (nats/server.conf): only the gateway may publish
# client frames, only workers user events.
mkdir -p "$STACK_DIR/logs"
for worker in lifecycle mediums distance chat expiry notify; do
  NATS_URL="$NATS_WORKER_URL" "$BIN/$worker" >"$STACK_DIR/logs/$worker.log" 2>&1 &
done
NATS_URL="$NATS_GATEWAY_URL" "$BIN/gateway" >"$STACK_DIR/logs/gateway.log" 2>&1 &
wait_for_port "${GATEWAY_ADDR%:*}" "${GATEWAY_ADDR##*:}" 30 || die "the gateway did not start (see .stack/logs/gateway.log)"

SEEKER_TOKEN=$("$BIN/token" --user demo-seeker --role seeker --name "Demo Seeker")
PROVIDER_TOKEN=$("$BIN/token" --user demo-provider --role provider --name "Demo Provider")
cat <<INFO

  The marketplace is running.
    web client     http://$GATEWAY_ADDR/
    health         http://$GATEWAY_ADDR/health
    stats          http://$GATEWAY_ADDR/api/websocket/stats
    metrics        http://$GATEWAY_ADDR/metrics
    webhooks       ${WEBHOOK_URL:-none (WEBHOOK_URL unset)}
    seeker socket  ws://$GATEWAY_ADDR/ws/work/seeker/?token=\$SEEKER_TOKEN
    provider socket ws://$GATEWAY_ADDR/ws/work/provider/?token=\$PROVIDER_TOKEN
    NATS           $NATS_TRACE_URL      (read-only; trace: nats --server \$NATS_TRACE_URL sub 'session.>')
    NATS users     .stack/nats-users.env (admin: \$NATS_ADMIN_URL for nats stream / consumer commands)
    Postgres       ${DATABASE_URL%%\?*}
    logs           .stack/logs/

  SEEKER_TOKEN=$SEEKER_TOKEN
  PROVIDER_TOKEN=$PROVIDER_TOKEN

  Ctrl-C stops everything.
INFO
wait
