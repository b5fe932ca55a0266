#!/usr/bin/env bash
# Builds Kiln's container images with the project's own Docker engine.
#
#   images/build.sh NAME [TAG]   build one image; without TAG it is tagged
#                                kiln/NAME:<workspace version> and kiln/NAME:dev
#   images/build.sh all          build every image that is defined (`make images`)
#   images/build.sh list         print the names of the images that are defined
#
# An image NAME is a folder images/NAME/ holding
#   Dockerfile   starting with `ARG BASE` / `FROM ${BASE}`: the base image is
#                Kiln's Debian image (e2e/docker/base-image.sh), no registry needed;
#   stage.sh     run as `stage.sh CONTEXT_DIR` from the repository root: builds
#                what the image needs on the host and copies it into CONTEXT_DIR.
#                It may write CONTEXT_DIR/build-args, one KEY=VALUE a line, for
#                extra --build-arg values.
# The context sent to the engine is that staged folder alone, so it holds only
# what the image needs, never the checkout or target/.
#
# Images:
#   operator   images/operator/: the kiln-operator binary
#   runtime    images/runtime/: the trainer and inference server with the libtorch
#              libraries; defined by adding images/runtime/Dockerfile and
#              images/runtime/stage.sh, after which `images/build.sh runtime`
#              and `make images` build it with no change here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source e2e/tools/common.sh

BASE_IMAGE=${KILN_BASE_IMAGE:-kiln/debian:bookworm}
KNOWN_IMAGES=(operator runtime)

usage() { sed -n "2,8p" "$0" | sed "s/^# \{0,1\}//" >&2; exit "${1:-2}"; }

# The workspace version: [workspace.package] version in Cargo.toml.
workspace_version() {
  awk '/^\[/ { in_pkg = ($0 == "[workspace.package]") }
       in_pkg && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml
}

defined() { [[ -f "images/$1/Dockerfile" && -x "images/$1/stage.sh" ]]; }

defined_images() {
  local name
  for name in "${KNOWN_IMAGES[@]}"; do defined "$name" && printf '%s\n' "$name"; done
  return 0
}

revision() {
  local rev
  rev=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; return; }
  git diff --quiet HEAD 2>/dev/null || rev="$rev-dirty"
  echo "$rev"
}

# built_at_revision REV TAG...: every TAG is one image, built from the clean
# commit REV (its revision label), so building again would change nothing.
built_at_revision() {
  local rev=$1 tag id="" this; shift
  [[ "$rev" != *-dirty && "$rev" != unknown ]] || return 1
  for tag in "$@"; do
    this=$(docker image inspect -f '{{.Id}} {{index .Config.Labels "org.opencontainers.image.revision"}}' "$tag" 2>/dev/null) \
      || return 1
    [[ "${this#* }" == "$rev" ]] || return 1
    [[ -z "$id" || "${this%% *}" == "$id" ]] || return 1
    id=${this%% *}
  done
}

# build NAME [TAG]: one build of an image at a time (images/NAME's lock), and
# none when the image of this clean commit is there already (`make test`
# builds the images for test-images and uses them again for test-e2e).
build() {
  local name=$1 tag=${2:-} version start=$SECONDS
  [[ " ${KNOWN_IMAGES[*]} " == *" $name "* ]] || die "unknown image '$name' (images: ${KNOWN_IMAGES[*]})"
  defined "$name" || die "image '$name' is not defined yet: images/$name/ needs a Dockerfile and an executable stage.sh"
  version=$(workspace_version)
  [[ -n "$version" ]] || die "no [workspace.package] version in Cargo.toml"
  local names=()
  if [[ -n "$tag" ]]; then names=("$tag"); else names=("kiln/$name:$version" "kiln/$name:dev"); fi
  eval "$(e2e/docker/engine.sh up)"
  if built_at_revision "$(revision)" "${names[@]}"; then
    timing_record "image kiln/$name" cached
    return 0
  fi
  with_lock "$KILN_CACHE/locks/image-build-$name.lock" build_image "$name" "$version" "${names[@]}"
  timing_record "image kiln/$name" built $((SECONDS - start))
}

# build_image NAME VERSION TAG...: stage, then docker build.
build_image() {
  local name=$1 version=$2 context; shift 2
  local names=("$@") tags=() t
  if built_at_revision "$(revision)" "${names[@]}"; then return 0; fi
  for t in "${names[@]}"; do tags+=(-t "$t"); done

  mkdir -p "$KILN_CACHE/tmp"
  context=$(mktemp -d "$KILN_CACHE/tmp/image-$name.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap outlives this function's locals
  trap "rm -rf '$context' '$context.log'" EXIT
  log "staging $name into $context"
  "images/$name/stage.sh" "$context"
  cp "images/$name/Dockerfile" "$context/Dockerfile"

  e2e/docker/base-image.sh "$BASE_IMAGE"

  local args=(--build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$version" --build-arg "REVISION=$(revision)")
  if [[ -f "$context/build-args" ]]; then
    local line
    while IFS= read -r line; do [[ -n "$line" ]] && args+=(--build-arg "$line"); done <"$context/build-args"
    rm -f "$context/build-args"
  fi
  log "building ${names[*]} (context $(du -sh "$context" | cut -f1))"
  # The engine's own builder: no BuildKit front end image to pull, no registry.
  DOCKER_BUILDKIT=0 docker build "${args[@]}" "${tags[@]}" "$context" >"$context.log" 2>&1 \
    || { tail -n 40 "$context.log" >&2; rm -rf "$context" "$context.log"; die "docker build of $name failed"; }
  rm -rf "$context" "$context.log"
  trap - EXIT
  log "built ${names[*]}"
}

case "${1:-}" in
  -h|--help) usage 0 ;;
  "") usage ;;
  list) defined_images ;;
  all)
    mapfile -t names < <(defined_images)
    for name in "${KNOWN_IMAGES[@]}"; do
      defined "$name" || log "skipping $name: images/$name/ has no Dockerfile and stage.sh yet"
    done
    for name in "${names[@]}"; do build "$name"; done
    ;;
  *) [[ $# -le 2 ]] || usage; build "$@" ;;
esac
