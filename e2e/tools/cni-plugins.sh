#!/usr/bin/env bash
# Builds the CNI plugins the nodes use (ptp, bridge, host-local, loopback, portmap)
# and prints the folder that holds them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CNI_PLUGINS_VERSION=v1.10.0
m=github.com/containernetworking/plugins
go_install_set cni-plugins "$CNI_PLUGINS_VERSION" \
  "-X $m/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
  "$m/plugins/main/ptp@$CNI_PLUGINS_VERSION" \
  "$m/plugins/main/bridge@$CNI_PLUGINS_VERSION" \
  "$m/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
  "$m/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
  "$m/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
