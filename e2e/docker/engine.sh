#!/usr/bin/env bash
# Starts (or reuses) the project's own Docker engine: Debian's docker.io with
# its own socket, data root, exec root and pid file, so it never touches
# another engine on the machine. Prints `export DOCKER_HOST=...` for eval.
#   engine.sh up     install if needed, start if not running, print DOCKER_HOST
#   engine.sh down   stop the engine (images stay in the data root)
#   engine.sh env    print DOCKER_HOST only
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh"

RUN_DIR=${KILN_DOCKER_RUN:-/run/kiln-docker}
DATA_ROOT=${KILN_DOCKER_DATA:-$KILN_CACHE/docker}
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
export DOCKER_HOST="unix://$SOCK"

running() { [[ -S "$SOCK" ]] && docker version >/dev/null 2>&1; }

up() {
  apt_ensure dockerd docker.io
  apt_ensure iptables iptables
  if ! running; then
    mkdir -p "$RUN_DIR" "$DATA_ROOT"
    # Parallel callers start one engine: the others wait for it.
    with_lock "$RUN_DIR/engine.lock" start
  fi
  printf 'export DOCKER_HOST=%s\n' "$DOCKER_HOST"
}

start() {
  running && return 0
  log "starting dockerd (socket $SOCK, data root $DATA_ROOT)"
  # The default bridge gets an explicit private range so that nothing this
  # engine creates overlaps the cluster's pod or service ranges.
  # setsid: the engine is in a session of its own, so a Ctrl-C of the command
  # that started it, or the end of that command's process group, leaves it
  # running.
  setsid nohup dockerd --host "unix://$SOCK" --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
    --pidfile "$PIDFILE" --bip 172.30.0.1/24 --default-address-pool base=172.31.0.0/16,size=24 \
    >"$RUN_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 60); do
    running && return 0
    sleep 1
  done
  tail -n 30 "$RUN_DIR/dockerd.log" >&2
  die "dockerd did not come up in 60 s (log: $RUN_DIR/dockerd.log)"
}

down() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid; pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  env) printf 'export DOCKER_HOST=%s\n' "$DOCKER_HOST" ;;
  *) die "usage: $0 up|down|env" ;;
esac
