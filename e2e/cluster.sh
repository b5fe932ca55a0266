#!/usr/bin/env bash
# Kiln's local Kubernetes: a control plane of host processes and nodes that
# are Docker containers running real kubelets, described by e2e/cluster.yaml
# (or $KILN_CLUSTER_CONFIG). Every command is idempotent; `up` reuses what
# runs and repairs what does not.
#
#   cluster.sh up                  bring the cluster up (the actions below, in order)
#   cluster.sh down                stop everything; keep the cache (images, binaries)
#   cluster.sh delete              down, and forget the cluster's state (PKI, etcd, volumes)
#   cluster.sh kubeconfig          print the admin kubeconfig's path
#   cluster.sh status              processes, node containers, Nodes
#   cluster.sh memory              the running cluster's memory, per component (PSS and RSS)
#   cluster.sh preflight           check what the host needs (root, cgroups, Go, Python, disk, kernel)
#   cluster.sh load IMAGE[,TAG...] [NODE...]  import a Docker image (with all the
#                                  listed tags of it) into the nodes (default: all)
#   cluster.sh reclaim NODE        simulate a spot reclaim: the node and its pods go
#   cluster.sh export-logs DIR     copy every log (control plane, nodes, pods) into DIR
#   cluster.sh nodes               print "NAME POOL INDEX IP GPUS" per configured node
#   cluster.sh action NAME...      run single actions of `up` (pki, control_plane, ...)
set -euo pipefail
source "$(dirname "$0")/cluster/lib.sh"
source "$E2E_DIR/cluster/memory.sh"
for action in "$E2E_DIR"/cluster/actions/*.sh; do
  # shellcheck disable=SC1090
  source "$action"
done

# The ordered actions of `up` (after the preflight checks and the binaries):
# each is idempotent and leaves running parts alone.
UP_ACTIONS=(pki docker_network control_plane node_image nodes pod_network addons s3 kwok ready)

# heartbeat_since NODE TIME: NODE's kubelet reported Ready after TIME.
heartbeat_since() {
  k get node "$1" -o json | jq -e --arg since "$2" \
    '.status.conditions[] | select(.type == "Ready" and .status == "True" and .lastHeartbeatTime >= $since)'
}

# dns_fresh TIME NODE...: every CoreDNS pod is Ready, and the ones on NODEs
# (re)started at TIME have been started since.
dns_fresh() {
  local since=$1; shift
  k -n kube-system get pods -l k8s-app=kube-dns -o json | jq -e --arg since "$since" \
    --argjson restarted "$(printf '%s\n' "$@" | jq -R . | jq -s 'map(select(. != ""))')" '
      (.items | length) > 0 and all(.items[];
        ((.status.conditions // []) | any(.type == "Ready" and .status == "True"))
        and ((.spec.nodeName as $n | $restarted | index($n)) == null
             or (((.status.containerStatuses // [])[0].state.running.startedAt // "") >= $since)))'
}

action_ready() {
  local node
  for node in $(node_names); do
    wait_for "node $node to be Ready" 180 heartbeat_since "$node" "$UP_STARTED" \
      || { docker exec "$node" tail -n 40 /var/log/kiln/kubelet.log >&2; die "node $node is not Ready"; }
  done
  wait_for "CoreDNS" 180 dns_fresh "$UP_STARTED" "${RESTARTED_NODES[@]}" \
    || { k -n kube-system get pods -o wide >&2; die "CoreDNS is not available"; }
}

# lock_cluster: one command at a time changes the cluster (several people or
# test runs may share it). A caller that holds the lock already (a test that
# reclaims a node and brings it back) sets KILN_CLUSTER_LOCKED=1.
lock_cluster() {
  [[ -n "${KILN_CLUSTER_LOCKED:-}" ]] && return 0
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/lock"
  if ! flock -n 9; then
    log "waiting for another user of $CLUSTER_DIR/lock"
    flock -w 900 9 || die "$CLUSTER_DIR/lock is still held after 15 min"
  fi
  export KILN_CLUSTER_LOCKED=1
}

cmd_up() {
  local start=$SECONDS action t
  lock_cluster
  UP_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  # What the host needs is checked before anything is built or started.
  action_preflight
  load_tools
  for action in "${UP_ACTIONS[@]}"; do
    t=$SECONDS
    "action_$action"
    ((SECONDS - t > 1)) && log "action $action: $((SECONDS - t)) s"
  done
  log "cluster $CLUSTER_NAME is up in $((SECONDS - start)) s; kubeconfig: $KUBECONFIG_PATH"
}

cmd_down() {
  lock_cluster
  docker_up
  local node
  for node in $(cluster_containers); do
    log "stopping node $node"
    docker rm -f "$node" >/dev/null 2>&1 || true
    remove_cgroups "$node"
  done
  stop_process kwok
  stop_process seaweedfs
  stop_control_plane
  docker network rm "$DOCKER_NETWORK" >/dev/null 2>&1 || true
  log "cluster $CLUSTER_NAME is down (state kept in $CLUSTER_DIR; node volumes kept)"
}

cmd_delete() {
  cmd_down
  local node
  for node in $(node_names); do docker volume rm "$node-var" >/dev/null 2>&1 || true; done
  rm -rf "$CLUSTER_DIR"
  log "cluster $CLUSTER_NAME deleted"
}

cmd_status() {
  docker_up
  local p
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler seaweedfs kwok; do
    if pid_alive "$p"; then echo "$p: running (pid $(cat "$RUN_DIR/$p.pid"))"; else echo "$p: stopped"; fi
  done
  docker ps -a --filter "label=kiln.dev/cluster=$CLUSTER_NAME" --format '{{.Names}}\t{{.Status}}\t{{.Image}}'
  load_tools
  k get nodes -o wide 2>/dev/null || true
}

cmd_load() {
  local image=${1:?usage: cluster.sh load IMAGE[,TAG...] [NODE...]}; shift
  docker_up
  if (($# == 0)); then mapfile -t nodes_to_load < <(node_names); else nodes_to_load=("$@"); fi
  load_image "$image" "${nodes_to_load[@]}"
}

# A spot reclaim: the cloud takes the machine away. The container goes at once
# (its pods die with it), then the Node object; the pod GC deletes the pods
# bound to a node that no longer exists. `up` brings the node back.
cmd_reclaim() {
  local node=${1:?usage: cluster.sh reclaim NODE}
  lock_cluster
  load_tools
  docker_up
  log "spot reclaim of $node"
  docker rm -f "$node" >/dev/null 2>&1 || die "no node container $node"
  remove_cgroups "$node"
  k delete node "$node" --wait=false >/dev/null
}

cmd_export_logs() {
  local dir=${1:?usage: cluster.sh export-logs DIR} node
  mkdir -p "$dir/control-plane"
  cp "$LOG_DIR"/*.log "$dir/control-plane/" 2>/dev/null || true
  docker_up
  for node in $(cluster_containers); do
    mkdir -p "$dir/nodes/$node"
    docker logs "$node" >"$dir/nodes/$node/container.log" 2>&1 || true
    docker cp "$node:/var/log/kiln/." "$dir/nodes/$node/" >/dev/null 2>&1 || true
    docker cp "$node:/var/log/pods" "$dir/nodes/$node/pods" >/dev/null 2>&1 || true
  done
  load_tools
  k get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  k get all,nodes -A -o wide >"$dir/objects.txt" 2>&1 || true
  log "logs exported to $dir"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  delete) cmd_delete ;;
  kubeconfig) printf '%s\n' "$KUBECONFIG_PATH" ;;
  status) cmd_status ;;
  memory) cmd_memory ;;
  preflight) action_preflight && log "preflight: the host has what the local cluster needs" ;;
  load) shift; cmd_load "$@" ;;
  reclaim) shift; cmd_reclaim "$@" ;;
  export-logs) shift; cmd_export_logs "$@" ;;
  nodes) nodes ;;
  action)
    shift
    load_tools
    for a in "$@"; do "action_$a"; done
    ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
