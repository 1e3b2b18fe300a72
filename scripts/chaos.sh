#!/usr/bin/env bash
# chaos.sh — the overload and chaos suite: brings up two local pods from k8s/ (network
# namespaces, see scripts/local-cluster.sh), injects one fault per scenario under load and
# prints one PASS/FAIL line per scenario with the figures measured. Runs the Rust binary
# `tools chaos` (cluster/src/chaos/) as root. The fast subset takes about four minutes; --long adds
# the 30 s overload, the 70 s link cut and the Service-level #11 (3 min master outage), #13
# (overload with the kubelet probing) and #14 (one replica cut off).
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/chaos.sh [OPTIONS]          the fast subset (#2 #3 #4 #6 #7 #8 #9 #10 #12 #15)
       scripts/chaos.sh --long             all fifteen scenarios
       scripts/chaos.sh --only 2,9         just these
       scripts/chaos.sh --long --out docs/chaos/last-run.md   also write the table

Options go to tools chaos (target/release/tools chaos --help lists them and the scenarios: --only, --long, --out,
--retries, --overload 30s, --cut 70s, ...). Needs root (sudo is used otherwise). Exit status:
0 all passed, 1 a scenario failed, 2 the suite could not run.

Environment:
  SKIP_BUILD   1: use the existing release binaries
EOF_USAGE
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
  esac
  need_pkg ip iproute2
  need_pkg redis-server redis-server
  need_pkg prlimit util-linux
  need_pkg slowhttptest slowhttptest
  need_pkg redis-cli redis-tools
  need_pkg iptables iptables
  local bin tools
  bin=$(build_release)
  tools=$(build_tools)
  cd "$REPO_ROOT"
  as_root "$tools" chaos --repo "$REPO_ROOT" --api-bin "$bin" "$@"
}

main "$@"
