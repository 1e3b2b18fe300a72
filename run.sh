#!/usr/bin/env bash
# run.sh — the container entrypoint: maps the environment to redis-api's flags and execs it, so
# SIGTERM reaches the server. Addresses and settings become flags (visible in `ps`, on purpose);
# passwords stay in the environment (REDIS_PASS_READ / REDIS_PASS_WRITE, or *_FILE holding a
# path), never on the command line. Every other setting's env twin (see `redis-api --help`)
# passes through untouched.
set -o errexit -o nounset -o pipefail

usage() {
  cat <<EOF_USAGE
Usage: run.sh [EXTRA_REDIS_API_FLAGS...]

Environment (names of the original Go service kept):
  REDIS_ADDR_WRITE   host:port of the Redis master (required)
  REDIS_ADDR_READ    host:port of the local replica (default 127.0.0.1:6379)
  LISTEN_ADDR        address:port to serve on (default 0.0.0.0:8080)
  PROBE_LISTEN       address:port of the probe listener, /healthz /readyz /metrics (default 0.0.0.0:8081; off: none)
  REDIS_PASS_WRITE, REDIS_PASS_READ (or *_FILE)   passwords, passed by environment only
  REDIS_API_BIN      the server binary (default: redis-api next to this script, else on PATH)
Any other redis-api setting: its environment twin, e.g. DEADLINE=400ms, MAX_CONNECTIONS=1024.
EOF_USAGE
}

die() {
  echo "run.sh: $*" >&2
  exit 64
}

# server_bin: REDIS_API_BIN, else redis-api beside this script, else on PATH.
server_bin() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [[ -n ${REDIS_API_BIN:-} ]]; then
    echo "$REDIS_API_BIN"
  elif [[ -x $here/redis-api ]]; then
    echo "$here/redis-api"
  else
    command -v redis-api || die "redis-api not found (set REDIS_API_BIN)"
  fi
}

# no_credentials VAR PASS_VAR: an address holding user:password@ would put the password on the
# server's command line; refuse it, naming the variable but not showing its value.
no_credentials() {
  [[ ${!1:-} != *@* ]] ||
    die "$1 holds credentials (value not shown); give host:port only and put the password in $2 or ${2}_FILE"
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; esac
  [[ -n ${REDIS_ADDR_WRITE:-} ]] || die "REDIS_ADDR_WRITE (the Redis master, host:port) is required"
  no_credentials REDIS_ADDR_READ REDIS_PASS_READ
  no_credentials REDIS_ADDR_WRITE REDIS_PASS_WRITE
  local bin
  bin=$(server_bin)
  # The flags win over their env twins; unset the twins so there is one source of truth.
  local listen=${LISTEN_ADDR:-0.0.0.0:8080} read=${REDIS_ADDR_READ:-127.0.0.1:6379} write=$REDIS_ADDR_WRITE
  local probes=${PROBE_LISTEN:-0.0.0.0:8081}
  unset LISTEN_ADDR REDIS_ADDR_READ REDIS_ADDR_WRITE PROBE_LISTEN
  exec "$bin" --listen "$listen" --probe-listen "$probes" --read-redis-addr "$read" --write-redis-addr "$write" "$@"
}

main "$@"
