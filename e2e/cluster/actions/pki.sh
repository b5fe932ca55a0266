# shellcheck shell=bash disable=SC2034
# Action pki: the cluster's certificate authority, the apiserver's serving
# certificate, the client certificates of every component, the
# service-account signing key, and the kubeconfigs made from them. Files that
# exist are kept, so a restarted cluster keeps its identity.

# cert NAME SUBJECT [SAN]: an EC P-256 key and a certificate signed by the CA.
cert() {
  local name=$1 subject=$2 san=${3:-} ext
  [[ -s "$PKI/$name.crt" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig OUT SERVER CERT_NAME: a kubeconfig that authenticates with a
# client certificate of $PKI.
kubeconfig() {
  local out=$1 server=$2 name=$3
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: $CLUSTER_NAME
  context:
    cluster: $CLUSTER_NAME
    user: $name
current-context: $CLUSTER_NAME
EOF
  chmod 600 "$out"
}

action_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [[ ! -s "$PKI/ca.crt" ]]; then
    log "creating the cluster CA in $PKI"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=$CLUSTER_NAME-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  local d=$CLUSTER_DOMAIN
  cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$d,DNS:localhost,IP:127.0.0.1,IP:$HOST_IP,IP:$KUBERNETES_SERVICE_IP"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=kiln-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  if [[ ! -s "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  local local_server="https://127.0.0.1:$API_PORT"
  kubeconfig "$KUBECONFIG_PATH" "$local_server" admin
  kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" "$local_server" controller-manager
  kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" "$local_server" scheduler
}

# node_pki NODE: the node's kubelet and kube-proxy credentials, written into
# the folder mounted as the node's /etc/kubernetes.
node_pki() {
  local node=$1 dir="$CLUSTER_DIR/nodes/$1"
  mkdir -p "$dir/pki"
  cert "node-$node" "/O=system:nodes/CN=system:node:$node"
  cp "$PKI/ca.crt" "$dir/pki/ca.crt"
  local node_server="https://$HOST_IP:$API_PORT"
  kubeconfig "$dir/kubelet.kubeconfig" "$node_server" "node-$node"
  kubeconfig "$dir/kube-proxy.kubeconfig" "$node_server" kube-proxy
}
