#!/usr/bin/env bash
# gke.sh — the GKE cluster redis-api runs on: picks the Google Cloud project, creates the cluster
# when it does not exist yet (and points kubectl at it), deletes it when it exists. Each command
# can be run again safely. Needs gcloud, logged in (`gcloud auth login`).
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER=${CLUSTER:-redis-api}
ZONE=${ZONE:-europe-west1-b}
RELEASE_CHANNEL=${RELEASE_CHANNEL:-regular}

usage() {
  cat <<EOF_USAGE
Usage: scripts/gke.sh project ID
       scripts/gke.sh up NODES MACHINE_TYPE     e.g. scripts/gke.sh up 3 e2-standard-4
       scripts/gke.sh down

  project ID   make ID gcloud's default project (the other commands use it)
  up           create cluster \$CLUSTER in \$ZONE with NODES nodes of MACHINE_TYPE, unless it
               exists; then fetch its credentials for kubectl. Dataplane V2 enforces the
               NetworkPolicy; the release channel brings Kubernetes >= 1.32 (native sidecars).
  down         delete the cluster, if it exists. Run scripts/k8s.sh teardown first: GKE does
               not always delete the disks of volume claims (Redis's data) with a cluster.

Environment:
  CLUSTER          cluster name (default redis-api)
  ZONE             compute zone (default europe-west1-b)
  RELEASE_CHANNEL  GKE release channel for up (default regular)
EOF_USAGE
}

# need_project: dies unless gcloud has an account and a default project.
need_project() {
  [[ -n $(gcloud config get-value account 2>/dev/null) ]] || die "gcloud is not logged in: gcloud auth login"
  [[ -n $(gcloud config get-value project 2>/dev/null) ]] || die "no gcloud project: scripts/gke.sh project ID"
}

# cluster_exists: true when the cluster is there. Any other failure (rights, network) is fatal, so
# that `down` never reports "nothing to delete" by mistake.
cluster_exists() {
  local out
  out=$(gcloud container clusters list --zone "$ZONE" --filter "name=$CLUSTER" --format 'value(name)') ||
    die "cannot list the clusters in $ZONE"
  [[ -n $out ]]
}

up() {
  (($# == 2)) || { usage >&2; die "up needs NODES and MACHINE_TYPE"; }
  local nodes=$1 machine=$2
  [[ $nodes =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive whole number, not '$nodes'"
  if cluster_exists; then
    log "cluster $CLUSTER exists in $ZONE: keeping it (nodes and machine type unchanged)"
  else
    log "creating cluster $CLUSTER in $ZONE: $nodes x $machine (takes a few minutes)"
    gcloud services enable container.googleapis.com
    gcloud container clusters create "$CLUSTER" --zone "$ZONE" --num-nodes "$nodes" \
      --machine-type "$machine" --release-channel "$RELEASE_CHANNEL" --enable-dataplane-v2
  fi
  gcloud container clusters get-credentials "$CLUSTER" --zone "$ZONE"
  log "kubectl now talks to $CLUSTER; next: scripts/k8s.sh image REGISTRY TAG, scripts/k8s.sh deploy"
}

down() {
  if cluster_exists; then
    log "deleting cluster $CLUSTER in $ZONE"
    gcloud container clusters delete "$CLUSTER" --zone "$ZONE" --quiet
  else
    log "no cluster $CLUSTER in $ZONE: nothing to delete"
  fi
}

main() {
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    "") usage >&2; die "a command is needed" ;;
  esac
  need_cmd gcloud "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  local cmd=$1
  shift
  case $cmd in
    project)
      (($# == 1)) || { usage >&2; die "project needs an ID"; }
      gcloud config set project "$1"
      ;;
    up) need_project; up "$@" ;;
    down) need_project; down ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
