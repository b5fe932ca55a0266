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
#   images.sh load-e2e      load only kiln/e2e-tools and kiln/pytorch (as above)
#   images.sh tags          print the tags of the e2e images
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tools/common.sh"
BASE_IMAGE=kiln/debian:bookworm
E2E_TOOLS_IMAGE=kiln/e2e-tools:v1
PYTORCH_IMAGE=kiln/pytorch:2.11.0
TORCH_POOL=${KILN_TORCH_POOL:-ondemand}
eval "$("$HERE/docker/engine.sh" up)"

# The images' keys: a change to what an image is made from rebuilds it under
# the same tag (image_entry in common.sh).
E2E_TOOLS_KEY=$(inputs_hash "$HERE/images/e2e-tools")
PYTORCH_KEY=$( (inputs_hash "$HERE/images/pytorch"; echo "$PYTORCH_IMAGE") | sha256sum | cut -c1-12)

# docker_build TAG KEY DIR: the engine's own builder on Kiln's Debian base.
docker_build() {
  local tag=$1 key=$2 dir=$3
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE_IMAGE" --label "dev.kiln.inputs=$key" \
    -t "$tag" "$dir" >/dev/null || die "building $tag failed"
}

# The PyTorch image's site-packages are torch and its dependencies as the
# trainer's virtual environment (images/runtime/torch-env.sh) installed them:
# the wheels are fetched once per machine, and the build context is made of
# hard links into that environment, so it costs no copy of the 4.6 GB.
build_torch_context() {
  local ctx=$1 venv
  venv=$(eval "$("$HERE/../images/runtime/torch-env.sh")" && printf '%s' "$KILN_TORCH_VENV")
  [[ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == 3.11 ]] \
    || die "the PyTorch image needs the torch environment made by python3.11 (the image's Python)"
  cp "$HERE/images/pytorch/Dockerfile" "$HERE/images/pytorch/ddp_allreduce.py" "$ctx/"
  mkdir -p "$ctx/site-packages"
  "$venv/bin/python" "$HERE/images/pytorch/dist_files.py" torch >"$ctx/files" \
    || die "listing torch's installed files failed"
  # Hard links where the environment and the context share a file system,
  # else copies.
  local link=-l
  ln "$venv/pyvenv.cfg" "$ctx/.link-test" 2>/dev/null && rm "$ctx/.link-test" || link=
  (cd "$venv/lib/python3.11/site-packages" && xargs -d '\n' cp $link --parents -t "$ctx/site-packages" <"$ctx/files") \
    || die "copying torch's files into the build context failed"
  rm "$ctx/files"
}

build_torch() {
  local ctx
  ctx=$(mktemp -d "$KILN_CACHE/tmp/pytorch-context.XXXXXX")
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$ctx'" EXIT
  build_torch_context "$ctx"
  docker_build "$PYTORCH_IMAGE" "$PYTORCH_KEY" "$ctx"
  rm -rf "$ctx"
  trap - EXIT
}

# The e2e images: kiln/e2e-tools into every node, the PyTorch image into its
# pool's nodes.
load_e2e() {
  local nodes_all pool_nodes
  nodes_all=$("$HERE/cluster.sh" nodes | cut -d' ' -f1)
  pool_nodes=$("$HERE/cluster.sh" nodes | awk -v p="$TORCH_POOL" '$2 == p {print $1}')
  # shellcheck disable=SC2086
  "$HERE/cluster.sh" load "$E2E_TOOLS_IMAGE" $nodes_all
  if docker image inspect "$PYTORCH_IMAGE" >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    "$HERE/cluster.sh" load "$PYTORCH_IMAGE" $pool_nodes
  fi
}

load() {
  local tags nodes_all
  load_e2e
  nodes_all=$("$HERE/cluster.sh" nodes | cut -d' ' -f1)
  # One load per image, with all its tags (kiln/runtime:0.1.0 and :dev are
  # one image): an image's layers cross into a node once.
  while read -r tags; do
    # shellcheck disable=SC2086
    "$HERE/cluster.sh" load "$tags" $nodes_all
  done < <(for repo in kiln/operator kiln/runtime; do
    docker images --format '{{.ID}} {{.Repository}}:{{.Tag}}' "$repo" | grep -v '<none>' || true
  done | awk '{tags[$1] = tags[$1] (tags[$1] == "" ? "" : ",") $2} END {for (id in tags) print tags[id]}')
}

case "${1:-}" in
  build)
    "$HERE/docker/base-image.sh" "$BASE_IMAGE"
    image_entry "$E2E_TOOLS_IMAGE" "$E2E_TOOLS_KEY" "image $E2E_TOOLS_IMAGE" \
      docker_build "$E2E_TOOLS_IMAGE" "$E2E_TOOLS_KEY" "$HERE/images/e2e-tools"
    ;;
  build-torch)
    "$HERE/docker/base-image.sh" "$BASE_IMAGE"
    mkdir -p "$KILN_CACHE/tmp"
    image_entry "$PYTORCH_IMAGE" "$PYTORCH_KEY" "image $PYTORCH_IMAGE" build_torch
    ;;
  load) load ;;
  load-e2e) load_e2e ;;
  tags) printf '%s\n%s\n' "$E2E_TOOLS_IMAGE" "$PYTORCH_IMAGE" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
