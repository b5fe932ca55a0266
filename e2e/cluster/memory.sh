# shellcheck shell=bash
# `cluster.sh memory`: what the running cluster costs the machine in memory,
# per component, as PSS (proportional set size: a page shared by several
# processes, such as the text of four kubelets, is split between them, so
# the total is what the machine really spends) and as RSS. Sourced by
# e2e/cluster.sh.

# mem_of PID...: "PSS RSS" in KiB, summed over the live processes given.
mem_of() {
  local pid pss=0 rss=0 p r
  for pid in "$@"; do
    [[ -r "/proc/$pid/smaps_rollup" ]] || continue
    p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    r=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    pss=$((pss + ${p:-0})); rss=$((rss + ${r:-0}))
  done
  echo "$pss $rss"
}

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# The process and its descendants.
tree_pids() {
  local pid=$1 child
  echo "$pid"
  for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do tree_pids "$child"; done
}

cmd_memory() {
  docker_up
  local rows=() name pids pid comm
  for name in "${CONTROL_PLANE[@]}" seaweedfs kwok; do
    pid_alive "$name" && rows+=("host  $name|$(cat "$RUN_DIR/$name.pid")")
  done
  # Inside the nodes: every process of every node container's process tree
  # (pods included: their containers' shims hang under the node's init), by
  # program.
  local node_pids init
  node_pids=$(for name in $(cluster_containers); do
    init=$(docker inspect -f '{{.State.Pid}}' "$name" 2>/dev/null) || continue
    [[ "$init" != 0 ]] || continue
    for pid in $(tree_pids "$init"); do
      printf '%s %s\n' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null || echo gone)"
    done
  done)
  for comm in $(awk '{print $2}' <<<"$node_pids" | sort -u); do
    pids=$(awk -v c="$comm" '$2 == c {print $1}' <<<"$node_pids" | tr '\n' ' ')
    rows+=("nodes $comm ($(wc -w <<<"$pids"))|$pids")
  done
  # The Docker engine and its containerd (which runs the node containers).
  # Its tree holds the node containers' processes too: those are counted above.
  if [[ -f /run/kiln-docker/dockerd.pid ]]; then
    rows+=("engine dockerd, containerd, shims|$(tree_pids "$(cat /run/kiln-docker/dockerd.pid)" \
      | grep -vxF -f <(awk '{print $1}' <<<"$node_pids") | tr '\n' ' ')")
  fi
  local row total_pss=0 total_rss=0 pss rss
  printf '%-44s %10s %10s\n' "component" "PSS MiB" "RSS MiB"
  for row in "${rows[@]}"; do
    # shellcheck disable=SC2086 # a list of pids
    read -r pss rss < <(mem_of ${row#*|})
    total_pss=$((total_pss + pss)); total_rss=$((total_rss + rss))
    printf '%-44s %10.1f %10.1f\n' "${row%%|*}" "$(mib "$pss")" "$(mib "$rss")"
  done
  printf '%-44s %10.1f %10.1f\n' "total" "$(mib "$total_pss")" "$(mib "$total_rss")"
}
