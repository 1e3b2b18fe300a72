#!/usr/bin/env bash
# local-cluster.sh — the Kubernetes topology of k8s/ on this machine, in network namespaces:
# a Redis master and N "pods", each with its replica sidecar on its own 127.0.0.1:6379 and the
# API started through run.sh, all configured from the manifests. The logic is the Rust binary
# `tools cluster` (cluster/); this wrapper installs what it needs, builds it and runs it as root.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/local-cluster.sh up N [--env KEY=VALUE]...   start a master and N pods, print their addresses
       scripts/local-cluster.sh down                         remove everything up made
       scripts/local-cluster.sh cut I | restore I            take pod I's link to the master down / up
       scripts/local-cluster.sh serve [--service-addr A]     the emulated kubelet + the API Service
                                                             (default 127.0.0.1:8080), until Ctrl-C

Needs root (sudo is used otherwise). Other options: target/release/tools cluster --help.
up and serve build the release binaries first (the first release build takes minutes); down,
cut and restore never build.

Environment:
  SKIP_BUILD   1: up and serve use the existing release binaries (an error when one is missing)
EOF_USAGE
}

main() {
  case ${1:-} in
    up | down | cut | restore | serve) ;;
    -h | --help) usage; return 0 ;;
    *) usage >&2; die "unknown command: ${1:-none}" ;;
  esac
  need_pkg ip iproute2
  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  local bin tool
  if [[ $1 == up || $1 == serve ]]; then
    bin=$(build_release)
    tool=$(build_tools)
  else
    # down, cut, restore act on what `up` made, with the binaries it built: no build.
    bin=$REPO_ROOT/target/release/redis-api
    tool=$REPO_ROOT/target/release/tools
    [[ -x $tool ]] || die "$tool is missing: nothing was brought up with this checkout (scripts/local-cluster.sh up N builds it)"
  fi
  as_root "$tool" cluster "$@" --repo "$REPO_ROOT" --api-bin "$bin"
}

main "$@"
