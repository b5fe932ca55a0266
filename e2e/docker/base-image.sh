#!/usr/bin/env bash
# Builds the Debian base image every Kiln image starts FROM, with debootstrap
# from Debian's packages (no registry is needed), and imports it into the
# project's Docker engine. Idempotent: does nothing when the tag exists.
#   base-image.sh [TAG]   default kiln/debian:bookworm
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh"
TAG=${1:-kiln/debian:bookworm}
SUITE=bookworm
eval "$("$(dirname "$0")/engine.sh" up)"

build() {
  apt_ensure debootstrap debootstrap
  mkdir -p "$KILN_CACHE/tmp"
  ROOTFS=$(mktemp -d "$KILN_CACHE/tmp/rootfs.XXXXXX")
  trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT
  log "debootstrap $SUITE (minbase) into $ROOTFS"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" >"$ROOTFS.log" 2>&1 \
    || { tail -n 30 "$ROOTFS.log" >&2; die "debootstrap failed"; }
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | docker import - "$TAG" >/dev/null
  log "imported $TAG"
}
image_entry "$TAG" "" "base image $TAG" build
