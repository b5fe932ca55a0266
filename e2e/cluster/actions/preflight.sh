# shellcheck shell=bash
# Action preflight: before anything is started, check what the local
# cluster needs from the host, and fail with a message that names the fix.
# Each check prints nothing when it passes. Supported hosts: see README.md,
# "The local cluster".

PREFLIGHT_FAILED=()

preflight_fail() { PREFLIGHT_FAILED+=("$1"); }

# version_at_least HAVE WANT: dotted versions, HAVE >= WANT.
version_at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

preflight_root() {
  [[ $EUID == 0 ]] || preflight_fail "not root: the cluster runs a Docker engine, host processes and node containers as root; run as root (for example with sudo)"
}

preflight_cgroup() {
  local fs
  fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo missing)
  case $fs in
    tmpfs) ;; # cgroup v1 (legacy or hybrid): what the nodes are made for
    cgroup2fs) preflight_fail "the host uses cgroup v2 only: the node containers share the host's cgroup v1 hierarchies (one kubelet root per node in each); boot with systemd.unified_cgroup_hierarchy=0, or use a cgroup v1 host" ;;
    *) preflight_fail "no cgroup file system at /sys/fs/cgroup ($fs): mount the cgroup hierarchies" ;;
  esac
}

preflight_go() {
  local have
  if ! have=$(go env GOVERSION 2>/dev/null); then
    preflight_fail "go is not installed: install Go 1.26 or later (the cluster's binaries are built from their Go modules)"
    return
  fi
  have=${have#go}
  version_at_least "$have" 1.26 || preflight_fail "Go $have is too old: install Go 1.26 or later (GOTOOLCHAIN=local: no other toolchain is downloaded)"
}

preflight_python() {
  local have
  if ! have=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    preflight_fail "python3 is not installed: install Python 3.11 (apt-get install python3 python3-venv)"
    return
  fi
  [[ "$have" == 3.11 ]] || preflight_fail "python3 is $have: the PyTorch image's Python is Debian bookworm's 3.11, and its site-packages come from a virtual environment of the host's python3; put a Python 3.11 first on PATH"
  python3 -c 'import ensurepip, venv' 2>/dev/null \
    || preflight_fail "python3 cannot make virtual environments: apt-get install python3-venv"
}

# Free space where the cache lives: a cold cache grows by about 40 GiB
# (toolchains' caches, the torch environment, images, node disks).
preflight_disk() {
  local need=40 free
  [[ -d "$KILN_CACHE/docker" ]] && need=10
  mkdir -p "$KILN_CACHE"
  free=$(df -Pk "$KILN_CACHE" | awk 'NR == 2 {print int($4 / 1048576)}')
  ((free >= need)) || preflight_fail "only $free GiB free under $KILN_CACHE, $need GiB needed: free some space or point KILN_CACHE at a larger disk"
}

preflight_kernel() {
  grep -qw overlay /proc/filesystems \
    || preflight_fail "the kernel has no overlay file system (the nodes' containerd needs it): modprobe overlay"
  [[ -e /proc/sys/net/netfilter/nf_conntrack_max || -d /sys/module/nf_conntrack ]] \
    || preflight_fail "the kernel has no connection tracking (kube-proxy needs it): modprobe nf_conntrack"
  local dev
  for dev in /dev/kmsg /dev/fuse; do
    [[ -e $dev ]] || preflight_fail "$dev is missing (kubelet and the node containers need it): run where $dev exists, e.g. a container started with --device $dev"
  done
}

action_preflight() {
  PREFLIGHT_FAILED=()
  preflight_root
  preflight_cgroup
  preflight_go
  preflight_python
  preflight_disk
  preflight_kernel
  ((${#PREFLIGHT_FAILED[@]} == 0)) && return 0
  local problem
  for problem in "${PREFLIGHT_FAILED[@]}"; do log "preflight: $problem"; done
  die "the host is not ready for the local cluster: ${#PREFLIGHT_FAILED[@]} check(s) failed, each named above with its fix"
}
