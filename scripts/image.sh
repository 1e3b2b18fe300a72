#!/usr/bin/env bash
# image.sh — builds both container images (the API's, Dockerfile; the load-test kit's,
# loadtest/Dockerfile) for linux/amd64, pushes them to a registry and remembers them for
# scripts/k8s.sh deploy and loadtest; when the API, the updater or the kit are deployed already, rolls
# them out at once. Needs a Docker daemon (or CONTAINER_ENGINE=podman) logged in to the registry
# (for Artifact Registry: `gcloud auth configure-docker REGION-docker.pkg.dev`).
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/image.sh REGISTRY TAG     (also: scripts/k8s.sh image REGISTRY TAG)

Builds and pushes REGISTRY/redis-api:TAG and REGISTRY/redis-api-loadtest:TAG for linux/amd64
(GKE's nodes; an ARM laptop would otherwise push ARM images), e.g.
  scripts/image.sh europe-west1-docker.pkg.dev/PROJECT/REPOSITORY 0.1.0
then records both in .k8s-image for scripts/k8s.sh deploy and loadtest, and runs kubectl set image on the
Deployments redis-api, updater and the kit's (loadgen, aggregator, hello-world) where they
exist.

Environment:
  NAMESPACE         namespace of the Deployments (default: the context's)
  CONTAINER_ENGINE  docker (default) or podman
  RUST_IMAGE, RUNTIME_IMAGE  the Dockerfiles' base images (default: theirs, the upstream ones)
EOF_USAGE
}

# roll DEPLOYMENT CONTAINER REF: sets the image of a Deployment that exists, waits for it.
roll() {
  [[ -n $(kc get deployment "$1" --ignore-not-found -o name 2>/dev/null) ]] || return 0
  log "rolling $3 out to the Deployment $1"
  kc set image "deployment/$1" "$2=$3"
  kc rollout status "deployment/$1" --timeout=10m
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; esac
  (($# == 2)) || { usage >&2; die "REGISTRY and TAG are needed"; }
  [[ $2 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: '$2'"
  local engine=${CONTAINER_ENGINE:-docker} api=${1%/}/redis-api:$2 kit=${1%/}/redis-api-loadtest:$2 args=()
  need_cmd "$engine" "install Docker (a daemon is needed to build and push) or set CONTAINER_ENGINE=podman"
  "$engine" info >/dev/null 2>&1 || die "$engine is not usable ($engine info failed)"
  [[ -z ${RUST_IMAGE:-} ]] || args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
  [[ -z ${RUNTIME_IMAGE:-} ]] || args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
  log "building $api and $kit for linux/amd64"
  "$engine" build --platform linux/amd64 "${args[@]}" -t "$api" "$REPO_ROOT"
  # BuildKit finds loadtest/Dockerfile.dockerignore by itself; podman is told.
  [[ $engine != podman ]] || args+=(--ignorefile "$REPO_ROOT/loadtest/Dockerfile.dockerignore")
  "$engine" build --platform linux/amd64 "${args[@]}" -t "$kit" -f "$REPO_ROOT/loadtest/Dockerfile" "$REPO_ROOT"
  "$engine" push "$api"
  "$engine" push "$kit"
  printf '%s\n' "$api" "$kit" >"$K8S_IMAGE_FILE"
  log "pushed $api and $kit; scripts/k8s.sh deploy will use them"
  if command -v kubectl >/dev/null 2>&1 && kubectl config current-context >/dev/null 2>&1; then
    roll redis-api redis-api "$api"
    local kit_deployment
    for kit_deployment in updater loadgen aggregator hello-world; do
      roll "$kit_deployment" "$kit_deployment" "$kit"
    done
  fi
}

main "$@"
