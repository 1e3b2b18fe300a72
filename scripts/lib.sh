#!/usr/bin/env bash
# lib.sh — helpers shared by the scripts in this folder; sourced, never run.
#
# Logging to stderr, installing what is missing (Debian packages, Rust), free ports, and
# child processes (Redis, servers) that are stopped and a temp dir that is removed on exit;
# podman set up for this machine and local stand-ins of the Dockerfiles' base images.

# The repository root, whatever the caller's working directory.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Pids of the children to stop on exit, and the temp dir to remove (set by make_work_dir).
CHILD_PIDS=()
WORK_DIR=""
# A function the EXIT trap calls first, with the exit status (e.g. to remove containers).
EXIT_HOOK=""
APT_UPDATED=0
# The image references scripts/image.sh pushed last, the API's then the kit's, one a line;
# scripts/k8s.sh deploy and loadtest use them (tools k8s reads the file; not committed).
# shellcheck disable=SC2034 # used by image.sh
K8S_IMAGE_FILE=$REPO_ROOT/.k8s-image

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need_cmd CMD HOW: dies, saying HOW to get it, when the command CMD is missing (for tools the
# seconds NAME VALUE: prints VALUE, a duration with its unit (30s, 5m, 1h; 0 alone), as whole
# seconds; dies naming NAME and VALUE otherwise. A bare number is still read as seconds, with a
# warning (the tools' convention: durations carry units).
seconds() {
  local name=$1 value=$2
  if [[ $value =~ ^([0-9]+)(s|m|h)$ ]]; then
    case ${BASH_REMATCH[2]} in
      s) echo $((10#${BASH_REMATCH[1]})) ;;
      m) echo $((10#${BASH_REMATCH[1]} * 60)) ;;
      h) echo $((10#${BASH_REMATCH[1]} * 3600)) ;;
    esac
  elif [[ $value =~ ^[0-9]+$ ]]; then
    ((10#$value == 0)) || log "warning: $name: a bare number is deprecated; write ${value}s"
    echo $((10#$value))
  else
    die "$name: expected a duration such as 30s, 5m or 1h (0: none), got '$value'"
  fi
}

# scripts do not install themselves: gcloud, kubectl, docker).
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# kc ARGS...: kubectl, in the namespace NAMESPACE when it is set (else the context's).
kc() { kubectl ${NAMESPACE:+--namespace "$NAMESPACE"} "$@"; }

# as_root CMD...: runs CMD as root, through sudo only when not root already.
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# need_pkg CMD PKG...: installs the Debian package(s) PKG when the command CMD is missing.
need_pkg() {
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "$cmd not found: installing Debian package(s) $*"
  apt_install "$@"
}

# need_file FILE PKG...: installs the Debian package(s) PKG when FILE is missing (packages of
# data without a command, e.g. fonts).
need_file() {
  local file=$1
  shift
  [[ -e $file ]] && return 0
  log "$file not found: installing Debian package(s) $*"
  apt_install "$@"
}

# apt_install PKG...: apt-get install, after one apt-get update per run.
apt_install() {
  ((APT_UPDATED)) || { as_root apt-get update -qq >&2 && APT_UPDATED=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# need_rust: makes cargo available, installing the stable toolchain with rustup when missing
# (Debian's own cargo is too old for edition 2024).
need_rust() {
  # shellcheck source=/dev/null
  [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]] && source "${CARGO_HOME:-$HOME/.cargo}/env"
  command -v cargo >/dev/null 2>&1 && return 0
  need_pkg curl curl ca-certificates
  log "cargo not found: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
  # shellcheck source=/dev/null
  source "${CARGO_HOME:-$HOME/.cargo}/env"
}

# prebuilt BIN HOW: with SKIP_BUILD=1, true when BIN is an executable; dies naming it and HOW to
# build it when it is missing. False when SKIP_BUILD is not 1 (the caller builds).
prebuilt() {
  [[ ${SKIP_BUILD:-0} == 1 ]] || return 1
  [[ -x $1 ]] || die "SKIP_BUILD=1 but $1 is missing: build it first ($2) or unset SKIP_BUILD"
  log "SKIP_BUILD=1: using the existing $1"
}

# cargo_release ARGS...: `cargo build --release --locked ARGS...` in the repository. The first
# release build takes minutes (fat LTO); later ones only rebuild what changed.
cargo_release() {
  need_rust
  log "building: cargo build --release --locked $* (the first release build takes several minutes)"
  (cd "$REPO_ROOT" && cargo build --release --locked "$@" >&2)
}

# build_tools: the release binary `tools` of the local-cluster package (cluster/: the local
# cluster, the chaos suite, the scaling experiment and the benchmark as subcommands), built
# unless SKIP_BUILD=1 (then it must exist). Prints its path.
build_tools() {
  local bin=$REPO_ROOT/target/release/tools
  prebuilt "$bin" "cargo build --release --locked -p local-cluster" || cargo_release -p local-cluster
  printf '%s\n' "$bin"
}

# build_debug_tools: the debug build of `tools` (seconds after `cargo test`, which builds it too,
# where the release build with fat LTO takes minutes), for the checks that only read files
# (`tools manifests`, `tools k8s render` and `acl`); built unless SKIP_BUILD=1 (then it must
# exist). Prints its path.
build_debug_tools() {
  local bin=$REPO_ROOT/target/debug/tools
  if ! prebuilt "$bin" "cargo build --locked -p local-cluster --bin tools"; then
    need_rust
    log "building: cargo build --locked -p local-cluster --bin tools"
    (cd "$REPO_ROOT" && cargo build --locked -p local-cluster --bin tools >&2)
  fi
  printf '%s\n' "$bin"
}

# build_release: `cargo build --release --locked` (the server), unless SKIP_BUILD=1 (then the
# binary must exist). Prints the binary's path.
build_release() {
  local bin=$REPO_ROOT/target/release/redis-api
  prebuilt "$bin" "cargo build --release --locked" || cargo_release
  printf '%s\n' "$bin"
}

# build_kit: the release build of the load-test kit (as build_release), or LOADTEST_BIN as is
# when set. Prints its path.
build_kit() {
  local bin=${LOADTEST_BIN:-$REPO_ROOT/target/release/loadtest}
  if [[ -z ${LOADTEST_BIN:-} ]]; then
    prebuilt "$bin" "cargo build --release --locked -p loadtest" || cargo_release -p loadtest
  fi
  [[ -x $bin ]] || die "$bin: not an executable"
  printf '%s\n' "$bin"
}

# port_in_use PORT: true when something accepts connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: prints a random TCP port that nothing listens on, below the kernel's ephemeral
# range (a port in use as the local end of an outgoing connection cannot be bound either).
# Claim it soon (start the server before asking for the next one): nothing reserves it.
free_port() {
  local low=32768 port tries
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 11024)) || low=61000
  for ((tries = 0; tries < 100; tries++)); do
    port=$((10000 + RANDOM % (low - 11000)))
    port_in_use "$port" || { printf '%s\n' "$port"; return 0; }
  done
  die "no free port found"
}

# wait_for WHAT SECONDS CMD...: runs CMD every 0.1 s until it succeeds, or dies after SECONDS.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

# make_work_dir: creates WORK_DIR and installs the traps that stop the children and remove it.
make_work_dir() {
  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/redis-api.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT && trap 'exit 143' TERM
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# cleanup: the EXIT trap. Stops the children, newest first, shows the end of their logs when
# the script failed, and removes WORK_DIR.
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  [[ -z $EXIT_HOOK ]] || "$EXIT_HOOK" "$rc" || true
  for ((i = ${#CHILD_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${CHILD_PIDS[i]}"; done
  if [[ -n $WORK_DIR ]]; then
    if [[ $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ]] && compgen -G "$WORK_DIR/*.log" >/dev/null; then
      tail -n 5 "$WORK_DIR"/*.log >&2 || true
    fi
    rm -rf "$WORK_DIR"
  fi
  exit "$rc"
}

# start_child NAME CMD...: starts CMD in the background, logging to WORK_DIR/NAME.log; its pid
# is appended to CHILD_PIDS. With OWN_SESSION=1 (the default) CMD gets a session of its own, so
# a Ctrl-C in the terminal reaches only this script, which then stops it in order (setsid execs
# CMD in place: a child of a script is never a process group leader). Benchmarks set
# OWN_SESSION=0: with kernel.sched_autogroup_enabled each session is a CPU group of its own,
# which starves the API's many threads against single-threaded peers (measured: 90/10 mix p99
# 2.3 ms in one session, 48 ms with the API in its own session).
start_child() {
  local name=$1
  shift
  if [[ ${OWN_SESSION:-1} == 1 ]]; then
    setsid "$@" >"$WORK_DIR/$name.log" 2>&1 &
  else
    "$@" >"$WORK_DIR/$name.log" 2>&1 &
  fi
  CHILD_PIDS+=("$!")
}

# start_redis NAME PORT [ARGS...]: a throwaway redis-server (no persistence) on 127.0.0.1:PORT
# with its own dir under WORK_DIR; returns once it answers PING.
start_redis() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$WORK_DIR/$name"
  start_child "$name" redis-server --port "$port" --bind 127.0.0.1 --daemonize no \
    --dir "$WORK_DIR/$name" --save "" --appendonly no --repl-diskless-sync-delay 0 "$@"
  wait_for "redis $name on port $port" 10 redis-cli -p "$port" ping
}

# replica_synced PORT: true when the replica on PORT has its link to the master up.
replica_synced() {
  [[ $(redis-cli -p "$1" info replication) == *master_link_status:up* ]]
}

# timed WHAT CMD...: runs CMD and logs how long it took.
timed() {
  local what=$1 start=$EPOCHREALTIME
  shift
  "$@"
  log "$what: $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }')"
}

# --- podman (scripts/image-test.sh) ------------------------------------------------------------
# Where the container helpers cache what is slow to make: the Debian rootfs, cargo's registry.
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/redis-api
# The local stand-ins for the Docker Hub images (scripts/standins.Containerfile).
STANDIN_IMAGES=localhost/redis-api-standin
# podman_standins sets it: the build args and mounts of a Dockerfile build on the stand-ins.
BASE_ARGS=()

# podman_engine: rootful podman (+ netavark/aardvark-dns for container names, debootstrap for the
# base image), installed with apt when missing, set up for this kind of machine through a private
# containers.conf: runc (crun refuses a cgroup hybrid mode), ulimits within a sandbox's hard
# limits, logs and events to files (no journald). Returns 1 when it cannot be installed here.
podman_engine() {
  [[ $(id -u) -eq 0 ]] || return 1
  if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null ||
    [[ ! -x /usr/lib/podman/aardvark-dns ]]; then
    command -v apt-get >/dev/null || return 1
    apt_install podman runc netavark aardvark-dns debootstrap
  fi
  mkdir -p "$CACHE_DIR/cargo-registry"
  printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]' \
    'log_driver = "k8s-file"' '[engine]' 'runtime = "runc"' 'events_logger = "file"' \
    '[network]' 'network_backend = "netavark"' >"$CACHE_DIR/containers.conf"
  export CONTAINERS_CONF=$CACHE_DIR/containers.conf
}

# podman_build ARGS...: podman build on the host's network, at low priority.
podman_build() { nice -n 10 podman build --network host --layers "$@" >&2; }

# podman_standins: the stand-in base images, made once and reused: a debootstrapped bookworm (its
# rootfs tarball cached), a Rust builder with this machine's toolchain of the version the
# Dockerfile pins, and Redis. Sets BASE_ARGS. Needs WORK_DIR.
podman_standins() {
  local rust sysroot tar=$CACHE_DIR/bookworm-minbase.tar file=$REPO_ROOT/scripts/standins.Containerfile
  rust=$(sed -n 's/^ARG RUST_IMAGE=rust:\([0-9.]*\)-bookworm$/\1/p' "$REPO_ROOT/Dockerfile")
  [[ -n $rust ]] || die "no ARG RUST_IMAGE=rust:X-bookworm in the Dockerfile"
  if [[ ! -s $tar ]]; then
    mkdir -p "$WORK_DIR/rootfs"
    timed "debootstrap" debootstrap --variant=minbase bookworm "$WORK_DIR/rootfs" >"$WORK_DIR/debootstrap.log"
    tar -C "$WORK_DIR/rootfs" -cf "$tar.part" . && mv "$tar.part" "$tar"
  fi
  podman image exists "$STANDIN_IMAGES/debian:bookworm" || podman import -q "$tar" "$STANDIN_IMAGES/debian:bookworm" >&2
  if ! podman image exists "$STANDIN_IMAGES/rust:$rust"; then
    if command -v rustup >/dev/null; then rustup toolchain install "$rust" --profile minimal >&2; fi
    sysroot=$(rustc "+$rust" --print sysroot) || die "no Rust $rust toolchain on this machine"
    podman_build --target rust -t "$STANDIN_IMAGES/rust:$rust" -v "$sysroot:/toolchain:ro" -f "$file" "$WORK_DIR"
  fi
  podman image exists "$STANDIN_IMAGES/redis:bookworm" ||
    podman_build --target redis -t "$STANDIN_IMAGES/redis:bookworm" -f "$file" "$WORK_DIR"
  # The host's CA bundle: HTTPS to crates.io goes through this machine's network path, which the
  # image's own certificates do not cover. Mounted for the build, never baked in.
  # shellcheck disable=SC2034 # used by the caller
  BASE_ARGS=(--build-arg "RUST_IMAGE=$STANDIN_IMAGES/rust:$rust"
    --build-arg "RUNTIME_IMAGE=$STANDIN_IMAGES/debian:bookworm"
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
    -v "$CACHE_DIR/cargo-registry:/usr/local/cargo/registry")
}
