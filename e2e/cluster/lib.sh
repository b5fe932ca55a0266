# shellcheck shell=bash disable=SC2034,SC2016
# The shared context of the cluster actions: sourced by e2e/cluster.sh, never
# run. It reads the cluster config (e2e/cluster.yaml or $KILN_CLUSTER_CONFIG)
# once and names every path, address and image the actions use.
#
# Layout of a cluster's state, outside the checkout:
#   $CLUSTER_DIR/kubeconfig         admin kubeconfig (host side, https://127.0.0.1:PORT)
#   $CLUSTER_DIR/pki/               CA, serving and client certificates, SA keys
#   $CLUSTER_DIR/logs/              control-plane and S3 logs (one file per process)
#   $CLUSTER_DIR/run/               pid files of the control-plane processes
#   $CLUSTER_DIR/etcd/              etcd's data
#   $CLUSTER_DIR/nodes/NODE/        each node's /etc/kubernetes (certs, kubelet config)
#   $CLUSTER_DIR/s3/                SeaweedFS data and the S3 credentials
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$E2E_DIR/tools/common.sh"

CONFIG=${KILN_CLUSTER_CONFIG:-$E2E_DIR/cluster.yaml}
[[ -f "$CONFIG" ]] || die "cluster config $CONFIG not found"
apt_ensure yq yq
apt_ensure jq jq
apt_ensure openssl openssl
apt_ensure curl curl

# cfg QUERY: one value of the config (jq syntax), empty when absent.
cfg() { yq -r "$1 // empty" "$CONFIG"; }

[[ "$(cfg .apiVersion)" == e2e.kiln.dev/v1alpha1 ]] \
  || die "$CONFIG: apiVersion must be e2e.kiln.dev/v1alpha1"
CLUSTER_NAME=$(cfg .name)
[[ "$CLUSTER_NAME" =~ ^[a-z][a-z0-9-]*$ ]] || die "$CONFIG: name must be a DNS label"
CLUSTER_DIR="$KILN_CACHE/cluster/$CLUSTER_NAME"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
PKI="$CLUSTER_DIR/pki"
LOG_DIR="$CLUSTER_DIR/logs"
RUN_DIR="$CLUSTER_DIR/run"

