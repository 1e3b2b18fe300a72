#!/usr/bin/env bash
# image-test.sh — builds both container images (Dockerfile, loadtest/Dockerfile) with podman,
# exactly from the committed Dockerfiles, on local stand-ins of their Docker Hub base images
# (scripts/standins.Containerfile), then runs the README's `docker run` recipe with them: a Redis
# master and a replica with the ACL users of k8s/acl/, and the API as uid 10001, read-only, no
# capabilities, no-new-privileges; /readyz after sync, POST then GET, the kit's updater changing the value, and SIGTERM under load
# (exit 0, no failed request). scripts/test.sh runs it.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=redis-api-test-$$ # prefix of this run's containers and network

usage() {
  cat <<EOF_USAGE
Usage: scripts/image-test.sh [-h]

Needs root (podman runs rootful). Installs podman, netavark, aardvark-dns, debootstrap, curl and
openssl with apt when missing; skips (exit 0) only where no container engine can be installed.
Caches the Debian rootfs and cargo's registry in $CACHE_DIR (XDG_CACHE_HOME).
Prints how long each part took.
EOF_USAGE
}

# remove RC: the EXIT hook; shows the containers' logs when the run failed.
remove() {
  local c
  for c in master replica api updater paced; do
    [[ $1 -eq 0 ]] || { log "--- $c:" && podman logs --tail 15 "$NAME-$c" >&2; } 2>/dev/null || true
    podman rm -f -t 0 "$NAME-$c" >/dev/null 2>&1 || true
  done
  podman network rm -f "$NAME" >/dev/null 2>&1 || true
}

# current: the value GET / answers, or nothing.
current() { curl -fsS --max-time 2 "$URL/" | sed -n 's/^{"current": *\([-+0-9.eE]*\)}$/\1/p'; }
value_is() { [[ $(current) == "$1" ]]; }
changed() { local v; v=$(current) && [[ -n $v && $v != 1.23 ]]; }
status_is() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL$2") == "$1" ]]; }
paced_is() { curl -fsS --max-time 2 "$URL/metrics" | grep -qx "redis_api_http_paced $1"; }
# exited_0 NAME: dies unless the container NAME exited with status 0.
exited_0() {
  local rc
  rc=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-$1")
  [[ $rc == 0 ]] || die "$1 exited with status $rc on SIGTERM"
}
# load FILE: GETs one after another for 2 s, each status code appended to FILE (000: no answer).
load() {
  local end=$((${EPOCHREALTIME/./} + 2000000))
  while ((${EPOCHREALTIME/./} < end)); do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 2 "$URL/" >>"$1" || true
  done
}

