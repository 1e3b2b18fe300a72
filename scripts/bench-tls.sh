#!/usr/bin/env bash
# bench-tls.sh — what TLS to the master costs a POST: one master with a plaintext and a TLS
# port, two redis-api processes writing to it (one plaintext, one rediss://), POST under
# `wrk -t1 -c$CONNS` against each, twice in turns. Prints rps, p50 and p99 per run and the
# machine's load before and after. Compare within one run only: everything shares the cores.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/bench-tls.sh [-h]

Environment:
  DURATION    length of each measurement, e.g. 10s (default 10s; four measurements)
  CONNS       concurrent connections of wrk (default 50)
  SKIP_BUILD  1: use the existing target/release/redis-api instead of building it
Needs redis-server (built with TLS, as Debian's is), redis-cli, wrk, curl and openssl.
EOF_USAGE
}

# make_certs: a CA and a certificate for localhost/127.0.0.1 signed by it, in WORK_DIR.
make_certs() {
  local d=$WORK_DIR
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$d/server-key.pem" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
}

# start_api NAME PORT WRITE_ADDR [ENV...]: a redis-api on PORT writing to WRITE_ADDR; waits for readiness.
start_api() {
  local name=$1 port=$2 write=$3
  shift 3
  start_child "$name" env RUST_LOG=warn "$@" "$BIN" --listen "127.0.0.1:$port" \
    --probe-listen "127.0.0.1:$(free_port)" --read-redis-addr "127.0.0.1:$REPLICA" --write-redis-addr "$write"
  wait_for "$name readiness on port $port" 30 curl -fs "http://127.0.0.1:$port/readyz"
}

# post_run NAME PORT: one wrk POST run; prints "NAME rps p50_ms p99_ms errors".
post_run() {
  log "measuring $1 for ${DURATION}s"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK_DIR/post.lua" "http://127.0.0.1:$2/" |
    awk -v name="$1" '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
      $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
      $1 == "Requests/sec:" { rps = $2 } /^  Non-2xx/ { err += $NF }
      /Socket errors/ { gsub(/[^0-9 ]/, " "); err += $1 + $2 + $3 + $4 }
      END { printf "%-12s %8.0f %8.3f %8.3f %6d\n", name, rps, p50, p99, err }'
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; "") ;; *) usage >&2; die "unknown argument: $1" ;; esac
  DURATION=$(seconds DURATION "${DURATION:-10s}") CONNS=${CONNS:-50}
  OWN_SESSION=0 # one CPU autogroup for every process (see start_child)
  local cmd
  for cmd in redis-server:redis-server redis-cli:redis-tools wrk:wrk curl:curl openssl:openssl; do
    need_pkg "${cmd%%:*}" "${cmd#*:}"
  done
  BIN=$(build_release)
  make_work_dir
  make_certs
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
    "'{\"value\": 1.5}'" >"$WORK_DIR/post.lua"
  local master tls plain secure
  master=$(free_port) tls=$(free_port)
  start_redis master "$master" --tls-port "$tls" --tls-cert-file "$WORK_DIR/server.pem" \
    --tls-key-file "$WORK_DIR/server-key.pem" --tls-ca-cert-file "$WORK_DIR/ca.pem" --tls-auth-clients no
  REPLICA=$(free_port) && start_redis replica "$REPLICA" --replicaof 127.0.0.1 "$master"
  wait_for "the replica to sync" 60 replica_synced "$REPLICA"
  plain=$(free_port) && start_api api-plain "$plain" "127.0.0.1:$master"
  secure=$(free_port) && start_api api-tls "$secure" "rediss://localhost:$tls" REDIS_TLS_CA_FILE="$WORK_DIR/ca.pem"
  log "load before: $(uptime)"
  printf '\n%-12s %8s %8s %8s %6s\n' name rps "p50 ms" "p99 ms" errors
  post_run post-plain "$plain"
  post_run post-tls "$secure"
  post_run post-plain "$plain"
  post_run post-tls "$secure"
  log "load after: $(uptime)"
}

main "$@"
