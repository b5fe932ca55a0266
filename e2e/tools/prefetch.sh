#!/usr/bin/env bash
# Builds what the e2e suite needs (the cluster's binaries, the e2e and PyTorch
# images), brings the cluster up and loads those images into its nodes, in
# the background while `make test` runs its first suites: the Rust suites
# leave cores idle while they link and wait on their test servers, most of a
# cold Go build or image build is downloads, and loading the 5 GB PyTorch
# image into two nodes is minutes of disk writes. Every
# entry is built under its own lock (common.sh), so test-e2e later finds it
# cached, or waits for the build in progress; a failure here is only logged,
# and the foreground build of the same entry then reports it.
#
#   prefetch.sh start   start the builds (log: .out/prefetch.log); KILN_PREFETCH=0 skips
#   prefetch.sh stop    end them if they still run (the end of make test: pass, fail or Ctrl-C)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/e2e/tools/common.sh"
OUT="$ROOT/.out"
PID="$OUT/prefetch.pid"

running() { [[ -f "$PID" ]] && kill -0 "$(cat "$PID")" 2>/dev/null && grep -q prefetch "/proc/$(cat "$PID")/cmdline" 2>/dev/null; }

case "${1:-}" in
  start)
    [[ "${KILN_PREFETCH:-1}" == 1 ]] || exit 0
    running && exit 0
    mkdir -p "$OUT"
    # Its own session: `stop` ends the whole group, and the group ends with it.
    setsid bash -c '
      set -euo pipefail
      cd "$1"
      start=$SECONDS
      e2e/tools/all.sh >/dev/null
      e2e/images.sh build
      e2e/images.sh build-torch
      e2e/cluster.sh up
      e2e/images.sh load-e2e
      echo "prefetch: done in $((SECONDS - start)) s" >&2
    ' prefetch "$ROOT" >"$OUT/prefetch.log" 2>&1 </dev/null &
    echo $! >"$PID"
    log "prefetch: building the cluster's binaries and the e2e images, and loading them into the cluster, in the background (log: $OUT/prefetch.log)"
    ;;
  stop)
    if running; then
      log "prefetch: still running at the end; stopping it"
      kill -TERM -- "-$(cat "$PID")" 2>/dev/null || true
    fi
    rm -f "$PID"
    ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
