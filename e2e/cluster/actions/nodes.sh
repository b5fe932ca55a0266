# shellcheck shell=bash disable=SC2034,SC2054
# Action nodes: one Docker container per node of the config's pools, each a
# real kubelet with containerd. A node that runs the current node image is
# kept; a stopped one, or one of an older image, is replaced (its /var volume,
# and so its loaded images, stays). Nodes not in the config are removed.

# The flags a node container needs here: no --privileged (the host lacks
# CAP_SYS_RESOURCE, which --privileged asks for), everything else it gives.
NODE_RUN_FLAGS=(
  --cap-add=ALL --cap-drop=SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --security-opt systempaths=unconfined
  --device /dev/kmsg --device /dev/fuse
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs /run:exec,mode=755 --tmpfs /tmp:exec,mode=1777
  --restart=no
)

node_configs() {
  local node=$1 dir="$CLUSTER_DIR/nodes/$1"
  node_pki "$node"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host is cgroup v1: kubelet 1.36 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
# Nodes share the host's cgroup hierarchies: each kubelet has its own root.
cgroupRoot: /kiln-$node
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
# Pods get no host resolver: nothing outside the cluster is to be reached.
resolvConf: ""
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  imagefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.inodesFree: "0%"
localStorageCapacityIsolation: false
nodeStatusReportFrequency: 10s
EOF
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clusterCIDR: $POD_SUBNET
hostnameOverride: $node
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.kubeconfig
# kube-proxy cannot write the conntrack sysctls here: leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# Nodes this run (re)started: their Node objects and pods may still show the
# status of the container before, until their kubelet reports.
RESTARTED_NODES=()

node_running() { [[ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" == true ]]; }

start_node() {
  local node=$1 pool=$2 ip=$3 gpus=$4
  local image
  image=$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null || true)
  if node_running "$node" && [[ "$image" == "$NODE_IMAGE" ]]; then return 0; fi
  if [[ -n "$image" ]]; then
    log "replacing node container $node"
    docker rm -f "$node" >/dev/null
  fi
  node_configs "$node"
  RESTARTED_NODES+=("$node")
  log "starting node $node (pool $pool, $ip, $gpus GPUs)"
  docker run -d --name "$node" --hostname "$node" \
    --network "$DOCKER_NETWORK" --ip "$ip" \
    "${NODE_RUN_FLAGS[@]}" \
    -v "$node-var:/var" \
    -v "$CLUSTER_DIR/nodes/$node:/etc/kubernetes:ro" \
    --label "kiln.dev/cluster=$CLUSTER_NAME" --label "kiln.dev/pool=$pool" \
    -e "KILN_NODE_NAME=$node" -e "KILN_NODE_IP=$ip" -e "KILN_NODE_GPUS=$gpus" \
    -e "KILN_POD_SUBNET=$POD_SUBNET" \
    -e "KILN_NODE_LABELS=$(pool_labels "$pool")" -e "KILN_NODE_TAINTS=$(pool_taints "$pool")" \
    "$NODE_IMAGE" >/dev/null || die "starting node $node failed"
  wait_for "containerd in $node" 60 docker exec "$node" test -S /run/containerd/containerd.sock \
    || { docker logs "$node" 2>&1 | tail -n 20 >&2; die "containerd did not start in $node"; }
}

cluster_containers() { docker ps -a --filter "label=kiln.dev/cluster=$CLUSTER_NAME" --format '{{.Names}}'; }

action_nodes() {
  docker_up
  local node pool idx ip gpus wanted
  wanted=$(node_names)
  for node in $(cluster_containers); do
    grep -qx "$node" <<<"$wanted" || remove_node "$node"
  done
  while read -r node pool idx ip gpus; do
    start_node "$node" "$pool" "$ip" "$gpus"
  done < <(nodes)
  for node in $(node_names); do
    load_image "$PAUSE_IMAGE" "$node"
    load_image "$COREDNS_IMAGE" "$node"
  done
  for node in $(node_names); do
    wait_for "node $node to register" 120 k get node "$node" \
      || { docker exec "$node" tail -n 30 /var/log/kiln/kubelet.log >&2; die "node $node did not register"; }
  done
}

# remove_node NODE: the node's container, its Node object, its /var volume
# and its cgroups. Its pods end: what a spot reclaim does.
remove_node() {
  local node=$1
  log "removing node $node"
  docker rm -f "$node" >/dev/null 2>&1 || true
  k delete node "$node" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  docker volume rm "$node-var" >/dev/null 2>&1 || true
  remove_cgroups "$node"
}

remove_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h/kiln-$1" ]] || continue
    find "$h/kiln-$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# load_image IMAGE[,TAG...] NODE...: imports IMAGE from the Docker engine into
# each node's containerd (namespace k8s.io), with every tag of the
# comma-separated list (all of one image: one archive, one import), unless
# that node has it already. One import per node at a time (a lock per node):
# a second caller of the same image, such as test-e2e while make test's
# prefetch loads it, waits and then finds the node's marker.
load_image() {
  local image tags
  IFS=, read -r -a tags <<<"$1"; shift
  image=${tags[0]}
  local id marker archive node
  id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "image $image is not built"
  marker="/var/lib/kiln/images/$(tr '/:,' '___' <<<"${tags[*]}" | tr ' ' ,)"
  mkdir -p "$KILN_CACHE/tmp"
  # An archive is several GiB (the PyTorch image): one left by a load that
  # was killed (make test stops its prefetch so) would fill the disk, so
  # the archive goes on TERM and INT too, and any older than an hour (no
  # load takes that long) is removed first.
  find "$KILN_CACHE/tmp" -maxdepth 1 -name 'image.*.tar' -mmin +60 -delete 2>/dev/null || true
  # Saved on the first node that lacks the image, reused for the others.
  archive=$(mktemp "$KILN_CACHE/tmp/image.XXXXXX.tar")
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "rm -f '$archive'; exit 143" TERM INT
  for node in "$@"; do
    if ! with_lock "$CLUSTER_DIR/locks/load-$node" _load_into "$node" "$id" "$marker" "$archive" "${tags[@]}"; then
      rm -f "$archive"
      die "loading $image into $node failed"
    fi
  done
  rm -f "$archive"
  trap - TERM INT
}

_load_into() {
  local node=$1 id=$2 marker=$3 archive=$4 out; shift 4
  if [[ "$(docker exec "$node" cat "$marker" 2>/dev/null)" == "$id" ]]; then return 0; fi
  if [[ ! -s "$archive" ]]; then
    docker save "$@" -o "$archive" || { echo "docker save $* failed" >&2; return 1; }
  fi
  log "loading $* into $node"
  # ctr warns on every call that cgroup v1 is deprecated: keep its output
  # for when the import fails.
  if ! out=$(docker exec -i "$node" ctr -n k8s.io images import --local --discard-unpacked-layers - <"$archive" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
  docker exec "$node" sh -c "mkdir -p /var/lib/kiln/images && echo '$id' >'$marker'"
}
