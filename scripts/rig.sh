#!/usr/bin/env bash
# rig.sh — the whole load-test rig on this machine, in one command: a Redis master and replica,
# redis-api on them, hello-world, the updater writing to the API, N load generators (pod mode)
# attacking the API and the aggregator pulling them. Everything listens on 127.0.0.1 only.
# Prints the dashboard, currency page and hello-world URLs; Ctrl-C, SIGTERM or the end of
# --duration stops every process and removes the temp dir, after a summary: what ran, for how
# long, the generators' totals (as the aggregator added them up) and the updater's POSTs.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/rig.sh [-h] [--generators N] [--duration DURATION]
  --generators N        load generators, each at \$RATE req/s (default 2)
  --duration DURATION   stop after this long, e.g. 90s or 10m (default 5m; 0: until Ctrl-C)

Environment:
  RATE          requests per second of each generator (default 200)
  SKIP_BUILD    1: use the existing release binaries instead of building them (an error when
                one is missing; the first release build takes minutes)
  LOADTEST_BIN  a loadtest binary to use as is (e.g. target/debug/loadtest); no build
  API_BIN       a redis-api binary to use as is (e.g. target/debug/redis-api); no build
  RUST_LOG      log level filter of the Rust processes (default info); logs: the temp dir
EOF_USAGE
}

# died NAME PID: dies with "NAME exited with status N: <its last log line>" when the child PID
# has exited; returns 0 while it runs.
died() {
  local name=$1 pid=$2 status=0 last
  kill -0 "$pid" 2>/dev/null && return 0
  wait "$pid" 2>/dev/null || status=$?
  last=$(tail -n 1 "$WORK_DIR/$name.log" 2>/dev/null || true)
  die "$name exited with status $status: ${last:-(no output)}"
}

# up_or_died NAME URL SECONDS: waits until URL answers 2xx, noticing at once if the child NAME
# (PID[NAME]) died instead of waiting out SECONDS.
up_or_died() {
  local name=$1 url=$2 deadline=$((SECONDS + $3))
  until curl -sf "$url" >/dev/null 2>&1; do
    died "$name" "${PID[$name]}"
    ((SECONDS < deadline)) || die "timed out waiting for $name at $url (its log: $WORK_DIR/$name.log)"
    sleep 0.1
  done
}

# serve NAME CMD...: starts CMD (a server of ours that takes --listen) on a free loopback port,
# recorded as PORT[NAME] (its pid as PID[NAME]), and waits for its /healthz.
declare -A PORT=() PID=()
serve() {
  local name=$1
  shift
  PORT[$name]=$(free_port)
  start_child "$name" "$@" --listen "127.0.0.1:${PORT[$name]}"
  PID[$name]=${CHILD_PIDS[-1]}
  up_or_died "$name" "http://127.0.0.1:${PORT[$name]}/healthz" 30
}

# The generators' run totals of the aggregator's /api/series, in one line.
TOTALS_JQ='.totals | if . == null then "none (no second merged yet)" else
  "\(.requests) requests of \(.offered) offered, success \(.success_ratio * 10000 | round / 100) %, " +
  "p50 \(.latency_ms.p50 * 100 | round / 100) ms, p99 \(.latency_ms.p99 * 100 | round / 100) ms, " +
  "max \(.latency_ms.max * 100 | round / 100) ms; by status: " +
  ((.codes + .errors) | to_entries | map("\(.value) × \(.key)") | join(", ")) end'

# summary STATUS: the EXIT hook once the rig runs; on a stop (not a failure) says what ran, for
# how long and what the generators and the updater counted. RIG_WHAT and RIG_STARTED: set by main.
summary() {
  [[ $1 == 0 || $1 == 130 || $1 == 143 ]] || return 0
  local totals posts agg=http://127.0.0.1:${PORT[aggregator]} upd=http://127.0.0.1:${PORT[updater]}
  totals=$(curl -sf --max-time 2 "$agg/api/series" | jq -r "$TOTALS_JQ") || totals="unknown (no answer from $agg)"
  posts=$(curl -sf --max-time 2 "$upd/metrics" | sed -n 's/^updater_posts_total{result="\([a-z]*\)"} \([0-9]*\).*/\2 \1/p' |
    paste -sd ,) || posts="unknown (no answer from $upd)"
  log "summary: $RIG_WHAT, for $((SECONDS - RIG_STARTED)) s"
  log "summary: generators' totals: $totals"
  log "summary: updater POSTs: ${posts:-none}"
}

