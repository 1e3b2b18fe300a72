#!/usr/bin/env bash
# k8s.sh — runs redis-api on the cluster of kubectl's current context (see scripts/gke.sh): the
# Secret with generated Redis passwords, the manifests of k8s/ and of the load-test kit
# (k8s/loadtest/) with the images scripts/image.sh pushed, scaling, a local port-forward, load from
# a pod in the cluster, and removal of all of it. The commands are `tools k8s`
# (cluster/src/tools/k8s/); this wrapper builds the binary and runs it.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/k8s.sh COMMAND [ARGS]

Commands: secret [--replace], acl master|replica DIR, tls-secret [--replace], image REGISTRY TAG,
deploy, render, loadtest, scale N, port-forward [PORT], bench wrk|vegeta service|pod [DURATION],
teardown. They and their environment (NAMESPACE, K8S_DIR, IMAGE, LOADTEST_IMAGE, REDIS_HASH,
REDIS_FIELD, TLS_DAYS, CONNECTIONS, THREADS, RATE, PRINT) are described below, by tools k8s
--help; \`scripts/k8s.sh COMMAND --help\` lists a command's flags.

Environment of this wrapper:
  SKIP_BUILD  1: use the existing target/release/tools instead of building it
  TOOLS_BIN   a tools binary to use as is; no build
EOF_USAGE
}

# tools_bin: TOOLS_BIN as is, else the release build of tools (unless SKIP_BUILD=1). Its path.
tools_bin() {
  if [[ -n ${TOOLS_BIN:-} ]]; then
    [[ -x $TOOLS_BIN ]] || die "TOOLS_BIN=$TOOLS_BIN: not an executable"
    printf '%s\n' "$TOOLS_BIN"
  else
    build_tools
  fi
}

# help: the usage, then the commands' own help from a tools binary already built (TOOLS_BIN, else
# the release build); help never starts a build, which takes minutes.
help() {
  local tools=${TOOLS_BIN:-$REPO_ROOT/target/release/tools}
  usage
  echo
  if [[ -x $tools ]]; then
    exec "$tools" k8s --help
  fi
  echo "Each command's flags: scripts/k8s.sh COMMAND --help, once tools is built (any command builds it)."
}

main() {
  local tools
  case ${1:-} in -h | --help) help; return 0 ;; esac
  tools=$(tools_bin)
  exec "$tools" k8s "$@" --repo "$REPO_ROOT"
}

main "$@"
