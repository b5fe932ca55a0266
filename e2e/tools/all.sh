#!/usr/bin/env bash
# Builds every binary the local cluster needs (each cached by version under
# $KILN_CACHE/bin, so a warm machine rebuilds nothing) and prints NAME=PATH
# lines for eval. The order puts the long builds first. kwok (fake nodes for
# scale tests) is built only when asked for:
#   all.sh [--kwok]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
build() {
  local var=$1 script=$2 start=$SECONDS path
  path=$("$HERE/$script") || die "$script failed"
  (( SECONDS - start > 2 )) && log "$script: $((SECONDS - start)) s"
  printf '%s=%q\n' "$var" "$path"
}
build KUBERNETES_BIN kubernetes.sh
build WEED seaweedfs.sh
build ETCD etcd.sh
build CONTAINERD_BIN containerd.sh
build CNI_BIN cni-plugins.sh
build COREDNS coredns.sh
build HELM helm.sh
build NODE_PROGRAMS node-programs.sh
if [[ "${1:-}" == --kwok ]]; then build KWOK kwok.sh; fi
