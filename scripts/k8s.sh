#!/usr/bin/env bash
# k8s.sh — runs redis-api on the cluster of kubectl's current context (see scripts/gke.sh): the
# Secret with generated Redis passwords (one per ACL user), the manifests of k8s/ with the images scripts/image.sh
# pushed, scaling, a local port-forward, and removal of all of it. Each command can be re-run.
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECRET_LABELS=(app=redis tier=cache app.kubernetes.io/name=redis app.kubernetes.io/component=auth
  app.kubernetes.io/part-of=redis-api)

usage() {
  cat <<EOF_USAGE
Usage: scripts/k8s.sh COMMAND [ARGS]

  secret [--replace]   create the Secret redis-auth (a generated password per Redis ACL user:
                       reader, writer, replication, admin; the ACL files of k8s/acl/), unless it exists;
                       --replace deletes and recreates it (new passwords: restart the master
                       and the API pods after, README "Security")
  acl master|replica DIR
                       print that ACL file as secret renders it, from the passwords in
                       DIR/password-read, -write, -replication, -admin (no cluster needed)
  tls-secret [--replace]
                       the Secrets k8s/components/tls/ mounts, made with openssl for clusters
                       without cert-manager: a new CA, the master's certificate (for the names
                       of NAMESPACE), the API pods' client certificate (TLS_DAYS, default 365)
  image REGISTRY TAG   build and push REGISTRY/redis-api:TAG (scripts/image.sh)
  deploy               secret, then apply k8s/ (kubectl apply -k) with the last pushed images
                       and its configuration checksums; waits for every workload's rollout
  render               print what deploy would apply (no cluster needed)
  scale N              keep at least N API pods (the autoscaler's minimum; scale 3 restores it)
  port-forward [PORT]  the Service redis-api on localhost:PORT (default 8080)
  bench wrk|vegeta service|pod [DURATION]
                       load from a one-shot pod in the cluster (deleted after): GET / through the
                       Service redis-api (spread over the ready pods, per connection), or at one
                       ready API pod's own address; DURATION default 30s. Refuses CONNECTIONS at or
                       above MAX_CONNECTIONS x the pods aimed at (README "Load from wrk or vegeta")
  teardown             delete all of it: the objects of k8s/, the Secret, Redis's data volume

Environment:
  NAMESPACE  namespace to use (default: the context's)
  K8S_DIR    deploy/render: the kustomization to deploy, relative to the repository (default
             k8s; overlays/tls turns TLS on, README "Security")
  REDIS_HASH, REDIS_FIELD
                  secret: the hash and field the API uses (default currency, current-value), for
                  the ACL users' key and channel; must match the API's --redis-hash/--redis-field
  IMAGE           the API's image for deploy (default: the last one image pushed, else
                  redis-api:0.1.0)
  LOADTEST_IMAGE  the kit's image (the updater) for deploy (default: the last one image
                  pushed, else redis-api-loadtest:0.1.0)
  CONNECTIONS     bench: connections at most (wrk -c; vegeta -max-workers, -connections and
                  -max-connections), default 64
  THREADS         bench wrk: threads (-t), default 2
  RATE            bench vegeta: requests per second (-rate), default 1000
  PRINT           bench: 1 prints the pod it would run instead (no cluster needed)
EOF_USAGE
}

# ACL_TEMPLATES: the ACL files of the Secret, rendered from k8s/acl/ (`render_acl`).
ACL_TEMPLATES=(master replica)

