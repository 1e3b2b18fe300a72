#!/usr/bin/env bash
# gke.sh — the Google Cloud side of redis-api: picks the project; creates the GKE cluster with node
# autoscaling when it does not exist yet (and points kubectl at it), or sets the autoscaling bounds
# of the one that does; creates the Artifact Registry repository the images go to and docker's
# credential helper for it; deletes the cluster. Each command can be run again safely. Needs
# gcloud, logged in (`gcloud auth login`). The node bounds are sized in README "Sizing".
set -o errexit -o nounset -o pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER=${CLUSTER:-redis-api}
ZONE=${ZONE:-europe-west1-b}
# The zone's region (europe-west1-b -> europe-west1): the repository lives next to the nodes.
REGION=${REGION:-${ZONE%-*}}
REPOSITORY=${REPOSITORY:-redis-api}
RELEASE_CHANNEL=${RELEASE_CHANNEL:-regular}
# Default node bounds and machine: 3 nodes at rest (one API pod each, so losing a node loses one
# replica), 10 at most: `scale 20` with the load-test kit and a rollout's surge fits in 8 (README
# "Sizing"); the last 2 are slack for system pods that request more than assumed.
MIN_NODES=3
MAX_NODES=10
MACHINE_TYPE=e2-standard-4

usage() {
  cat <<EOF_USAGE
Usage: scripts/gke.sh project ID
       scripts/gke.sh up [MIN_NODES MAX_NODES [MACHINE_TYPE]]   default: up $MIN_NODES $MAX_NODES $MACHINE_TYPE
       scripts/gke.sh registry
       scripts/gke.sh down

  project ID  make ID gcloud's default project (the other commands use it)
  up          create cluster \$CLUSTER in \$ZONE with node autoscaling from MIN_NODES to MAX_NODES
              nodes of MACHINE_TYPE (MIN_NODES at first), unless it exists; if it does, set the
              autoscaling bounds of its default-pool (its machine type stays). Then fetch its
              credentials for kubectl, and run registry. Dataplane V2 enforces the NetworkPolicy;
              the release channel brings Kubernetes >= 1.32 (native sidecars).
  registry    make sure the Docker repository \$REPOSITORY exists in Artifact Registry in
              \$REGION and docker's credential helper for \$REGION-docker.pkg.dev is set up;
              print the registry path on stdout (the REGISTRY of scripts/k8s.sh image):
                scripts/k8s.sh image "\$(scripts/gke.sh registry)" 0.1.0
  down        delete the cluster, if it exists. Run scripts/k8s.sh teardown first: GKE does not
              always delete the disks of volume claims (Redis's data) with a cluster. The
              repository and its images stay (gcloud artifacts repositories delete removes them).

Environment:
  CLUSTER          cluster name (default redis-api)
  ZONE             compute zone (default europe-west1-b)
  REGION           the repository's region (default: \$ZONE's, europe-west1)
  REPOSITORY       Artifact Registry repository (default redis-api)
  RELEASE_CHANNEL  GKE release channel for up (default regular)
  DOCKER_CONFIG    docker's configuration folder (default ~/.docker)
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

# check_quota MAX_NODES MACHINE_TYPE: warns when MAX_NODES machines would pass one of the region's
# vCPU quotas, CPUS and the machine family's own (E2_CPUS, N2_CPUS, ... where the region has one):
# the cluster autoscaler then cannot add the nodes, and pods stay Pending. Advisory: a quota that
# cannot be read is only logged.
check_quota() {
  local cpus quotas family metric limit usage need
  if ! cpus=$(gcloud compute machine-types describe "$2" --zone "$ZONE" --format 'value(guestCpus)' 2>/dev/null) ||
    [[ ! $cpus =~ ^[0-9]+$ ]]; then
    log "could not read the vCPUs of $2 in $ZONE: check that $REGION's quotas hold $1 of them"
    return 0
  fi
  need=$(($1 * cpus))
  # `describe` has no --filter: one line per quota (metric, limit, usage), picked out here.
  quotas=$(gcloud compute regions describe "$REGION" --flatten quotas \
    --format 'value(quotas.metric,quotas.limit,quotas.usage)' 2>/dev/null) ||
    { log "could not read $REGION's quotas: check that they hold $need vCPUs"; return 0; }
  family=$(tr '[:lower:]' '[:upper:]' <<<"${2%%-*}")_CPUS
  while read -r metric limit usage; do
    [[ $metric == CPUS || $metric == "$family" ]] || continue
    if ((${limit%.*} - ${usage%.*} < need)); then
      log "warning: $1 x $2 is $need vCPUs, but $REGION's $metric quota has $((${limit%.*} - ${usage%.*})) left:" \
        "nodes past it will not be created (raise the quota, or lower MAX_NODES)"
    fi
  done <<<"$quotas"
}

up() {
  (($# <= 3)) || { usage >&2; die "up takes MIN_NODES MAX_NODES [MACHINE_TYPE]"; }
  (($# != 1)) || { usage >&2; die "up needs both MIN_NODES and MAX_NODES (or neither)"; }
  local min=${1:-$MIN_NODES} max=${2:-$MAX_NODES} machine=${3:-$MACHINE_TYPE}
  [[ $min =~ ^[1-9][0-9]*$ ]] || die "MIN_NODES must be a positive whole number, not '$min'"
  [[ $max =~ ^[1-9][0-9]*$ ]] || die "MAX_NODES must be a positive whole number, not '$max'"
  ((min <= max)) || die "MIN_NODES ($min) is more than MAX_NODES ($max)"
  need_cmd gke-gcloud-auth-plugin "kubectl needs it for GKE: gcloud components install gke-gcloud-auth-plugin (Debian/Ubuntu: apt-get install google-cloud-cli-gke-gcloud-auth-plugin)"
  check_quota "$max" "$machine"
  if cluster_exists; then
    # A zonal cluster: the bounds are per zone, and there is one zone.
    log "cluster $CLUSTER exists in $ZONE: setting its default-pool's autoscaling to $min..$max nodes (machine type unchanged)"
    gcloud container clusters update "$CLUSTER" --zone "$ZONE" --node-pool default-pool \
      --enable-autoscaling --min-nodes "$min" --max-nodes "$max"
  else
    log "creating cluster $CLUSTER in $ZONE: $min to $max x $machine, $min at first (takes a few minutes)"
    gcloud services enable container.googleapis.com
    gcloud container clusters create "$CLUSTER" --zone "$ZONE" --machine-type "$machine" \
      --num-nodes "$min" --enable-autoscaling --min-nodes "$min" --max-nodes "$max" \
      --release-channel "$RELEASE_CHANNEL" --enable-dataplane-v2
  fi
  gcloud container clusters get-credentials "$CLUSTER" --zone "$ZONE"
  local path
  path=$(registry)
  grant_pull "$path"
  log "kubectl now talks to $CLUSTER; next: scripts/k8s.sh image $path TAG, then scripts/k8s.sh deploy"
}

# grant_pull PATH: lets the nodes' service account pull from the repository. The default Compute
# Engine account can pull only if it kept the project-wide Editor role that new organizations no
# longer grant; a dedicated least-privilege node account never can. Adding a binding that exists
# changes nothing.
grant_pull() {
  local sa project
  sa=$(gcloud container clusters describe "$CLUSTER" --zone "$ZONE" --format 'value(nodeConfig.serviceAccount)')
  if [[ -z $sa || $sa == default ]]; then
    project=$(gcloud config get-value project 2>/dev/null)
    sa=$(gcloud projects describe "$project" --format 'value(projectNumber)')-compute@developer.gserviceaccount.com
  fi
  log "letting the nodes ($sa) pull from $1"
  gcloud artifacts repositories add-iam-policy-binding "$REPOSITORY" --location "$REGION" \
    --member "serviceAccount:$sa" --role roles/artifactregistry.reader >/dev/null
}

# registry: the repository and docker's credential helper, each only when missing; prints the path
# images are pushed to, REGION-docker.pkg.dev/PROJECT/REPOSITORY, on stdout (everything else goes
# to stderr, so that "$(scripts/gke.sh registry)" is the path alone).
registry() {
  local project host=$REGION-docker.pkg.dev err config=${DOCKER_CONFIG:-$HOME/.docker}/config.json
  project=$(gcloud config get-value project 2>/dev/null)
  gcloud services enable artifactregistry.googleapis.com >&2
  if err=$(gcloud artifacts repositories describe "$REPOSITORY" --location "$REGION" --format 'value(name)' 2>&1 >/dev/null); then
    log "Artifact Registry repository $REPOSITORY exists in $REGION"
  elif [[ $err == *NOT_FOUND* ]]; then
    log "creating the Artifact Registry repository $REPOSITORY (Docker) in $REGION"
    gcloud artifacts repositories create "$REPOSITORY" --repository-format=docker --location "$REGION" \
      --description "redis-api images (scripts/image.sh)" >&2
  else
    die "cannot read the repository $REPOSITORY in $REGION: $err"
  fi
  # docker (and podman, which reads docker's config.json too) ask `docker-credential-gcloud` for
  # a short-lived token on every push: no password is stored.
  if grep -Eq "\"$host\"[[:space:]]*:[[:space:]]*\"gcloud\"" "$config" 2>/dev/null; then
    log "docker's credential helper for $host is set up ($config)"
  else
    log "setting up docker's credential helper for $host in $config"
    gcloud auth configure-docker "$host" --quiet >&2
  fi
  command -v docker-credential-gcloud >/dev/null 2>&1 ||
    log "warning: docker-credential-gcloud is not on PATH: add $(gcloud info --format 'value(installation.sdk_root)')/bin, or pushes fail"
  printf '%s\n' "$host/$project/$REPOSITORY"
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
    registry) (($# == 0)) || die "registry takes no arguments"; need_project; registry ;;
    down) need_project; down ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
