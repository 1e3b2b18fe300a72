#!/usr/bin/env bash
# run-local.sh — runs the API locally for real: a Redis master and a read replica of it as
# child processes in a temp dir, and the release build of redis-api in the foreground,
# reading from the replica and writing to the master. Ctrl-C (or SIGTERM) lets the API drain,
# then stops Redis and removes the temp dir. Installs redis and Rust when they are missing.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/run-local.sh [-h] [-- REDIS_API_FLAGS...]

Starts a Redis master and replica, then redis-api on 127.0.0.1:\$PORT in the foreground.
Flags after -- go to redis-api (see target/release/redis-api --help).

Environment:
  PORT          port of the API (default 8080)
  PROBE_PORT    port of its probe and metrics listener (default 8081)
  MASTER_PORT   port of the Redis master (default 6380)
  REPLICA_PORT  port of the Redis replica (default 6381)
  SKIP_BUILD    1: use the existing target/release/redis-api instead of building it
  RUST_LOG      log level filter of the API (default info)
EOF_USAGE
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    --) shift ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  local port=${PORT:-8080} probe=${PROBE_PORT:-8081} master=${MASTER_PORT:-6380} replica=${REPLICA_PORT:-6381} p
  for p in "$port" "$probe" "$master" "$replica"; do
    port_in_use "$p" && die "port $p is in use; set PORT, PROBE_PORT, MASTER_PORT or REPLICA_PORT"
  done

  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  local bin
  bin=$(build_release)

  make_work_dir
  log "starting Redis master on $master and replica on $replica in $WORK_DIR"
  start_redis master "$master"
  start_redis replica "$replica" --replicaof 127.0.0.1 "$master"
  wait_for "the replica to sync" 60 replica_synced "$replica"

  cat >&2 <<EOF_HELP

redis-api on http://127.0.0.1:$port — try, from another terminal:
  curl -s localhost:$port/
  curl -s -XPOST -d '{"value": 1.23}' localhost:$port/
  curl -s localhost:$port/healthz
  curl -s localhost:$port/readyz
  curl -s localhost:$port/metrics
Ctrl-C stops it (the API drains, then Redis stops).

EOF_HELP
  # Not `exec`: the trap must stop Redis after the API exits. The API runs in the background
  # so that this shell can forward SIGINT/SIGTERM to it and wait for its drain.
  REDIS_ADDR_READ=127.0.0.1:$replica REDIS_ADDR_WRITE=127.0.0.1:$master \
    LISTEN_ADDR=127.0.0.1:$port PROBE_LISTEN=127.0.0.1:$probe "$bin" "$@" &
  local api=$! rc
  trap 'kill -INT "$api" 2>/dev/null || true' INT
  trap 'kill -TERM "$api" 2>/dev/null || true' TERM
  # A trapped signal interrupts `wait`; wait again until the API has really exited.
  while true; do
    rc=0
    wait "$api" || rc=$?
    kill -0 "$api" 2>/dev/null || break
  done
  rc=0
  wait "$api" || rc=$?
  log "redis-api exited with status $rc; stopping Redis"
  exit "$rc"
}

main "$@"