# render_acl TEMPLATE DIR: k8s/acl/TEMPLATE.acl.template as an ACL file, to stdout: comment and
# blank lines dropped (an aclfile allows neither), @HASH@ and @CHANNEL@ replaced by the key and
# channel of REDIS_HASH/REDIS_FIELD, each @<USER>_SHA256@ by the SHA-256 of DIR/password-<pool>.
# The same rendering as cluster/src/acl.rs (tested against each other there). Hashes pass in
# variables, never on a command line.
render_acl() {
  local hash=${REDIS_HASH:-currency} field=${REDIS_FIELD:-current-value} line user key sum
  # A glob character would widen the users' key and channel patterns (~pattern, &pattern).
  [[ $hash =~ ^[A-Za-z0-9._:-]+$ && $field =~ ^[A-Za-z0-9._:-]+$ ]] ||
    die "REDIS_HASH and REDIS_FIELD may hold only letters, digits and . _ : - (they become ACL patterns)"
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == '#'* || -z ${line//[[:space:]]/} ]] && continue
    line=${line//@HASH@/$hash}
    line=${line//@CHANNEL@/$hash:$field:changed}
    for user in writer replication reader admin; do
      [[ $line == *"@${user^^}_SHA256@"* ]] || continue
      key=${user/writer/write} && key=${key/reader/read}
      sum=$(sha256sum <"$2/password-$key") && sum=${sum%% *}
      line=${line//@${user^^}_SHA256@/$sum}
    done
    [[ $line != *@[A-Z]*@* ]] || die "k8s/acl/$1.acl.template: a placeholder left unreplaced: ${line%% #*}"
    printf '%s\n' "$line"
  done <"$REPO_ROOT/k8s/acl/$1.acl.template"
}

# secret [--replace]: the Secret redis-auth. The passwords go to mode-600 files and are read from
# them, never on a command line. `create`, not `apply`: apply would copy the whole object,
# passwords included, into the last-applied-configuration annotation, readable by anyone who can
# read the Secret's metadata. A Secret of the old layout (one password for everything, key
# auth.conf) is not kept: the manifests need the ACL users' keys.
# shellcheck disable=SC2120 # deploy calls it without --replace
secret() {
  local replace=0 found keys
  case ${1:-} in
    --replace) replace=1 ;;
    "") ;;
    *) die "usage: scripts/k8s.sh secret [--replace]" ;;
  esac
  found=$(kc get secret redis-auth --ignore-not-found -o name) || die "cannot read Secrets in the cluster"
  if [[ -n $found && $replace == 0 ]]; then
    # shellcheck disable=SC2016 # a Go template, not shell
    keys=$(kc get secret redis-auth -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}')
    if grep -qx master.acl <<<"$keys"; then
      log "Secret redis-auth exists: keeping its passwords"
      return 0
    fi
    die "Secret redis-auth has the old layout (one password for every client, key auth.conf);" \
      "the manifests now use one ACL user per role. Replace it: scripts/k8s.sh secret --replace," \
      "then scripts/k8s.sh deploy (the master and the API pods restart with the new passwords;" \
      "writes fail until they have). README \"Security\"."
  fi
  need_cmd openssl "install openssl (it generates the passwords)"
  [[ -n $WORK_DIR ]] || make_work_dir
  local dir=$WORK_DIR/redis-auth key
  (
    umask 077
    mkdir "$dir"
    for key in read write replication admin; do openssl rand -hex 24 | tr -d '\n' >"$dir/password-$key"; done
    for key in "${ACL_TEMPLATES[@]}"; do render_acl "$key" "$dir" >"$dir/$key.acl"; done
    { printf 'masteruser replication\nmasterauth ' && cat "$dir/password-replication" && echo; } >"$dir/replica-auth.conf"
  )
  if [[ -n $found ]]; then
    kc delete secret redis-auth
  fi
  # cluster/tests/manifests.rs checks every key a manifest names against these --from-file=KEY=.
  kc create secret generic redis-auth --from-file=password-read="$dir/password-read" \
    --from-file=password-write="$dir/password-write" --from-file=password-replication="$dir/password-replication" \
    --from-file=password-admin="$dir/password-admin" \
    --from-file=master.acl="$dir/master.acl" --from-file=replica.acl="$dir/replica.acl" \
    --from-file=replica-auth.conf="$dir/replica-auth.conf" --dry-run=client -o yaml |
    kubectl label --local -f - -o yaml "${SECRET_LABELS[@]}" | kc create -f -
  if [[ -n $found ]]; then
    log "Secret redis-auth replaced: new passwords. Restart what read the old ones:"
    log "  kubectl rollout restart statefulset/redis-master deployment/redis-api (or scripts/k8s.sh deploy)"
  fi
}

# TLS_DAYS: how long tls-secret's certificates last (the CA ten times as long).
TLS_DAYS=${TLS_DAYS:-365}

# tls_cert NAME CN EXT: a P-256 key and a certificate for CN signed by the CA in DIR (WORK_DIR's
# tls/), with the X.509 extensions EXT (the file's lines).
tls_cert() {
  local dir=$WORK_DIR/tls
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$dir/$1.key" -out "$dir/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days "$TLS_DAYS" -extfile "$dir/$1.ext" -out "$dir/$1.crt" 2>/dev/null
}

# tls_secret: without cert-manager, the Secrets k8s/components/tls/ mounts, in the shape
# cert-manager writes (tls.crt, tls.key, ca.crt): redis-master-tls (the master's certificate,
# for redis-master and its names in NAMESPACE, also for client auth: its probes present it) and
# redis-client-tls (the API pods'), both of a new CA whose key is thrown away (renewing means
# running this again with --replace, then restarting the master and the API pods).
tls_secret() {
  local replace=0 ns found name
  case ${1:-} in
    --replace) replace=1 ;;
    "") ;;
    *) die "usage: scripts/k8s.sh tls-secret [--replace]" ;;
  esac
  need_cmd openssl "install openssl (it makes the certificates)"
  ns=${NAMESPACE:-$(kubectl config view --minify -o jsonpath='{..namespace}')}
  ns=${ns:-default}
  found=$(kc get secret redis-master-tls redis-client-tls --ignore-not-found -o name) ||
    die "cannot read Secrets in the cluster"
  if [[ -n $found && $replace == 0 ]]; then
    log "TLS Secrets exist, kept: $(tr '\n' ' ' <<<"$found")(tls-secret --replace makes new ones)"
    return 0
  fi
  [[ -n $WORK_DIR ]] || make_work_dir
  (
    umask 077
    mkdir "$WORK_DIR/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=redis-api-redis-ca" \
      -days $((TLS_DAYS * 10)) -keyout "$WORK_DIR/tls/ca.key" -out "$WORK_DIR/tls/ca.crt" 2>/dev/null
    tls_cert master redis-master "subjectAltName=DNS:redis-master,DNS:redis-master.$ns.svc,DNS:redis-master.$ns.svc.cluster.local
extendedKeyUsage=serverAuth,clientAuth
keyUsage=critical,digitalSignature"
    tls_cert client redis-api "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
  )
  for name in master client; do
    if [[ -n $found ]]; then kc delete secret "redis-$name-tls" --ignore-not-found; fi
    kc create secret generic "redis-$name-tls" --from-file=tls.crt="$WORK_DIR/tls/$name.crt" \
      --from-file=tls.key="$WORK_DIR/tls/$name.key" --from-file=ca.crt="$WORK_DIR/tls/ca.crt" \
      --type=kubernetes.io/tls --dry-run=client -o yaml |
      kubectl label --local -f - -o yaml "${SECRET_LABELS[@]}" | kc create -f -
  done
  log "TLS Secrets made for namespace $ns, valid $TLS_DAYS days (the CA's key is not kept)"
  [[ -z $found ]] || log "restart the master and the API pods: kubectl rollout restart statefulset/redis-master deployment/redis-api"
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
    printf 'resources:\n  - %s\nimages:\n' "$(realpath --relative-to="$WORK_DIR" "$REPO_ROOT/${K8S_DIR:-k8s}")"
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
  # shellcheck disable=SC2119 # never --replace here
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

