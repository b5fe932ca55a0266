#!/usr/bin/env bash
# Builds CoreDNS (the cluster DNS) and prints its path.
set -euo pipefail
source "$(dirname "$0")/common.sh"
COREDNS_VERSION=v1.15.0
go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION" \
  "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
