#!/usr/bin/env bash
# scale-experiment.sh — does a read replica in every pod scale reads where the one master does
# not? Runs the Rust binary `tools scale run` (cluster/src/scale.rs) as root: for N = 1..6 local
# pods (network namespaces, from k8s/), each mode (naive: the APIs read the master; sidekick:
# each reads its own replica), with the master and every replica at the same CPU quota, it
# finds the highest GET rate sustained; then the master's cost per write against N. Writes
# scaling.{json,png} and scaling-tables.md to results/scaling/<UTC time>/ (git-ignored), or to
# --out DIR (--out docs/scaling replaces the committed results). About 10-15 minutes on two cores.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/scale-experiment.sh [OPTIONS]     the full sweep (results in results/scaling/<UTC time>/)
       scripts/scale-experiment.sh --pods 1,2 --write-pods none --trial 2s   a short look
       scripts/scale-experiment.sh --out docs/scaling    the sweep, replacing the committed results

Options go to tools scale run (target/release/tools scale run --help lists them all:
--pods, --modes, --cpu-quota, --trial, --p99, --connections, --write-pods, --out, ...).
Needs root (sudo is used otherwise). The sweep measures the machine: run it alone; a trial
during which other processes used the CPU is re-run.

Environment:
  SKIP_BUILD   1: use the existing release binaries (an error when they are missing)
EOF_USAGE
}

# check_quiet: warns when the machine is busy before the sweep starts.
check_quiet() {
  local load
  read -r load _ </proc/loadavg
  if awk -v l="$load" 'BEGIN { exit !(l > 1.0) }'; then
    log "warning: load average $load: other work is running, results will be noisier"
  fi
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
  esac
  need_pkg ip iproute2
  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  need_file /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
  local bin tools
  bin=$(build_release)
  tools=$(build_tools)
  check_quiet
  cd "$REPO_ROOT"
  as_root "$tools" scale run --repo "$REPO_ROOT" --api-bin "$bin" "$@"
}

main "$@"
