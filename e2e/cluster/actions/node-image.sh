# shellcheck shell=bash disable=SC2034
# Action node-image: the image every node container runs, and the small
# images every node needs before any pod (the pod sandbox and CoreDNS), built
# with the project's Docker engine from binaries built on the host. An image
# is rebuilt only when its inputs change: its tag carries their hash.

NODE_IMAGE=""

# build_context DIR: a docker build context from files listed as "SRC DEST".
copy_into() {
  local dir=$1 src dest
  while read -r src dest; do
    mkdir -p "$(dirname "$dir/$dest")"
    cp -L "$src" "$dir/$dest"
  done
}

action_node_image() {
  docker_up
  "$E2E_DIR/docker/base-image.sh" "$BASE_IMAGE"
  local node_dir="$E2E_DIR/cluster/node" hash
  hash=$(printf '%s\n' "$KUBERNETES_BIN" "$CONTAINERD_BIN" "$CNI_BIN" "$NODE_PROGRAMS" \
    "$(inputs_hash "$node_dir")" | sha256sum | cut -c1-12)
  NODE_IMAGE="kiln/node:$hash"
  image_entry "$NODE_IMAGE" "" "node image $NODE_IMAGE" build_node_image "$node_dir"
  scratch_image "$PAUSE_IMAGE" "$NODE_PROGRAMS/pause" /pause
  scratch_image "$COREDNS_IMAGE" "$COREDNS" /coredns
}

# build_node_image NODE_DIR: builds $NODE_IMAGE from the node folder and the
# binaries built on the host.
build_node_image() {
  local node_dir=$1 ctx
  mkdir -p "$KILN_CACHE/tmp"
  ctx=$(mktemp -d "$KILN_CACHE/tmp/node-image.XXXXXX")
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$ctx'" EXIT
  copy_into "$ctx" <<EOF
$node_dir/Dockerfile Dockerfile
$node_dir/containerd.toml containerd.toml
$node_dir/entrypoint.sh entrypoint.sh
$KUBERNETES_BIN/kubelet bin/kubelet
$KUBERNETES_BIN/kube-proxy bin/kube-proxy
$CONTAINERD_BIN/containerd bin/containerd
$CONTAINERD_BIN/containerd-shim-runc-v2 bin/containerd-shim-runc-v2
$CONTAINERD_BIN/ctr bin/ctr
$NODE_PROGRAMS/fake-gpu-plugin bin/fake-gpu-plugin
$CNI_BIN/ptp cni/ptp
$CNI_BIN/bridge cni/bridge
$CNI_BIN/host-local cni/host-local
$CNI_BIN/loopback cni/loopback
$CNI_BIN/portmap cni/portmap
EOF
  docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$NODE_IMAGE" "$ctx" >/dev/null \
    || die "building $NODE_IMAGE failed"
  rm -rf "$ctx"
  trap - EXIT
}

# scratch_image TAG BINARY PATH: an image FROM scratch holding one static binary.
scratch_image() {
  image_entry "$1" "" "image $1" build_scratch_image "$@"
}

build_scratch_image() {
  local tag=$1 bin=$2 path=$3 ctx
  mkdir -p "$KILN_CACHE/tmp"
  ctx=$(mktemp -d "$KILN_CACHE/tmp/image.XXXXXX")
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$ctx'" EXIT
  cp -L "$bin" "$ctx/${path#/}"
  printf 'FROM scratch\nCOPY %s %s\nENTRYPOINT ["%s"]\n' "${path#/}" "$path" "$path" >"$ctx/Dockerfile"
  docker build -q -t "$tag" "$ctx" >/dev/null || die "building $tag failed"
  rm -rf "$ctx"
  trap - EXIT
}
