#!/usr/bin/env bash
# k8s.sh — runs redis-api on the cluster of kubectl's current context (see scripts/gke.sh): the
# Secret with a generated Redis password, the manifests of k8s/ with the images scripts/image.sh
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
  deploy               secret, then apply k8s/ (kubectl apply -k) with the last pushed images
                       and its configuration checksums; waits for every workload's rollout
  render               print what deploy would apply (no cluster needed)
  scale N              keep at least N API pods (the autoscaler's minimum; scale 3 restores it)
  port-forward [PORT]  the Service redis-api on localhost:PORT (default 8080)
  teardown             delete all of it: the objects of k8s/, the Secret, Redis's data volume

Environment:
  NAMESPACE  namespace to use (default: the context's)
  IMAGE           the API's image for deploy (default: the last one image pushed, else
                  redis-api:0.1.0)
  LOADTEST_IMAGE  the kit's image (the updater) for deploy (default: the last one image
                  pushed, else redis-api-loadtest:0.1.0)
EOF_USAGE
}

# secret: the password goes to mode-600 files and is read from them, never on a command line.
# `create`, not `apply`: apply would copy the whole object, password included, into the
# last-applied-configuration annotation, readable by anyone who can read the Secret's metadata.
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
    --dry-run=client -o yaml | kubectl label --local -f - -o yaml "${SECRET_LABELS[@]}" | kc create -f -
}

# image_override NAME REF: a kustomize `images` entry setting image NAME to REF (NAME:TAG).
image_override() {
  [[ $2 =~ ^([^:]+(:[0-9]+/[^:]+)?):([^:/]+)$ ]] || die "an image must be NAME:TAG, not '$2'"
  printf '  - name: %s\n    newName: "%s"\n    newTag: "%s"\n' "$1" "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]}"
}

# config_patches: for each workload of k8s/ that mounts ConfigMaps of k8s/, a patch putting their
# checksum on its pod template, so a changed configuration rolls its pods (and only theirs).
config_patches() {
  local file kind name maps sum
  for file in "$REPO_ROOT"/k8s/*-deployment.yaml "$REPO_ROOT"/k8s/*-statefulset.yaml; do
    maps=$(grep -A1 '^ *configMap:$' "$file" | sed -n 's/^ *name: *//p' | while read -r map; do
      grep -l "^  name: $map\$" "$REPO_ROOT"/k8s/*-configmap.yaml; done)
    [[ -n $maps ]] || continue
    kind=$(sed -n 's/^kind: //p' "$file") && name=$(sed -n '0,/^  name: /s/^  name: //p' "$file")
    # shellcheck disable=SC2086 # one file name per line, none with spaces
    sum=$(cat $maps | sha256sum | cut -c1-16)
    printf '  - patch: |\n      apiVersion: apps/v1\n      kind: %s\n      metadata: {name: %s}\n' "$kind" "$name"
    printf '      spec: {template: {metadata: {annotations: {redis-api/config-checksum: "%s"}}}}\n' "$sum"
  done
}

# overlay: writes WORK_DIR/kustomization.yaml (WORK_DIR made first when needed): k8s/ with the
# images (IMAGE and LOADTEST_IMAGE, else the ones scripts/image.sh pushed last) and the
# configuration checksums.
overlay() {
  local image=${IMAGE:-} loadtest=${LOADTEST_IMAGE:-}
  if [[ -f $K8S_IMAGE_FILE ]]; then
    [[ -n $image ]] || image=$(sed -n 1p "$K8S_IMAGE_FILE")
    [[ -n $loadtest ]] || loadtest=$(sed -n 2p "$K8S_IMAGE_FILE")
  fi
  [[ -n $image && -n $loadtest ]] || log "no images pushed yet (scripts/k8s.sh image): k8s/'s own names are used"
  [[ -n $WORK_DIR ]] || make_work_dir
  # kustomize wants the base as a relative path.
  {
    printf 'resources:\n  - %s\nimages:\n' "$(realpath --relative-to="$WORK_DIR" "$REPO_ROOT/k8s")"
    image_override redis-api "${image:-redis-api:0.1.0}"
    image_override redis-api-loadtest "${loadtest:-redis-api-loadtest:0.1.0}"
    printf 'patches:\n'
    config_patches
  } >"$WORK_DIR/kustomization.yaml"
}

# render: what deploy applies, to stdout; needs no cluster.
render() { overlay && kubectl kustomize "$WORK_DIR"; }

# deploy: the Secret, then k8s/ through the overlay; waits for every workload it applied.
deploy() {
  local minor workloads workload
  minor=$(kubectl get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')
  ((${minor:-0} >= 32)) || die "the cluster runs Kubernetes 1.${minor:-?}; k8s/ needs 1.32 or later"
  secret
  overlay
  log "deploying: $(grep -A2 '^  - name:' "$WORK_DIR/kustomization.yaml" | tr -s ' \n' ' ')"
  workloads=$(kc apply -k "$WORK_DIR" -o name | grep -E '^(deployment|statefulset)\.apps/') ||
    die "kubectl apply -k applied no workload"
  for workload in $workloads; do kc rollout status "$workload" --timeout=10m; done
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
    render) need_cmd kubectl "install it, e.g. gcloud components install kubectl"; render; return 0 ;;
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
