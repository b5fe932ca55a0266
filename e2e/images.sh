#!/usr/bin/env bash
# Builds the images the e2e tests and the demo run, with the project's Docker
# engine, and loads them into the cluster's nodes (what `kind load` does: the
# nodes need no registry; pods use imagePullPolicy Never or IfNotPresent).
#
#   images.sh build         the e2e tools image (kiln/e2e-tools)
#   images.sh build-torch   the Python + PyTorch image (kiln/pytorch; about 5 GB)
#   images.sh load          load into every node: kiln/e2e-tools and every
#                           kiln/operator and kiln/runtime image built by
#                           images/build.sh; kiln/pytorch, when built, only
#                           into the nodes of $KILN_TORCH_POOL (default ondemand)
#   images.sh tags          print the tags of the e2e images
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tools/common.sh"
BASE_IMAGE=kiln/debian:bookworm
E2E_TOOLS_IMAGE=kiln/e2e-tools:v1
PYTORCH_IMAGE=kiln/pytorch:2.11.0
TORCH_VERSION=2.11.0
TORCH_POOL=${KILN_TORCH_POOL:-ondemand}
eval "$("$HERE/docker/engine.sh" up)"

build_image() {
  local tag=$1 dir=$2
  "$HERE/docker/base-image.sh" "$BASE_IMAGE"
  log "building $tag"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$tag" "$dir" >/dev/null \
    || die "building $tag failed"
}

# The torch wheels, installed once on the host into the cache (pip reaches the
# package index; a Docker build does not).
torch_site_packages() {
  local dir="$KILN_CACHE/pip/torch-$TORCH_VERSION-cp311"
  if [[ ! -f "$dir/.complete" ]]; then
    local py=python3
    [[ "$($py -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == 3.11 ]] \
      || die "building the PyTorch image needs python3.11 on the host (the image's Python)"
    log "pip install torch==$TORCH_VERSION into $dir (about 4.6 GB)"
    rm -rf "$dir" && mkdir -p "$dir"
    $py -m pip install -q --no-cache-dir --target "$dir/site-packages" "torch==$TORCH_VERSION" >&2 \
      || die "pip install torch failed"
    touch "$dir/.complete"
  fi
  printf '%s\n' "$dir/site-packages"
}

build_torch() {
  if docker image inspect "$PYTORCH_IMAGE" >/dev/null 2>&1; then return 0; fi
  local site ctx
  site=$(torch_site_packages)
  ctx=$(mktemp -d /tmp/kiln-pytorch.XXXXXX)
  cp "$HERE/images/pytorch/Dockerfile" "$HERE/images/pytorch/ddp_allreduce.py" "$ctx/"
  # Hard links: the context costs no copy of the 4.6 GB.
  cp -al "$site" "$ctx/site-packages" 2>/dev/null || cp -a "$site" "$ctx/site-packages"
  build_image "$PYTORCH_IMAGE" "$ctx" || { rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  # The image holds the wheels now: give the 4.6 GB back (a rebuild fetches
  # them again, in about 2 minutes).
  rm -rf "$(dirname "$site")"
}

load() {
  local image nodes_all pool_nodes
  nodes_all=$("$HERE/cluster.sh" nodes | cut -d' ' -f1)
  pool_nodes=$("$HERE/cluster.sh" nodes | awk -v p="$TORCH_POOL" '$2 == p {print $1}')
  # shellcheck disable=SC2086
  "$HERE/cluster.sh" load "$E2E_TOOLS_IMAGE" $nodes_all
  for image in $(for repo in kiln/operator kiln/runtime; do
    docker images --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -v '<none>' || true
  done); do
    # shellcheck disable=SC2086
    "$HERE/cluster.sh" load "$image" $nodes_all
  done
  if docker image inspect "$PYTORCH_IMAGE" >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    "$HERE/cluster.sh" load "$PYTORCH_IMAGE" $pool_nodes
  fi
}

case "${1:-}" in
  build)
    docker image inspect "$E2E_TOOLS_IMAGE" >/dev/null 2>&1 || build_image "$E2E_TOOLS_IMAGE" "$HERE/images/e2e-tools"
    ;;
  build-torch) build_torch ;;
  load) load ;;
  tags) printf '%s\n%s\n' "$E2E_TOOLS_IMAGE" "$PYTORCH_IMAGE" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
