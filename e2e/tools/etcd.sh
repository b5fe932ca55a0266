#!/usr/bin/env bash
# Builds etcd through the wrapper main in ./etcd and prints its path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
ETCD_VERSION=v3.6.16
OUT="$KILN_CACHE/bin/etcd-$ETCD_VERSION"
build() {
  command -v go >/dev/null || die "go is not installed"
  (cd "$HERE/etcd" && CGO_ENABLED=0 go build \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
    -o "$1/etcd" .) >&2 || die "building etcd failed"
}
cache_entry "$OUT" etcd "etcd $ETCD_VERSION" build
printf '%s\n' "$OUT/etcd"
