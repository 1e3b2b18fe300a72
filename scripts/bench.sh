#!/usr/bin/env bash
# bench.sh — the benchmark, in one run on this machine: redis-benchmark and webdis (C,
# HTTP→Redis) against a local replica as the yardsticks, then redis-api GET, POST and a 90/10
# mix, and redis-api's RSS with 1000 idle keep-alive connections. Prints a table and the
# ratios against the targets. Compare ratios within one run only: everything shares the cores.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/bench.sh [-h]

Environment:
  DURATION    seconds per measurement (default 10)
  CONNS       concurrent connections of each load generator (default 50)
  IDLE_CONNS  idle keep-alive connections for the RSS measurement (default 1000)
  SKIP_BUILD  1: use the existing target/release/redis-api and loadtest instead of building
              them (an error when one is missing)
  LOADTEST_BIN  a loadtest binary to use as is; no build
Exits 0 when the run completed, whether or not the targets were met.
EOF_USAGE
}

# wrk_run NAME URL [WRK_ARGS...]: one wrk run; appends "NAME rps p50_ms p99_ms errors" to RESULTS.
wrk_run() {
  local name=$1 url=$2
  shift 2
  log "measuring $name for ${DURATION}s"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$WORK_DIR/$name.wrk"
  awk -v name="$name" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 } /^  Non-2xx/ { err += $NF }
    /Socket errors/ { gsub(/[^0-9 ]/, " "); err += $1 + $2 + $3 + $4 }
    END { printf "%s %.0f %.3f %.3f %d\n", name, rps, p50, p99, err }' "$WORK_DIR/$name.wrk" >>"$RESULTS"
}

# write_lua: the wrk scripts for POST and the 90/10 GET/POST mix.
write_lua() {
  cat >"$WORK_DIR/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"value": 1.5}'
wrk.headers["Content-Type"] = "application/json"
LUA
  cat >"$WORK_DIR/mix.lua" <<'LUA'
-- Formatted in init(): wrk sets the Host header only then.
local n, get, post = 0, nil, nil
function init(args)
  get = wrk.format("GET", "/")
  post = wrk.format("POST", "/", { ["Content-Type"] = "application/json" }, '{"value": 1.5}')
end
function request()
  n = n + 1
  if n % 10 == 0 then return post end
  return get
end
LUA
}

# idle_rss PORT PID: opens IDLE_CONNS keep-alive connections (one /healthz each), prints VmRSS in MB.
idle_rss() {
  python3 - "$1" "$IDLE_CONNS" "$WORK_DIR/idle.ready" <<'PY' &
import socket, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for s in socks:
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
for s in socks:
    if not s.recv(4096).startswith(b"HTTP/1.1 200"):
        sys.exit("idle connection: unexpected answer")
open(ready, "w").close()
time.sleep(3)
PY
  local py=$!
  wait_for "$IDLE_CONNS idle connections" 30 test -e "$WORK_DIR/idle.ready"
  awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$2/status"
  wait "$py" || die "the idle-connection client failed"
}

