#!/usr/bin/env bash
# Proves the gateway's OpenAPI document is complete and typed: generates a TypeScript client from
# it (openapi-typescript, npm) and type-checks a use of every REST operation
# (clients/typescript/every-operation.ts) with tsc. A route missing from the document, an untyped
# answer or a field of the wrong type fails here. Part of scripts/test.sh (SKIP_CLIENT_CHECK=1
# skips it); needs the gateway binary in target/debug and Node.js with npm.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
CLIENT="$ROOT/clients/typescript"
command -v npm >/dev/null 2>&1 || die "Node.js with npm is needed to check the generated client"
cd "$CLIENT"
if [ ! -x node_modules/.bin/tsc ] || [ ! -x node_modules/.bin/openapi-typescript ]; then
  log "installing openapi-typescript, openapi-fetch and typescript (npm) under clients/typescript"
  npm ci --no-audit --no-fund --silent >/dev/null || die "cannot install the client's npm packages"
fi
mkdir -p generated
"$BIN/gateway" --print-openapi >generated/openapi.json
node_modules/.bin/openapi-typescript generated/openapi.json -o generated/api.d.ts --silent
node_modules/.bin/tsc -p .
log "generated TypeScript client: every operation type-checks against /docs/openapi.json"
