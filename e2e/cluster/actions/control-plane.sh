# shellcheck shell=bash disable=SC2034
# Action control-plane: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler as processes on the host, each logging to $LOG_DIR/NAME.log.
# The apiserver listens on every host address: the host tools use
# 127.0.0.1, nodes and pods use the node network's gateway ($HOST_IP).

CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler)

apiserver_ready() { k get --raw /readyz >/dev/null 2>&1; }

action_control_plane() {
  mkdir -p "$CLUSTER_DIR/etcd"
  start_process etcd "$ETCD" --name "$CLUSTER_NAME" --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$CLUSTER_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --quota-backend-bytes 2147483648 --snapshot-count 10000 \
    --log-level warn
  wait_process etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  start_process kube-apiserver "$KUBERNETES_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$HOST_IP" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-cluster-ip-range "$SERVICE_SUBNET" \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,ExtendedResourceToleration \
    --allow-privileged=true --profiling=false --event-ttl 2h \
    --v 1
  wait_process kube-apiserver 180 apiserver_ready

  start_process kube-controller-manager "$KUBERNETES_BIN/kube-controller-manager" \
    --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
    --allocate-node-cidrs=true --cluster-cidr "$POD_SUBNET" --node-cidr-mask-size "$NODE_CIDR_MASK" \
    --service-cluster-ip-range "$SERVICE_SUBNET" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true \
    --v 1
  start_process kube-scheduler "$KUBERNETES_BIN/kube-scheduler" \
    --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false \
    --v 1
  wait_process kube-controller-manager 90 curl -fsSk https://127.0.0.1:10257/healthz
  wait_process kube-scheduler 90 curl -fsSk https://127.0.0.1:10259/healthz
}

stop_control_plane() {
  local i
  for ((i = ${#CONTROL_PLANE[@]} - 1; i >= 0; i--)); do stop_process "${CONTROL_PLANE[i]}"; done
}