NODE_SUBNET=$(cfg .networking.nodeSubnet)
POD_SUBNET=$(cfg .networking.podSubnet)
NODE_CIDR_MASK=$(cfg .networking.nodeCIDRMaskSize)
SERVICE_SUBNET=$(cfg .networking.serviceSubnet)
DNS_IP=$(cfg .networking.dnsIP)
API_PORT=$(cfg .networking.apiServerPort)
CLUSTER_DOMAIN=$(cfg .networking.clusterDomain)
[[ "$NODE_SUBNET" =~ ^([0-9]+)\.([0-9]+)\.0\.0/16$ ]] || die "networking.nodeSubnet must be a /16"
NODE_NET_PREFIX="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
# The host's address on the node network: the control plane and S3 listen there.
HOST_IP="$NODE_NET_PREFIX.0.1"
[[ "$SERVICE_SUBNET" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/ ]] || die "networking.serviceSubnet must end in .0/N"
KUBERNETES_SERVICE_IP="${BASH_REMATCH[1]}.1"
DOCKER_NETWORK="$CLUSTER_NAME"
ETCD_CLIENT_PORT=${KILN_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
S3_PORT=$(cfg .s3.port)
S3_BUCKET=$(cfg .s3.bucket)
S3_SECRET=$(cfg .s3.secretName)

# Images the cluster itself needs in every node.
PAUSE_IMAGE=kiln/pause:3.10
COREDNS_IMAGE=kiln/coredns:v1.15.0
BASE_IMAGE=kiln/debian:bookworm

# Node list: one line per node, "NAME POOL INDEX IP GPUS", in config order.
# Node IPs are fixed (.1.10 upwards) so that routes survive restarts.
nodes() {
  local i=0 pool count gpus n
  while read -r pool count gpus; do
    for ((n = 0; n < count; n++)); do
      printf '%s %s %s %s %s\n' "$CLUSTER_NAME-$pool-$n" "$pool" "$i" "$NODE_NET_PREFIX.1.$((10 + i))" "$gpus"
      i=$((i + 1))
    done
  done < <(yq -r '.pools[] | "\(.name) \(.nodes) \(.gpus // 0)"' "$CONFIG")
}
node_names() { nodes | cut -d' ' -f1; }
# pool_labels POOL / pool_taints POOL: comma-separated, as kubelet flags take them.
pool_labels() {
  yq -r --arg p "$1" '.pools[] | select(.name == $p) | .labels // {} | to_entries | map("\(.key)=\(.value)") | join(",")' "$CONFIG"
}
pool_taints() {
  yq -r --arg p "$1" '.pools[] | select(.name == $p) | .taints // [] | map("\(.key)=\(.value // ""):\(.effect)") | join(",")' "$CONFIG"
}

# kwok's fake nodes are on when the config or KILN_KWOK=1 says so.
kwok_enabled() { [[ "${KILN_KWOK:-}" == 1 || "$(cfg .kwok.enabled)" == true ]]; }

# Binaries: built once per version, paths set by tools/all.sh (kwok only when
# it is on).
load_tools() {
  [[ -n "${KILN_TOOLS_LOADED:-}" ]] && return 0
  local out args=()
  if kwok_enabled; then args=(--kwok); fi
  out=$("$E2E_DIR/tools/all.sh" "${args[@]}") || die "building the cluster's binaries failed"
  eval "$out"
  KILN_TOOLS_LOADED=1
  export PATH="$KUBERNETES_BIN:$PATH"
}

# k: kubectl as the cluster admin.
k() { "$KUBERNETES_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

docker_up() { eval "$("$E2E_DIR/docker/engine.sh" up)"; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND once a second.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 1
  done
}

# pid_alive NAME: the process NAME started runs (its pid file names a live
# process running the recorded program, not a reused pid).
pid_alive() {
  local pid
  [[ -f "$RUN_DIR/$1.pid" && -f "$RUN_DIR/$1.cmd" ]] || return 1
  pid=$(cat "$RUN_DIR/$1.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" == "$(tr '\0' '\n' <"$RUN_DIR/$1.cmd" | head -n1)" ]]
}

# start_process NAME COMMAND...: starts COMMAND in the background, detached,
# logging to $LOG_DIR/NAME.log, unless it already runs.
start_process() {
  local name=$1; shift
  local want
  want=$(printf '%s\0' "$@" | tr '\0' ' ')
  if pid_alive "$name"; then
    [[ "$(tr '\0' ' ' <"/proc/$(cat "$RUN_DIR/$name.pid")/cmdline")" == "$want" ]] && return 0
    log "restarting $name: its command line changed"
    stop_process "$name"
  fi
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  log "starting $name (log: $LOG_DIR/$name.log)"
  [[ -f "$LOG_DIR/$name.log" ]] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.1"
  # 9>&-: a daemon must not inherit (and so keep holding) the cluster lock.
  setsid nohup "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN_DIR/$name.pid"
  printf '%s\0' "$@" >"$RUN_DIR/$name.cmd"
}

# wait_process NAME SECONDS COMMAND...: waits until COMMAND succeeds; fails at
# once, with the end of its log, when process NAME exits meanwhile.
wait_process() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    # kill -0, not pid_alive: a process just started may not have exec'd yet.
    if ! kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name exited (log: $LOG_DIR/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name is not ready after ${timeout}s (log: $LOG_DIR/$name.log)"
    fi
    sleep 1
  done
}

# stop_process NAME: SIGTERM, then SIGKILL after 20 s.
stop_process() {
  local name=$1 pid
  [[ -f "$RUN_DIR/$name.pid" ]] || return 0
  pid=$(cat "$RUN_DIR/$name.pid")
  if pid_alive "$name"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.cmd"
}
