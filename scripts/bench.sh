#!/usr/bin/env bash
# bench.sh — the benchmark, in one run on this machine: builds what it needs, then runs the
# `tools bench` (cluster/src/tools/bench.rs): redis-api with its default flags against
# redis-benchmark, webdis, the talk's Go net/http + redigo design and our bare HTTP layer, at
# CONNS and CONNS_HIGH client connections and beside a noisy neighbour; prints the figures and
# the ratios against the targets. The sequence runs ROUNDS times; each ratio is taken within a
# round and reported as the median of the rounds with its range. Compare ratios within one run
# only: everything shares the cores.
# Before each measurement it prints "step k of n: WHAT (about T left)" to stderr.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/bench.sh [-h]

Environment:
  DURATION    length of each measurement, e.g. 10s (default 5s; 16 measurements per round)
  ROUNDS      times the whole sequence runs (default 3); figures are medians of the rounds
  CONNS       client connections of the main round (default 50)
  CONNS_HIGH  client connections of the second round (default 200)
  IDLE_CONNS  idle keep-alive connections for the RSS measurement (default 1000)
  RECORD      a file to append the run to as Markdown (e.g. BENCHMARKS.md)
  SKIP_BUILD  1: use the existing target/release/{redis-api,loadtest,tools} instead of building
              them (an error when one is missing)
  LOADTEST_BIN  a loadtest binary to use as is; no build
Exits 0 when the run completed, whether or not the targets were met.
EOF_USAGE
}

# build_peer: the Go peer (loadtest/peers/redigo) against Debian's redigo, in GOPATH mode (no
# module download). Prints its path.
build_peer() {
  need_pkg go golang-go
  need_file /usr/share/gocode/src/github.com/gomodule/redigo golang-github-gomodule-redigo-dev
  local out=$REPO_ROOT/target/release/redigo-peer
  (cd "$REPO_ROOT/loadtest/peers/redigo" && GOPATH=/usr/share/gocode GO111MODULE=off go build -o "$out" . >&2)
  printf '%s\n' "$out"
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; "") ;; *) usage >&2; die "unknown argument: $1" ;; esac
  local bin kit tools peer cmd each
  each=$(seconds DURATION "${DURATION:-5s}")
  bin=$(build_release)
  kit=$(build_kit)
  tools=$(build_tools)
  for cmd in redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools wrk:wrk webdis:webdis; do
    need_pkg "${cmd%%:*}" "${cmd#*:}"
  done
  peer=$(build_peer)
  ulimit -n 4096 || log "warning: cannot raise the open-files limit to 4096"
  # In UTC and saying so: the time a run is recorded under in BENCHMARKS.md.
  log "started $(date -u '+%Y-%m-%d %H:%M UTC')"
  "$tools" bench --api-bin "$bin" --loadtest-bin "$kit" --peer-bin "$peer" --duration "${each}s" \
    --rounds "${ROUNDS:-3}" \
    --conns "${CONNS:-50}" --conns-high "${CONNS_HIGH:-200}" --idle-conns "${IDLE_CONNS:-1000}" \
    ${RECORD:+--record "$RECORD"}
}

main "$@"
