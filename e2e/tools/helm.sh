#!/usr/bin/env bash
# Prints the path of helm, built once from its Go module.
set -euo pipefail
source "$(dirname "$0")/common.sh"
HELM_VERSION=v3.22.0
go_install helm "$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
