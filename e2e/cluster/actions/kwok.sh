# shellcheck shell=bash disable=SC2034
# Action kwok (only when kwok.enabled is true in the config, or KILN_KWOK=1):
# fake nodes for scale tests. kwok runs on the host and plays kubelet for the
# Node objects annotated kwok.x-k8s.io/node=fake: they turn Ready, heartbeat
# through Leases, and their pods turn Running without running anything. Fake
# nodes carry the taint kwok.x-k8s.io/node=fake:NoSchedule, so only pods that
# tolerate it land there.

kwok_fake_node() {
  local name=$1 gpus=$2
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    type: kwok
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kiln.dev/pool: kwok
    nvidia.com/gpu.present: "true"
spec:
  taints:
  - {key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$gpus"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$gpus"}
EOF
}

action_kwok() {
  if ! kwok_enabled; then
    # Switched off: no fake nodes linger (they would turn NotReady).
    if pid_alive kwok || [[ -n "$(k get nodes -l type=kwok -o name 2>/dev/null)" ]]; then
      log "kwok is off: removing its fake nodes"
      k delete nodes -l type=kwok --wait=false >/dev/null 2>&1 || true
      stop_process kwok
    fi
    return 0
  fi
  local stages config="$CLUSTER_DIR/kwok.yaml" count gpus i
  stages=$("$E2E_DIR/tools/kwok.sh" --stages)
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      printf -- '---\n'
      cat "$stages/$f"
    done
  } >"$config"
  # Fake pods get addresses no real pod has; nothing is ever sent to them.
  start_process kwok "$KWOK" --kubeconfig "$KUBECONFIG_PATH" --config "$config" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.250.0.0/16 --node-lease-duration-seconds 40 --server-address 127.0.0.1:10247
  wait_process kwok 60 curl -fsS http://127.0.0.1:10247/healthz
  count=$(cfg .kwok.nodes); gpus=$(cfg .kwok.gpusPerNode)
  [[ "$(k get nodes -l type=kwok -o name | wc -l)" == "$count" ]] && return 0
  log "applying $count kwok nodes with $gpus GPUs each"
  for ((i = 0; i < count; i++)); do
    kwok_fake_node "$CLUSTER_NAME-kwok-$i" "$gpus"
    printf -- '---\n'
  done | k apply -f - >/dev/null || die "creating kwok nodes failed"
}
