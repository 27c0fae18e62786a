#!/usr/bin/env bash
# Proves the image runs the system: starts a nats-server of its own (nats/server.conf, fresh
# passwords, a free port) and, from the image with `podman run --network host`, the provision
# step, one of each worker and a gateway, against a database of its own on the local Postgres;
# then checks /health, every worker's metrics, a REST call that goes gateway -> NATS -> chat worker
# -> Postgres and back, and that the gateway stops on SIGTERM. Cleans up after itself.
#
#   scripts/image.sh && scripts/image-smoke.sh      # IMAGE=localhost/marketplace:latest
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
IMAGE="${IMAGE:-localhost/marketplace:latest}"
PODMAN=(podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" --runtime runc)
RUN=(run --network host --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
find_nats_server
ensure_postgres
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT=$(free_port) GATEWAY_PORT=$(free_port)
DB="marketplace_image_smoke_$$"
DATABASE_URL="$(database_url_for "$DB")"
WORK=$(mktemp -d)
load_nats_passwords fresh
export_nats_urls "127.0.0.1:$NATS_PORT"
CONTAINERS=()
cleanup() {
  local container
  for container in "${CONTAINERS[@]}"; do "${PODMAN[@]}" rm -f -t 2 "$container" >/dev/null 2>&1 || true; done
  stop_started_services
  psql "$DATABASE_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_nats "$NATS_PORT" "$WORK/nats" "$WORK/nats.log"
log "nats-server on 127.0.0.1:$NATS_PORT; database $DB"

"${PODMAN[@]}" "${RUN[@]}" --rm -e NATS_URL="$NATS_ADMIN_URL" -e DATABASE_URL="$DATABASE_URL" "$IMAGE" provision

port=9500
for worker in lifecycle mediums distance chat expiry notify; do
  port=$(free_port)
  "${PODMAN[@]}" "${RUN[@]}" -d --name "smoke-$$-$worker" -e NATS_URL="$NATS_WORKER_URL" \
    -e DATABASE_URL="$DATABASE_URL" -e METRICS_ADDR="127.0.0.1:$port" "$IMAGE" "$worker" >/dev/null
  CONTAINERS+=("smoke-$$-$worker")
  echo "$worker $port" >>"$WORK/metrics-ports"
done
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
"${PODMAN[@]}" "${RUN[@]}" -d --name "smoke-$$-gateway" -e NATS_URL="$NATS_GATEWAY_URL" \
  -e JWT_SECRET="$JWT_SECRET" -e GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT" "$IMAGE" gateway >/dev/null
CONTAINERS+=("smoke-$$-gateway")

wait_for_port 127.0.0.1 "$GATEWAY_PORT" 60 || { "${PODMAN[@]}" logs "smoke-$$-gateway" >&2; die "the gateway did not start"; }
log "gateway /health: $(curl -sf "http://127.0.0.1:$GATEWAY_PORT/health")"
while read -r worker port; do
  wait_for_port 127.0.0.1 "$port" 60 || { "${PODMAN[@]}" logs "smoke-$$-$worker" >&2; die "$worker did not start"; }
  log "$worker metrics: $(curl -sf "http://127.0.0.1:$port/metrics" | grep '^worker_up')"
done <"$WORK/metrics-ports"

TOKEN=$("${PODMAN[@]}" "${RUN[@]}" --rm -e JWT_SECRET="$JWT_SECRET" "$IMAGE" token --user smoke-seeker --role seeker --name Smoke)
answer=$(curl -s -w ' HTTP %{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GATEWAY_PORT/api/conversations")
log "GET /api/conversations (gateway -> NATS -> chat -> Postgres): $answer"
[[ "$answer" == *"HTTP 200" ]] || die "the REST call failed"
curl -sf "http://127.0.0.1:$GATEWAY_PORT/" | grep -qi '<html' || die "the web client is not served"
log "web client served from /app/web"

started=$(date +%s%N)
"${PODMAN[@]}" stop -t 20 "smoke-$$-gateway" >/dev/null
log "gateway stopped on SIGTERM in $((($(date +%s%N) - started) / 1000000)) ms; its last log lines:"
"${PODMAN[@]}" logs "smoke-$$-gateway" 2>&1 | tail -n 2 >&2
echo "image-smoke: 1 passed, 0 failed"
