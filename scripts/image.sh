#!/usr/bin/env bash
# image.sh — builds the container image (the Dockerfile at the root), pushes it to a registry and
# remembers it for scripts/k8s.sh deploy; when redis-api is deployed already, rolls it out at
# once. Needs a Docker daemon logged in to the registry (for Artifact Registry:
# `gcloud auth configure-docker REGION-docker.pkg.dev`).
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF_USAGE
Usage: scripts/image.sh REGISTRY TAG     (also: scripts/k8s.sh image REGISTRY TAG)

Builds and pushes REGISTRY/redis-api:TAG, e.g.
  scripts/image.sh europe-west1-docker.pkg.dev/PROJECT/REPOSITORY 0.1.0
then records it in .k8s-image for scripts/k8s.sh deploy, and runs
kubectl set image on the Deployment redis-api if it exists.

Environment:
  NAMESPACE  namespace of the Deployment (default: the context's)
EOF_USAGE
}

main() {
  case ${1:-} in -h | --help) usage; return 0 ;; esac
  (($# == 2)) || { usage >&2; die "REGISTRY and TAG are needed"; }
  [[ $2 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: '$2'"
  need_cmd docker "install Docker (a daemon is needed to build and push)"
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"
  local ref=${1%/}/redis-api:$2
  log "building $ref"
  docker build -t "$ref" "$REPO_ROOT"
  docker push "$ref"
  printf '%s\n' "$ref" >"$K8S_IMAGE_FILE"
  log "pushed $ref; scripts/k8s.sh deploy will use it"
  if command -v kubectl >/dev/null 2>&1 && kubectl config current-context >/dev/null 2>&1 &&
    [[ -n $(kc get deployment redis-api --ignore-not-found -o name 2>/dev/null) ]]; then
    log "rolling it out to the Deployment redis-api"
    kc set image deployment/redis-api "redis-api=$ref"
    kc rollout status deployment/redis-api --timeout=10m
  fi
}

main "$@"
