#!/usr/bin/env bash
# test.sh — runs all tests, in order, stopping at the first failure: formatting, clippy, the
# Rust tests (unit and integration; the integration tests start real redis-server processes),
# the ignored ones included (plain `cargo test` skips those that need root, Chromium, wrk, Go
# or minutes; each says what it needs),
# the offline checks of the Dockerfile and k8s/ (scripts/check-manifests.sh), shellcheck, and both
# container images built and run with podman (scripts/image-test.sh; skipped only where no
# container engine can be installed). Installs what is missing first. CI runs it via .ci/run.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/test.sh [-h] [-- CARGO_TEST_ARGS...]

Steps: cargo fmt --all --check; cargo clippy --workspace --all-targets --locked -- -D warnings;
cargo test --workspace --locked [CARGO_TEST_ARGS...] -- --include-ignored (the tests that
plain "cargo test" skips: root, Chromium, wrk, Go, minutes); scripts/check-manifests.sh;
shellcheck scripts/*.sh .ci/run run.sh; scripts/image-test.sh (both images, with podman).
Installs redis-server, redis-tools, shellcheck (apt) and Rust (rustup) when missing.
EOF_USAGE
}

# install_tools: everything the steps need, on a fresh Debian/Ubuntu machine too.
install_tools() {
  need_pkg redis-server redis-server
  need_pkg redis-cli redis-tools
  need_pkg shellcheck shellcheck
  need_pkg ip iproute2
  need_pkg prlimit util-linux
  need_pkg wrk wrk
  need_pkg slowhttptest slowhttptest
  need_pkg iptables iptables
  # tests/go_client.rs: Go's net/http is the client that reports a server writing first.
  need_pkg go golang-go
  need_pkg chromium chromium
  need_pkg chromedriver chromium-driver
  # The scaling experiment's chart (cluster/src/chart.rs) draws its text with this font.
  need_file /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
  need_rust
  # A minimal rustup profile has neither rustfmt nor clippy.
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "cargo fmt/clippy missing and no rustup to add them"
    log "adding the rustfmt and clippy components"
    rustup component add rustfmt clippy >&2
  fi
}

# step NAME CMD...: runs one step and says how long it took; a failure ends the run with a
# message naming the step and its time.
step() {
  local name=$1 started=$SECONDS status=0
  shift
  log "==> $name"
  "$@" || status=$?
  if ((status != 0)); then
    die "step failed: $name (exit status $status, after $((SECONDS - started)) s)"
  fi
  log "<== $name: $((SECONDS - started)) s"
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    --) shift ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  cd "$REPO_ROOT"
  # Every tier: the harness flag goes after the caller's `--`, or after one of its own.
  local arg harness=(-- --include-ignored)
  for arg in "$@"; do [[ $arg == -- ]] && harness=(--include-ignored); done
  install_tools
  step "cargo fmt --check" cargo fmt --all --check
  step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
  step "cargo test" cargo test --workspace --locked "$@" "${harness[@]}"
  step "manifests" scripts/check-manifests.sh
  step "shellcheck" shellcheck scripts/*.sh .ci/run run.sh
  step "container images" scripts/image-test.sh
  log "all steps passed in $SECONDS s"
}

main "$@"
