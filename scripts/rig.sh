#!/usr/bin/env bash
# rig.sh — the whole load-test rig on this machine, in one command: a Redis master and replica,
# redis-api on them, hello-world, the updater writing to the API, N load generators (pod mode)
# attacking the API and the aggregator pulling them. Everything listens on 127.0.0.1 only.
# Prints the dashboard, currency page and hello-world URLs; Ctrl-C, SIGTERM or the end of
# --duration stops every process and removes the temp dir.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/rig.sh [-h] [--generators N] [--duration SECONDS]
  --generators N        load generators, each at \$RATE req/s (default 2)
  --duration SECONDS    stop after this long (default 300; 0: until Ctrl-C)

Environment:
  RATE          requests per second of each generator (default 200)
  SKIP_BUILD    1: use the existing release binaries instead of building them
  LOADTEST_BIN  a loadtest binary to use as is (e.g. target/debug/loadtest); no build
  RUST_LOG      log level filter of the Rust processes (default info); logs: the temp dir
EOF_USAGE
}

# build_kit: the release build of the load-test kit (as build_release); prints its path.
build_kit() {
  local bin=${LOADTEST_BIN:-$REPO_ROOT/target/release/loadtest}
  if [[ -z ${LOADTEST_BIN:-} && (${SKIP_BUILD:-0} != 1 || ! -x $bin) ]]; then
    need_rust
    log "building the load-test kit"
    (cd "$REPO_ROOT" && cargo build --release --locked -p loadtest >&2)
  fi
  [[ -x $bin ]] || die "$bin: not an executable"
  printf '%s\n' "$bin"
}

# serve NAME CMD...: starts CMD (a server of ours that takes --listen) on a free loopback port,
# recorded as PORT[NAME], and waits for its /healthz.
declare -A PORT=()
serve() {
  local name=$1
  shift
  PORT[$name]=$(free_port)
  start_child "$name" "$@" --listen "127.0.0.1:${PORT[$name]}"
  wait_for "$name on port ${PORT[$name]}" 30 curl -sf "http://127.0.0.1:${PORT[$name]}/healthz"
}

main() {
  local generators=2 duration=300
  while (($#)); do
    case $1 in
      -h | --help) usage; return 0 ;;
      --generators) generators=${2:-}; shift 2 || die "--generators needs a value" ;;
      --duration) duration=${2:-}; shift 2 || die "--duration needs a value" ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  [[ $generators =~ ^[1-9][0-9]*$ ]] || die "--generators: a positive number, not '$generators'"
  [[ $duration =~ ^(0|[1-9][0-9]*)$ ]] || die "--duration: seconds (0: until Ctrl-C), not '$duration'"
  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  need_pkg curl curl
  local api_bin kit master replica api i gens=() timer
  api_bin=$(build_release)
  kit=$(build_kit)

  make_work_dir
  master=$(free_port)
  start_redis master "$master"
  replica=$(free_port)
  start_redis replica "$replica" --replicaof 127.0.0.1 "$master"
  wait_for "the replica to sync" 60 replica_synced "$replica"
  serve api "$api_bin" --read-redis-addr "127.0.0.1:$replica" --write-redis-addr "127.0.0.1:$master"
  api=http://127.0.0.1:${PORT[api]}/
  wait_for "the API to be ready" 30 curl -sf "${api}readyz"
  serve hello-world "$kit" hello-world
  serve updater "$kit" updater --api-url "$api"
  # The generators start once GET / answers 200 (the updater's first value has been written).
  wait_for "the updater's first value" 10 curl -sf "$api"
  for ((i = 1; i <= generators; i++)); do
    serve "gen-$i" "$kit" attack --target "$api" --rate "${RATE:-200}" --duration 0 --name "gen-$i"
    gens+=("http://127.0.0.1:${PORT[gen-$i]}/")
  done
  serve aggregator "$kit" aggregator --generators "$(IFS=,; echo "${gens[*]}")" --api-url "$api"

  cat >&2 <<EOF_HELP

The rig runs: $generators generator(s) at ${RATE:-200} req/s each against redis-api $api
  dashboard      http://127.0.0.1:${PORT[aggregator]}/
  currency page  http://127.0.0.1:${PORT[aggregator]}/currency
  hello-world    http://127.0.0.1:${PORT[hello-world]}/
  logs           $WORK_DIR/*.log
Ctrl-C stops it; so does the end of --duration ${duration}s (0: none).

EOF_HELP
  # A timer child: `wait -n` returns when it ends or when any component exits early.
  timer=infinity
  ((duration == 0)) || timer=$duration
  sleep "$timer" &
  timer=$!
  CHILD_PIDS+=("$timer")
  wait -n || true
  kill -0 "$timer" 2>/dev/null && die "a component exited early (the ends of the logs follow)"
  log "--duration ${duration}s is over: stopping"
}

main "$@"