# positive WHAT VALUE: dies unless VALUE is a positive number (e.g. 200 or 2.5).
positive() {
  [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ && ! $2 =~ ^0+(\.0+)?$ ]] || die "$1: a positive number (req/s), not '$2'"
}

main() {
  local generators=2 duration=5m
  while (($#)); do
    case $1 in
      -h | --help) usage; return 0 ;;
      --generators) generators=${2:-}; shift 2 || die "--generators needs a value" ;;
      --duration) duration=${2:-}; shift 2 || die "--duration needs a value" ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  [[ $generators =~ ^[1-9][0-9]*$ ]] || die "--generators: a positive number, not '$generators'"
  duration=$(seconds --duration "$duration")
  local rate=${RATE:-200}
  positive RATE "$rate"
  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  need_pkg curl curl
  need_pkg jq jq
  local api_bin kit master replica api i gens=() timer
  api_bin=${API_BIN:-}
  [[ -n $api_bin ]] || api_bin=$(build_release)
  [[ -x $api_bin ]] || die "$api_bin: not an executable"
  kit=$(build_kit)

  make_work_dir
  master=$(free_port)
  start_redis master "$master"
  replica=$(free_port)
  start_redis replica "$replica" --replicaof 127.0.0.1 "$master"
  wait_for "the replica to sync" 60 replica_synced "$replica"
  # Its probe listener too on a free loopback port: the default, 0.0.0.0:8081, clashes with a
  # second rig (or anything else there) and is not loopback.
  serve api "$api_bin" --read-redis-addr "127.0.0.1:$replica" --write-redis-addr "127.0.0.1:$master" \
    --probe-listen "127.0.0.1:$(free_port)"
  api=http://127.0.0.1:${PORT[api]}/
  up_or_died api "${api}readyz" 30
  serve hello-world "$kit" hello-world
  serve updater "$kit" updater --api-url "$api"
  # The generators start once GET / answers 200 (the updater's first value has been written).
  up_or_died updater "$api" 10
  for ((i = 1; i <= generators; i++)); do
    serve "gen-$i" "$kit" attack --target "$api" --rate "$rate" --duration 0 --name "gen-$i"
    gens+=("http://127.0.0.1:${PORT[gen-$i]}/")
  done
  serve aggregator "$kit" aggregator --generators "$(IFS=,; echo "${gens[*]}")" --api-url "$api"
  RIG_WHAT="$generators generator(s) at $rate req/s each against redis-api $api, the updater writing"
  RIG_STARTED=$SECONDS
  EXIT_HOOK=summary

  cat >&2 <<EOF_HELP

The rig runs: $generators generator(s) at $rate req/s each against redis-api $api
  dashboard      http://127.0.0.1:${PORT[aggregator]}/
  currency page  http://127.0.0.1:${PORT[aggregator]}/currency
  hello-world    http://127.0.0.1:${PORT[hello-world]}/
  logs           $WORK_DIR/*.log
Ctrl-C stops it; so does the end of --duration ${duration}s (0: none).

EOF_HELP
  # A timer child: `wait -n` returns when it ends or when any component exits early (which one
  # and its status: -p, bash 5.1).
  timer=infinity
  ((duration == 0)) || timer=$duration
  sleep "$timer" &
  timer=$!
  CHILD_PIDS+=("$timer")
  local ended status=0
  wait -n -p ended || status=$?
  if [[ ${ended:-} != "$timer" ]]; then
    for name in "${!PID[@]}"; do
      [[ ${PID[$name]} != "${ended:-}" ]] && continue
      die "$name exited with status $status: $(tail -n 1 "$WORK_DIR/$name.log" 2>/dev/null || true)"
    done
    die "a component exited early with status $status (the ends of the logs follow)"
  fi
  log "--duration ${duration}s is over: stopping"
}

main "$@"