# report RSS_MB: the table, then each ratio against its target with PASS/FAIL.
report() {
  awk -v rss="$1" -v idle="$IDLE_CONNS" -v started="$STARTED" '
    function check(label, v, op, t) {
      printf "%-42s %9.3f  target %s %-4s %s\n", label, v, op, t, ((op == ">=") ? v >= t : v <= t) ? "PASS" : "FAIL"
    }
    BEGIN { printf "\nrun started %s\n%-16s %10s %9s %9s %8s\n", started, "name", "rps", "p50 ms", "p99 ms", "errors" }
    { printf "%-16s %10s %9s %9s %8s\n", $1, $2, $3, $4, $5; rps[$1] = $2; p99[$1] = $4 }
    $5 > 0 { bad = bad " " $1 }
    END {
      if (bad != "") print "\nwarning: errors (non-2xx or socket) in" bad ": their numbers are not valid"
      print ""
      check("api GET rps / redis-benchmark GET rps", rps["api-get"] / rps["redis-benchmark"], ">=", 0.5)
      check("api GET rps / webdis HGET rps", rps["api-get"] / rps["webdis-hget"], ">=", 0.8)
      check("api GET p99 ms", p99["api-get"], "<=", 5)
      check("RSS MB, " idle " idle keep-alive connections", rss, "<=", 30)
      check("memory-mode GET rps / hello-world rps", rps["api-get-memory"] / rps["hello-world"], ">=", 0.9)
      check("memory-mode GET rps / webdis HGET rps", rps["api-get-memory"] / rps["webdis-hget"], ">=", 1.5)
    }' "$RESULTS"
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; "") ;; *) usage >&2; die "unknown argument: $1" ;; esac
  DURATION=${DURATION:-10} CONNS=${CONNS:-50} IDLE_CONNS=${IDLE_CONNS:-1000}
  # Every process in this script's session: one CPU autogroup for all (see start_child).
  OWN_SESSION=0
  local bin kit
  bin=$(build_release)
  kit=$(build_kit)
  local cmd
  for cmd in redis-server:redis-server redis-cli:redis-tools wrk:wrk webdis:webdis curl:curl python3:python3; do
    need_pkg "${cmd%%:*}" "${cmd#*:}"
  done
  local master replica webdis api memory hello
  ulimit -n 4096 || log "warning: cannot raise the open-files limit to 4096"
  make_work_dir
  RESULTS=$WORK_DIR/results
  # In UTC and saying so: the time a run is recorded under in BENCHMARKS.md.
  STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
  log "started $STARTED"
  master=$(free_port) && start_redis master "$master"
  # Seeded before the replica starts: its first sync carries the value.
  redis-cli -p "$master" HSET currency current-value 42 >/dev/null
  replica=$(free_port) && start_redis replica "$replica" --replicaof 127.0.0.1 "$master"
  wait_for "the replica to sync" 60 replica_synced "$replica"

  webdis=$(free_port)
  cat >"$WORK_DIR/webdis.json" <<JSON
{"redis_host": "127.0.0.1", "redis_port": $replica, "http_host": "127.0.0.1", "http_port": $webdis,
 "threads": 2, "pool_size": 20, "daemonize": false, "database": 0,
 "verbosity": 0, "logfile": "$WORK_DIR/webdis.log"}
JSON
  start_child webdis webdis "$WORK_DIR/webdis.json"
  wait_for "webdis on port $webdis" 10 curl -fs "http://127.0.0.1:$webdis/HGET/currency/current-value"
  api=$(free_port)
  start_child redis-api env RUST_LOG=warn "$bin" --listen "127.0.0.1:$api" --read-pool-size 50 \
    --probe-listen "127.0.0.1:$(free_port)" --read-redis-addr "127.0.0.1:$replica" --write-redis-addr "127.0.0.1:$master"
  local api_pid=${CHILD_PIDS[-1]}
  wait_for "redis-api readiness on port $api" 30 curl -fs "http://127.0.0.1:$api/readyz"
  # The same server in memory read mode, and hello-world on the same HTTP layer (its ceiling).
  memory=$(free_port)
  start_child redis-api-memory env RUST_LOG=warn "$bin" --listen "127.0.0.1:$memory" --read-mode memory \
    --probe-listen "127.0.0.1:$(free_port)" --read-redis-addr "127.0.0.1:$replica" --write-redis-addr "127.0.0.1:$master"
  wait_for "memory-mode readiness on port $memory" 30 curl -fs "http://127.0.0.1:$memory/readyz"
  hello=$(free_port)
  start_child hello-world "$kit" hello-world --listen "127.0.0.1:$hello"
  wait_for "hello-world on port $hello" 10 curl -fs "http://127.0.0.1:$hello/"
  write_lua

  log "measuring redis-benchmark for ~${DURATION}s"
  redis-benchmark -p "$replica" -t get -c "$CONNS" -n $((DURATION * 70000)) --csv |
    awk -F'"' '$2 == "GET" { printf "redis-benchmark %.0f %.3f %.3f 0\n", $4, $10, $14 }' >>"$RESULTS"
  wrk_run webdis-hget "http://127.0.0.1:$webdis/HGET/currency/current-value"
  wrk_run hello-world "http://127.0.0.1:$hello/"
  wrk_run api-get "http://127.0.0.1:$api/"
  wrk_run api-get-memory "http://127.0.0.1:$memory/"
  wrk_run api-post "http://127.0.0.1:$api/" -s "$WORK_DIR/post.lua"
  wrk_run api-mix-90-10 "http://127.0.0.1:$api/" -s "$WORK_DIR/mix.lua"
  log "measuring RSS with $IDLE_CONNS idle connections"
  local rss
  rss=$(idle_rss "$api" "$api_pid")
  report "$rss"
}

main "$@"
