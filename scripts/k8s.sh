#!/usr/bin/env bash
# k8s.sh — runs redis-api on the cluster of kubectl's current context (see scripts/gke.sh): the
# Secret with a generated Redis password, the manifests of k8s/ with the image scripts/image.sh
# pushed, scaling, a local port-forward, and removal of all of it. Each command can be re-run.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECRET_LABELS=(app=redis tier=cache app.kubernetes.io/name=redis app.kubernetes.io/component=auth
  app.kubernetes.io/part-of=redis-api)

usage() {
  cat <<EOF_USAGE
Usage: scripts/k8s.sh COMMAND [ARGS]

  secret               create the Secret redis-auth with a generated password, unless it exists
  image REGISTRY TAG   build and push REGISTRY/redis-api:TAG (scripts/image.sh)
  deploy               secret, then apply k8s/ (kubectl apply -k) with the last pushed image;
                       waits for the rollout
  scale N              keep at least N API pods (the autoscaler's minimum; scale 3 restores it)
  port-forward [PORT]  the Service redis-api on localhost:PORT (default 8080)
  teardown             delete all of it: the objects of k8s/, the Secret, Redis's data volume

Environment:
  NAMESPACE  namespace to use (default: the context's)
  IMAGE      image for deploy (default: the last one image pushed, else redis-api:0.1.0)
EOF_USAGE
}

# secret: the password goes to mode-600 files and is read from them, never on a command line.
secret() {
  local found
  found=$(kc get secret redis-auth --ignore-not-found -o name) || die "cannot read Secrets in the cluster"
  [[ -z $found ]] || { log "Secret redis-auth exists: keeping its password"; return 0; }
  need_cmd openssl "install openssl (it generates the password)"
  [[ -n $WORK_DIR ]] || make_work_dir
  local pw=$WORK_DIR/password conf=$WORK_DIR/auth.conf
  (
    umask 077
    openssl rand -hex 24 | tr -d '\n' >"$pw"
    { printf 'requirepass ' && cat "$pw" && printf '\nmasterauth ' && cat "$pw" && echo; } >"$conf"
  )
  kc create secret generic redis-auth --from-file=password="$pw" --from-file=auth.conf="$conf" \
    --dry-run=client -o yaml | kubectl label --local -f - -o yaml "${SECRET_LABELS[@]}" | kc apply -f -
}

deploy() {
  local minor image=${IMAGE:-}
  minor=$(kubectl get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')
  ((${minor:-0} >= 32)) || die "the cluster runs Kubernetes 1.${minor:-?}; k8s/ needs 1.32 or later"
  secret
  [[ -n $image || ! -f $K8S_IMAGE_FILE ]] || image=$(<"$K8S_IMAGE_FILE")
  if [[ -z $image ]]; then
    log "no image pushed yet (scripts/k8s.sh image): using redis-api:0.1.0, as in k8s/"
    kc apply -k "$REPO_ROOT/k8s"
  else
    [[ $image =~ ^([^:]+(:[0-9]+/[^:]+)?):([^:/]+)$ ]] || die "IMAGE must be NAME:TAG, not '$image'"
    log "deploying with image $image"
    # A throwaway overlay of k8s/ that sets the image (kustomize wants a relative path).
    [[ -n $WORK_DIR ]] || make_work_dir
    printf 'resources:\n  - %s\nimages:\n  - name: redis-api\n    newName: %s\n    newTag: %s\n' \
      "$(realpath --relative-to="$WORK_DIR" "$REPO_ROOT/k8s")" "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]}" \
      >"$WORK_DIR/kustomization.yaml"
    kc apply -k "$WORK_DIR"
  fi
  kc rollout status statefulset/redis-master --timeout=10m
  kc rollout status deployment/redis-api --timeout=10m
}

scale() {
  [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/k8s.sh scale N (N >= 1)"
  local max
  max=$(kc get hpa redis-api -o jsonpath='{.spec.maxReplicas}')
  kc patch hpa redis-api --type merge -p "{\"spec\":{\"minReplicas\":$1,\"maxReplicas\":$((max > $1 ? max : $1))}}"
  kc scale deployment/redis-api --replicas "$1"
  kc rollout status deployment/redis-api --timeout=10m
}

port_forward() {
  local port=${1:-8080}
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
  log "redis-api on http://localhost:$port (Ctrl-C stops)"
  exec kubectl ${NAMESPACE:+--namespace "$NAMESPACE"} port-forward service/redis-api "$port:8080"
}

teardown() {
  kc delete -k "$REPO_ROOT/k8s" --ignore-not-found --wait
  kc delete secret redis-auth --ignore-not-found
  # A StatefulSet leaves its volume claims behind: the master's data goes only here.
  kc delete pvc -l app=redis,role=master --ignore-not-found
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    "") usage >&2; die "a command is needed" ;;
    image) shift; exec "$REPO_ROOT/scripts/image.sh" "$@" ;;
  esac
  need_cmd kubectl "install it, e.g. gcloud components install kubectl"
  kubectl config current-context >/dev/null 2>&1 || die "kubectl has no current context: scripts/gke.sh up"
  local cmd=$1
  shift
  case $cmd in
    secret | deploy | scale | teardown) "$cmd" "$@" ;;
    port-forward) port_forward "$@" ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
