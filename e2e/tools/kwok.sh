#!/usr/bin/env bash
# Builds kwok (fake nodes for scale tests) and prints its path.
#   kwok.sh           the binary's path
#   kwok.sh --stages  the folder of kwok's stage files in the module cache
set -euo pipefail
source "$(dirname "$0")/common.sh"
KWOK_VERSION=v0.8.0
if [[ "${1:-}" == --stages ]]; then
  dir=$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  printf '%s\n' "$dir/kustomize/stage"
  exit 0
fi
go_install kwok "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
