#!/usr/bin/env bash
# Writes the Secrets' values for a Kustomize overlay (git-ignored files in <overlay>/secrets/):
# random JWT and NATS passwords, the database URL and the webhook settings from the environment
# (DATABASE_URL, WEBHOOK_URL, WEBHOOK_SECRET) or placeholders to edit. An existing file is kept,
# so running it again never changes a password that is in use.
#
#   DATABASE_URL=postgres://marketplace:...@db.example:5432/marketplace scripts/deploy-secrets.sh
#   scripts/deploy-secrets.sh deploy/kubernetes/overlays/production-small
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/deploy/kubernetes/overlays/production-small}/secrets"
mkdir -p "$DIR"
umask 077
random() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }  # hex: safe inside a nats:// URL
write() {  # write file content...
  local file="$DIR/$1"; shift
  if [ -f "$file" ]; then echo "kept    $file"; return; fi
  printf '%s\n' "$@" >"$file"
  echo "wrote   $file"
}
write nats.env \
  "NATS_ADMIN_PASSWORD=$(random 24)" "NATS_GATEWAY_PASSWORD=$(random 24)" \
  "NATS_WORKER_PASSWORD=$(random 24)" "NATS_TRACE_PASSWORD=$(random 24)"
write jwt.env "JWT_SECRET=$(random 32)"
write database.env "DATABASE_URL=${DATABASE_URL:-postgres://marketplace:CHANGE-ME@postgres.example.internal:5432/marketplace}"
write webhook.env "WEBHOOK_URL=${WEBHOOK_URL:-https://push.example.internal/marketplace-webhooks}" \
  "WEBHOOK_SECRET=${WEBHOOK_SECRET:-whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')}"
