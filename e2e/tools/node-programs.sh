#!/usr/bin/env bash
# Builds the programs of e2e/node (pause, fake-gpu-plugin) and prints their
# folder. The cache key is a hash of their sources, so a change rebuilds them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
SRC="$HERE/../node"
key=$(cd "$SRC" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
OUT="$KILN_CACHE/bin/kiln-node-$key"
build() {
  (cd "$SRC" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$1/" ./cmd/...) >&2 \
    || die "building the node programs failed"
  touch "$1/.complete"
}
cache_entry "$OUT" .complete "node programs $key" build
printf '%s\n' "$OUT"
