#!/usr/bin/env bash
# Builds the release binaries and runs the benchmarks (numbers, not pass/fail):
#   scripts/bench.sh            # chat, distance, sockets and inbox (soak, crowd, rolling, chaos, abuse only when named)
#   scripts/bench.sh chat       # one of them
#   scripts/bench.sh webhooks   # the notify worker's delivery rate and delay (BENCH_WEBHOOKS=1 ... chat: chat with webhooks on)
# Uses the machine's Postgres (or starts one) and a local nats-server >= 2.11 (installed if missing).
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
trap stop_started_services EXIT
find_nats_server
ensure_postgres
export NATS_SERVER_BIN DATABASE_ADMIN_URL
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bins -q
export MARKETPLACE_BIN_DIR="$ROOT/target/release" RUST_LOG=warn
for bench in "${@:-chat distance sockets inbox}"; do
  for name in $bench; do
    echo "== $name"
    "$ROOT/target/release/bench" "$name"
  done
done
