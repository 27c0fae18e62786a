#!/usr/bin/env bash
# Fuzzes every REST route from the gateway's own OpenAPI document (/docs/openapi.json) with
# schemathesis (PyPI, installed under .stack/ when missing): no answer may be a 5xx, and every
# answer must match the document. Starts its own stack on free ports (nats-server with
# nats/server.conf, a fresh database, the lifecycle and chat workers, a gateway), signs requests as
# a seeker, a provider and a mediator in turn, and stops everything at the end.
# Needs the binaries in target/debug (scripts/test.sh builds them). Knob: FUZZ_REST_EXAMPLES (25).
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
TOOLS="$STACK_DIR/python-tools"
LOGS="$ROOT/target/fuzz-rest"
mkdir -p "$LOGS"
PIDS=()
DATABASE_NAME=""
cleanup() {
  local status=$? pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$DATABASE_NAME" ] && command -v psql >/dev/null 2>&1; then
    psql "$DATABASE_ADMIN_URL" -qtAc "DROP DATABASE IF EXISTS $DATABASE_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  [ -n "${TMP:-}" ] && rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT

if [ ! -x "$TOOLS/bin/st" ]; then
  log "installing schemathesis (PyPI) under .stack/python-tools"
  pip=$(command -v pip3 || command -v pip) || die "pip is needed to install schemathesis"
  "$pip" install --quiet --disable-pip-version-check --target "$TOOLS" schemathesis >/dev/null 2>&1 \
    || die "cannot install schemathesis from PyPI"
fi
find_nats_server
ensure_postgres

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
NATS_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
TMP="$(mktemp -d /tmp/marketplace-fuzz-rest.XXXXXX)"
load_nats_passwords fresh
start_nats "$NATS_PORT" "$TMP/nats" "$LOGS/nats-server.log"
PIDS+=("${STARTED_PIDS[@]}"); STARTED_PIDS=()
export_nats_urls "127.0.0.1:$NATS_PORT"
DATABASE_NAME="marketplace_fuzz_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
export DATABASE_URL="$(database_url_for "$DATABASE_NAME")"
export JWT_SECRET="fuzz-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export RUST_LOG=warn DATABASE_POOL_SIZE=4 NATS_URL="$NATS_WORKER_URL"
NATS_URL="$NATS_ADMIN_URL" "$BIN/provision" >"$LOGS/provision.log" 2>&1 || { cat "$LOGS/provision.log" >&2; die "provision failed"; }
for worker in lifecycle chat; do
  "$BIN/$worker" >"$LOGS/$worker.log" 2>&1 &
  PIDS+=($!)
done
# The per-user REST limit (10 calls a second) would answer most of the fuzzer's calls 429 (a
# documented answer) and leave the routes themselves untried: the fuzzer runs without it.
NATS_URL="$NATS_GATEWAY_URL" GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT" GATEWAY_REST_RATE_PER_SEC=0 \
  "$BIN/gateway" >"$LOGS/gateway.log" 2>&1 &
PIDS+=($!)
wait_for_port 127.0.0.1 "$GATEWAY_PORT" 30 || die "the gateway did not start (see $LOGS/gateway.log)"
sleep 1

BASE="http://127.0.0.1:$GATEWAY_PORT"
status=0
for role in seeker provider mediator; do
  token=$("$BIN/token" --user "fuzz-$role" --role "$role")
  log "schemathesis as a $role against $BASE/docs/openapi.json"
  PYTHONPATH="$TOOLS" "$TOOLS/bin/st" run "$BASE/docs/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --header "Authorization: Bearer $token" \
    --max-examples "${FUZZ_REST_EXAMPLES:-25}" --seed 1 --no-shrink \
    --generation-allow-x00 true --request-timeout 10 \
    >"$LOGS/schemathesis-$role.log" 2>&1 || { status=1; tail -n 60 "$LOGS/schemathesis-$role.log" >&2; }
  tail -n 3 "$LOGS/schemathesis-$role.log" >&2
done
# The AsyncAPI document the gateway serves parses, and every $ref in it points at something: in
# itself, or in the OpenAPI document beside it (the schemas the frames share with REST bodies).
PYTHONPATH="$TOOLS" python3 - "$BASE/docs/asyncapi.yaml" "$BASE/docs/openapi.json" <<'PYTHON' || { status=1; log "docs/asyncapi.yaml is broken"; }
import json, re, sys, urllib.request, yaml
text = urllib.request.urlopen(sys.argv[1]).read().decode()
document = yaml.safe_load(text)
documents = {"": document, "openapi.json": json.load(urllib.request.urlopen(sys.argv[2]))}
assert document["asyncapi"].startswith("3."), "not AsyncAPI 3"
for target, reference in re.findall(r"\$ref: '([^'#]*)#/([^']+)'", text):
    node = documents[target]
    for part in reference.split("/"):
        node = node[part]
print(f"asyncapi.yaml: {len(document['channels'])} channels, {len(document['components']['messages'])} messages, every $ref resolves", file=sys.stderr)
PYTHON
# Every process is still there: no input crashed one.
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { log "process $pid died during the fuzzing"; status=1; }; done
[ "$status" -eq 0 ] && log "REST fuzzing: no 5xx, every answer as documented (logs in target/fuzz-rest/)"
exit "$status"
