#!/bin/bash
# PID 1 of a Kiln node container: prepares the container (mounts, cgroups,
# sysctls, machine-id), then runs containerd, kubelet, kube-proxy and, on GPU
# nodes, the fake GPU device plugin, each restarted when it exits and logging
# to /var/log/kiln/NAME.log. The node's credentials and configs are in
# /etc/kubernetes, written by the host. Environment:
#   KILN_NODE_NAME, KILN_NODE_IP, KILN_NODE_LABELS, KILN_NODE_TAINTS, KILN_NODE_GPUS
set -euo pipefail
: "${KILN_NODE_NAME:?}" "${KILN_NODE_IP:?}"
LOGS=/var/log/kiln
mkdir -p "$LOGS" /etc/cni/net.d /var/lib/kubelet /var/lib/kiln /var/lib/kubelet/device-plugins

# Pod volumes are mounted under /var/lib/kubelet and must propagate.
mount --make-rshared /
# kubelet needs a machine-id.
[[ -s /etc/machine-id ]] || tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv4.conf.all.route_localnet=1 || true

# The host's cgroup v1 hierarchies are shared by every node: each kubelet gets
# its own root, /kiln-NODE, which must exist in every hierarchy.
for h in /sys/fs/cgroup/*/; do
  case $h in */unified/) continue ;; esac
  mkdir -p "$h/kiln-$KILN_NODE_NAME"
done
if [[ -d /sys/fs/cgroup/cpuset ]]; then
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/kiln-$KILN_NODE_NAME/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/kiln-$KILN_NODE_NAME/cpuset.mems"
fi

# Pod traffic that leaves the pod network (to the control plane, the S3 store)
# leaves with the node's address.
nft -f - <<NFT
table ip kiln_masq
delete table ip kiln_masq
table ip kiln_masq {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${KILN_POD_SUBNET:?} ip daddr != ${KILN_POD_SUBNET} masquerade
  }
}
NFT

# supervise NAME COMMAND...: runs COMMAND again whenever it exits.
supervise() {
  local name=$1; shift
  (
    while true; do
      echo "=== $(date -u +%FT%TZ) starting $name" >>"$LOGS/$name.log"
      "$@" >>"$LOGS/$name.log" 2>&1 || true
      sleep 2
    done
  ) &
}

supervise containerd containerd --config /etc/containerd/config.toml
for _ in $(seq 1 60); do [[ -S /run/containerd/containerd.sock ]] && break; sleep 0.5; done

kubelet_flags=(
  --config=/etc/kubernetes/kubelet.yaml
  --kubeconfig=/etc/kubernetes/kubelet.kubeconfig
  --hostname-override="$KILN_NODE_NAME"
  --node-ip="$KILN_NODE_IP"
)
[[ -n "${KILN_NODE_LABELS:-}" ]] && kubelet_flags+=(--node-labels="$KILN_NODE_LABELS")
[[ -n "${KILN_NODE_TAINTS:-}" ]] && kubelet_flags+=(--register-with-taints="$KILN_NODE_TAINTS")
supervise kubelet kubelet "${kubelet_flags[@]}"
supervise kube-proxy kube-proxy --config=/etc/kubernetes/kube-proxy.yaml
if (( ${KILN_NODE_GPUS:-0} > 0 )); then
  supervise fake-gpu-plugin fake-gpu-plugin --count "$KILN_NODE_GPUS" --node "$KILN_NODE_NAME"
fi

# On SIGTERM, stop everything; the cgroups of this node go with it.
trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
wait
