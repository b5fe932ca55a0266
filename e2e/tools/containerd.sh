#!/usr/bin/env bash
# Builds containerd, its runc shim and ctr from containerd's Go module, and
# prints the folder that holds them. runc itself comes from Debian, in the
# node image.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONTAINERD_VERSION=v2.4.2
m=github.com/containerd/containerd/v2
go_install_set containerd "$CONTAINERD_VERSION" \
  "-X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=$CONTAINERD_VERSION -X $m/version.Package=$m" \
  "$m/cmd/containerd@$CONTAINERD_VERSION" \
  "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  "$m/cmd/ctr@$CONTAINERD_VERSION"
