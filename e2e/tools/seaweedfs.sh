#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 store of the local cluster) through the
# wrapper module in ./seaweedfs, once per version, and prints its path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
SEAWEEDFS_VERSION=$(sed -n 's/^require github.com\/seaweedfs\/seaweedfs \(.*\)$/\1/p' "$HERE/seaweedfs/go.mod")
COMMIT=${SEAWEEDFS_VERSION##*-}
OUT="$KILN_CACHE/bin/weed-$SEAWEEDFS_VERSION"
# build TMP: about 8 min on 2 cores.
build() {
  command -v go >/dev/null || die "go is not installed"
  (cd "$HERE/seaweedfs" && CGO_ENABLED=0 go build \
    -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$COMMIT" \
    -o "$1/weed" github.com/seaweedfs/seaweedfs/weed) >&2 || die "building SeaweedFS failed"
}
cache_entry "$OUT" weed "SeaweedFS $SEAWEEDFS_VERSION" build
printf '%s\n' "$OUT/weed"