# run_test: the README's recipe; SHUTDOWN_DELAY stands in for Kubernetes' preStop sleep (the
# listener stays open while clients learn the instance is going).
run_test() {
  local auth=$WORK_DIR/auth port codes=$WORK_DIR/codes pids=()
  local safe=(--user 10001:10001 --read-only --cap-drop ALL --security-opt no-new-privileges)
  local run=(podman run -d --network "$NAME" -v "$auth:/etc/redis-auth:ro")
  local redis=("$STANDIN_IMAGES/redis:bookworm" redis-server) k tools
  # The ACL users of Kubernetes (k8s/acl/, rendered as scripts/k8s.sh secret does): the API logs
  # in as writer and reader, the replica as replication; the default user is off.
  mkdir -m 755 "$auth"
  for k in read write replication admin; do openssl rand -hex 24 | tr -d '\n' >"$auth/password-$k"; done
  tools=$(build_debug_tools)
  for k in master replica; do TOOLS_BIN=$tools "$REPO_ROOT/scripts/k8s.sh" acl "$k" "$auth" >"$auth/$k.acl"; done
  { printf 'masteruser replication\nmasterauth ' && cat "$auth/password-replication" && echo; } >"$auth/replica-auth.conf"
  chmod 644 "$auth"/*
  podman network create "$NAME" >/dev/null
  "${run[@]}" --name "$NAME-master" "${redis[@]}" --aclfile /etc/redis-auth/master.acl --appendonly yes >/dev/null
  "${run[@]}" --name "$NAME-replica" "${redis[@]}" --aclfile /etc/redis-auth/replica.acl \
    --include /etc/redis-auth/replica-auth.conf --replicaof "$NAME-master" 6379 --save '' --appendonly no >/dev/null
  port=$(free_port) && URL=http://127.0.0.1:$port
  local api=(-e "REDIS_ADDR_WRITE=$NAME-master:6379" -e "REDIS_ADDR_READ=$NAME-replica:6379"
    -e REDIS_USER_WRITE=writer -e REDIS_PASS_WRITE_FILE=/etc/redis-auth/password-write
    -e REDIS_USER_READ=reader -e REDIS_PASS_READ_FILE=/etc/redis-auth/password-read localhost/redis-api:test)
  "${run[@]}" --name "$NAME-api" -p "127.0.0.1:$port:8080" "${safe[@]}" -e SHUTDOWN_DELAY=3s "${api[@]}" >/dev/null
  wait_for "/readyz 200 (the replica synced)" 60 curl -fsS "$URL/readyz"
  [[ $(curl -fsS -d '{"value": 1.23}' "$URL/") == '{"current":1.23}' ]] || die "POST / did not answer 1.23"
  wait_for "GET / to answer 1.23" 5 value_is 1.23
  log "ready after sync; POST then GET returned 1.23"
  "${run[@]}" --name "$NAME-updater" "${safe[@]}" -e "API_URL=http://$NAME-api:8080/" \
    -e UPDATE_INTERVAL=200ms localhost/redis-api-loadtest:test updater >/dev/null
  wait_for "the updater to change the value" 20 changed
  podman stop -t 10 "$NAME-updater" >/dev/null
  exited_0 updater
  log "the updater changed the value to $(current), and stopped on SIGTERM (exit 0)"
  for _ in 1 2; do load "$codes" & pids+=("$!"); done
  sleep 0.5
  podman stop -t 20 "$NAME-api" >/dev/null & pids+=("$!")
  wait_for "/readyz 503 after SIGTERM" 3 status_is 503 /readyz
  wait "${pids[@]}"
  exited_0 api
  (($(wc -l <"$codes") >= 20)) || die "too few requests under load: $(wc -l <"$codes")"
  ! grep -vx 200 "$codes" | sort | uniq -c | sed 's/^/failed: /' >&2 || die "requests failed during the drain"
  log "SIGTERM under load: exit 0, all $(wc -l <"$codes") GETs answered 200"
  # Under a CPU limit (the cgroup quota a Kubernetes limit makes) the API finds its throttling
  # from inside the container and paces its workers while loaded.
  port=$(free_port) && URL=http://127.0.0.1:$port
  "${run[@]}" --name "$NAME-paced" --cpus 0.1 -p "127.0.0.1:$port:8080" "${safe[@]}" "${api[@]}" >/dev/null
  wait_for "/readyz 200 under --cpus 0.1" 60 curl -fsS "$URL/readyz"
  wrk -t1 -c100 -d5s "$URL/" >/dev/null & pids=("$!")
  wait_for "redis_api_http_paced 1 under load" 5 paced_is 1
  wait "${pids[@]}"
  wait_for "redis_api_http_paced 0 once the load stopped" 5 paced_is 0
  log "under --cpus 0.1: paced while loaded, not after"
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  podman_engine || { log "skipped: no container engine here and no way to install one (needs root and apt-get)"; return 0; }
  need_pkg curl curl ca-certificates && need_pkg openssl openssl && need_pkg wrk wrk
  make_work_dir
  EXIT_HOOK=remove
  timed "stand-in base images" podman_standins
  timed "image redis-api" podman_build "${BASE_ARGS[@]}" -t localhost/redis-api:test -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT"
  timed "image redis-api-loadtest" podman_build "${BASE_ARGS[@]}" -t localhost/redis-api-loadtest:test \
    -f "$REPO_ROOT/loadtest/Dockerfile" --ignorefile "$REPO_ROOT/loadtest/Dockerfile.dockerignore" "$REPO_ROOT"
  timed "run test" run_test
  log "both images built and passed the run test"
}

main "$@"