# The images of bench's one-shot pods, pinned: Debian's wrk (apt-get at start: the pod needs a way
# out to deb.debian.org), and vegeta built by `go install` at start (the module proxy and the Go
# checksum database check what it fetches). Both run as root, for apt-get and the Go cache: a
# throwaway client, not part of the deployment.
BENCH_DEBIAN=debian:bookworm-20251229-slim
BENCH_GO=golang:1.24-bookworm
VEGETA_VERSION=v12.13.0
# The API's --max-connections default (README "Connections"), when its Deployment sets none.
MAX_CONNECTIONS_DEFAULT=1024

# bench_target service|pod: prints "URL PODS": where bench aims and how many API pods share its
# connections (every ready pod behind the Service; one for a pod's own address).
bench_target() {
  local ready
  if [[ ${PRINT:-0} == 1 ]]; then
    [[ $1 == service ]] && echo "http://redis-api:8080/ 3" || echo "http://POD_IP:8080/ 1"
    return 0
  fi
  ready=$(kc get pods -l app=redis-api,role=api \
    -o jsonpath='{range .items[*]}{.status.podIP} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    awk '$2 == "True" { print $1 }')
  [[ -n $ready ]] || die "no ready redis-api pod (scripts/k8s.sh deploy first)"
  if [[ $1 == service ]]; then
    echo "http://redis-api:8080/ $(wc -l <<<"$ready")"
  else
    echo "http://$(head -n 1 <<<"$ready"):8080/ 1"
  fi
}

# bench TOOL TARGET [DURATION]: runs wrk or vegeta in a pod of its own next to the Service (a
# port-forward would pin one pod and measure the tunnel), prints its report and deletes the pod.
bench() {
  (($# >= 2 && $# <= 3)) || die "usage: scripts/k8s.sh bench wrk|vegeta service|pod [DURATION]"
  local tool=$1 target=$2 duration=${3:-30s} conns=${CONNECTIONS:-64} url pods cap script image
  [[ $tool == wrk || $tool == vegeta ]] || die "bench runs wrk or vegeta, not '$tool'"
  [[ $target == service || $target == pod ]] || die "bench aims at the service or a pod, not '$target'"
  [[ $duration =~ ^[1-9][0-9]*[smh]$ ]] || die "DURATION must be like 30s, 5m or 1h, not '$duration'"
  [[ $conns =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive whole number, not '$conns'"
  read -r url pods <<<"$(bench_target "$target")"
  cap=$MAX_CONNECTIONS_DEFAULT
  if [[ ${PRINT:-0} != 1 ]]; then
    cap=$(kc get deployment redis-api -o jsonpath='{.spec.template.spec.containers[?(@.name=="redis-api")].env[?(@.name=="MAX_CONNECTIONS")].value}')
    cap=${cap:-$MAX_CONNECTIONS_DEFAULT}
  fi
  # At the cap a new connection displaces an idle one, or waits and gets 503 when every worker is
  # busy: past it the tool measures the queue, not the API. The Service spreads connections at
  # random, so one pod can get well over its share: keep below half of the total.
  ((conns < cap * pods)) || die "CONNECTIONS=$conns is at or above the cap of $pods pod(s) x $cap connections"
  ((conns * 2 <= cap * pods)) || log "warning: CONNECTIONS=$conns is over half of $pods pod(s) x $cap: some pods may reach their cap"
  if [[ $tool == wrk ]]; then
    image=$BENCH_DEBIAN
    script="apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null &&
exec wrk -t ${THREADS:-2} -c $conns -d $duration --latency $url"
  else
    image=$BENCH_GO
    [[ ${RATE:-1000} =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive whole number, not '${RATE:-}'"
    script="go install github.com/tsenart/vegeta/v12@$VEGETA_VERSION &&
echo 'GET $url' | vegeta attack -rate ${RATE:-1000} -duration $duration -timeout 2s \\
  -max-workers $conns -connections $conns -max-connections $conns | vegeta report"
  fi
  local name=bench-$tool-$$
  if [[ ${PRINT:-0} == 1 ]]; then bench_pod "$name" "$image" "$script"; return 0; fi
  log "$tool against $url ($pods pod(s)), $conns connections, for $duration"
  bench_pod "$name" "$image" "$script" | kc create -f - >/dev/null
  # shellcheck disable=SC2064 # the name is fixed now
  trap "kc delete pod $name --ignore-not-found --wait=false >/dev/null" EXIT
  trap 'exit 130' INT && trap 'exit 143' TERM
  # Up to 5 minutes to pull the image and start (it may also have finished, or failed, by then).
  local phase="" deadline=$((SECONDS + 300)) code
  until [[ $phase == Running || $phase == Succeeded || $phase == Failed ]]; do
    ((SECONDS < deadline)) || die "pod $name did not start in 5 minutes (phase ${phase:-unknown}): kubectl describe pod $name"
    sleep 2
    phase=$(kc get "pod/$name" -o jsonpath='{.status.phase}')
  done
  kc logs -f "pod/$name"
  # The log ends when the container does; its status may lag by a moment.
  for ((deadline = SECONDS + 30; SECONDS < deadline; )); do
    code=$(kc get "pod/$name" -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')
    [[ -z $code ]] || break
    sleep 1
  done
  [[ $code == 0 ]] || die "$tool exited with status ${code:-unknown}"
}

# bench_pod NAME IMAGE SCRIPT: the one-shot client pod, as YAML. A CPU request, so the client gets
# its share of a node; 1 GiB, for `go install` building vegeta; no service account token; it never
# restarts.
bench_pod() {
  # The script as a YAML block: every line indented under `- |`.
  local indent='            ' script
  script=$indent${3//$'\n'/$'\n'$indent}
  cat <<EOF_POD
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {app: bench, role: bench}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  containers:
    - name: bench
      image: $2
      command:
        - sh
        - -c
        - |
$script
      resources:
        requests: {cpu: "1", memory: 1Gi}
        limits: {memory: 1Gi}
EOF_POD
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
    bench) if [[ ${PRINT:-0} == 1 ]]; then shift; bench "$@"; return 0; fi ;;
    acl) shift; (($# == 2)) || die "usage: scripts/k8s.sh acl master|replica DIR"; render_acl "$@"; return 0 ;;
    render) need_cmd kubectl "install it, e.g. gcloud components install kubectl"; render; return 0 ;;
  esac
  need_cmd kubectl "install it, e.g. gcloud components install kubectl"
  kubectl config current-context >/dev/null 2>&1 || die "kubectl has no current context: scripts/gke.sh up"
  local cmd=$1
  shift
  case $cmd in
    secret | deploy | scale | teardown | bench) "$cmd" "$@" ;;
    tls-secret) tls_secret "$@" ;;
    port-forward) port_forward "$@" ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
