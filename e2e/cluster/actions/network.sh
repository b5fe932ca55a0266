# shellcheck shell=bash disable=SC2034
# Actions docker-network and pod-network. The node containers share one Docker
# network with a fixed subnet; the host is its gateway. Pod networking is
# kind's recipe: each node's pods get addresses from the node's podCIDR
# (assigned by the controller-manager) through the ptp and host-local CNI
# plugins, and every node routes each other node's podCIDR to that node; so
# does the host, where the control plane runs.

action_docker_network() {
  docker_up
  if docker network inspect "$DOCKER_NETWORK" >/dev/null 2>&1; then return 0; fi
  log "creating Docker network $DOCKER_NETWORK ($NODE_SUBNET, gateway $HOST_IP)"
  docker network create --driver bridge --subnet "$NODE_SUBNET" --gateway "$HOST_IP" \
    --ip-range "$NODE_NET_PREFIX.1.0/24" \
    --label "kiln.dev/cluster=$CLUSTER_NAME" "$DOCKER_NETWORK" >/dev/null \
    || die "creating Docker network $DOCKER_NETWORK failed"
}

pod_cidr() { k get node "$1" -o jsonpath='{.spec.podCIDR}'; }
has_pod_cidr() { [[ -n "$(pod_cidr "$1")" ]]; }

cni_config() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kiln",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

action_pod_network() {
  local node pool idx ip gpus cidr other oip
  declare -A cidrs=()
  for node in $(node_names); do
    wait_for "a podCIDR for $node" 60 has_pod_cidr "$node" || die "node $node got no podCIDR"
    cidrs[$node]=$(pod_cidr "$node")
  done
  while read -r node pool idx ip gpus; do
    cidr=${cidrs[$node]}
    cni_config "$cidr" | docker exec -i "$node" sh -c \
      'cat >/etc/cni/net.d/.kiln.tmp && mv /etc/cni/net.d/.kiln.tmp /etc/cni/net.d/10-kiln.conflist'
    while read -r other _ _ oip _; do
      [[ "$other" == "$node" ]] && continue
      docker exec "$node" ip route replace "${cidrs[$other]}" via "$oip" \
        || die "adding the route to $other's pods on $node failed"
    done < <(nodes)
    # The control plane runs on the host: the API server reaches pods (its
    # service and pod proxy, webhooks, aggregated APIs) through each node.
    ip route replace "$cidr" via "$ip" \
      || die "adding the host's route to $node's pods failed"
  done < <(nodes)
}
