#!/usr/bin/env bash
# Tests of the cache helpers in e2e/tools/common.sh (`make test-tools`):
# parallel callers on an empty cache end with one build and every caller
# succeeding; a failed build leaves nothing behind and the next caller builds
# again; a daemon started under a lock does not keep holding it; and a real
# tool script (the node programs, a small Go build) run by several callers at
# once on an empty cache. Prints one line per check and a closing count.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The Go caches stay the machine's (nothing to download again); the cache
# entries under test live in a fresh KILN_CACHE.
source "$ROOT/e2e/tools/common.sh"
export GOMODCACHE GOCACHE GOPATH
export KILN_CACHE="$WORK/cache"
unset KILN_TIMINGS
source "$ROOT/e2e/tools/common.sh"
N=8
passed=0
failed=0
check() { # check NAME COMMAND...: COMMAND runs under `set -e` (not in an `if`, where bash ignores it)
  local name=$1 rc; shift
  set +e
  (set -e; "$@") >"$WORK/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1)); printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1)); printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$WORK/out" | tail -n 20
  fi
}

# A build that takes a while and counts its runs.
slow_build() { # slow_build COUNTER OUT
  echo run >>"$1"
  sleep 1
  echo payload >"$2/data"
}
failing_build() { echo run >>"$1"; echo partial >"$2/data"; return 1; }

# parallel N COMMAND...: runs N copies at once; fails unless all succeed.
parallel() {
  local n=$1 i pids=() bad=0; shift
  for ((i = 0; i < n; i++)); do "$@" >"$WORK/caller.$i" 2>&1 & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || bad=$((bad + 1)); done
  ((bad == 0)) || { echo "$bad of $n callers failed"; cat "$WORK"/caller.*; return 1; }
}
runs() { [[ -f "$1" ]] && wc -l <"$1" || echo 0; }
expect_runs() { # expect_runs COUNTER N
  local got; got=$(runs "$1")
  [[ "$got" == "$2" ]] || { echo "the build ran $got times, expected $2"; return 1; }
}

entry_callers() {
  KILN_TIMINGS="$WORK/timings" parallel "$N" cache_entry "$KILN_CACHE/entry" data "test entry" slow_build "$WORK/entry.runs"
  expect_runs "$WORK/entry.runs" 1
  # The timing summary has one build and N - 1 callers that found it made.
  [[ "$(grep -c $'\ttest entry\tbuilt\t' "$WORK/timings")" == 1 ]] || { cat "$WORK/timings"; return 1; }
  [[ "$(grep -c $'\ttest entry\tcached' "$WORK/timings")" == $((N - 1)) ]] || { cat "$WORK/timings"; return 1; }
  [[ "$(cat "$KILN_CACHE/entry/data")" == payload ]]
  # Nothing but the entry and its lock is left beside it.
  [[ -z "$(find "$KILN_CACHE" -maxdepth 1 -name 'entry.*' ! -name entry.lock)" ]] \
    || { ls -la "$KILN_CACHE"; return 1; }
}
check "$N parallel callers of cache_entry on an empty cache: one build, $N successes" entry_callers

in_place_callers() {
  parallel "$N" cache_in_place "$KILN_CACHE/venv" .ok "test venv" slow_build "$WORK/venv.runs"
  expect_runs "$WORK/venv.runs" 1
  [[ -f "$KILN_CACHE/venv/.ok" && "$(cat "$KILN_CACHE/venv/data")" == payload ]]
}
check "$N parallel callers of cache_in_place on an empty cache: one build, $N successes" in_place_callers

warm_callers() {
  parallel "$N" cache_entry "$KILN_CACHE/entry" data "test entry" slow_build "$WORK/entry.runs"
  expect_runs "$WORK/entry.runs" 1
}
check "callers of a complete entry build nothing" warm_callers

failed_build() {
  local rc
  set +e
  (cache_entry "$KILN_CACHE/broken" data "broken entry" failing_build "$WORK/broken.runs") 2>/dev/null
  rc=$?
  set -e
  ((rc != 0)) || { echo "a failing build succeeded"; return 1; }
  [[ ! -e "$KILN_CACHE/broken" ]] || { echo "a failed build left $KILN_CACHE/broken"; return 1; }
  [[ -z "$(find "$KILN_CACHE" -maxdepth 1 -name 'broken.tmp.*')" ]] || { echo "a failed build left its temporary folder"; return 1; }
  cache_entry "$KILN_CACHE/broken" data "broken entry" slow_build "$WORK/broken.runs"
  expect_runs "$WORK/broken.runs" 2
}
check "a failed build leaves nothing, and the next caller builds again" failed_build

daemon_keeps_no_lock() {
  start_daemon() { sleep 30 >/dev/null 2>&1 & echo $! >"$WORK/daemon.pid"; }
  with_lock "$KILN_CACHE/daemon.lock" start_daemon
  local ok=0
  timeout 5 flock -w 3 "$KILN_CACHE/daemon.lock" true || ok=1
  kill "$(cat "$WORK/daemon.pid")" 2>/dev/null || true
  ((ok == 0)) || { echo "the lock is still held by the daemon started under it"; return 1; }
}
check "a daemon started under a lock does not hold it" daemon_keeps_no_lock

node_programs_callers() {
  parallel 4 "$ROOT/e2e/tools/node-programs.sh"
  local builds; builds=$(cat "$WORK"/caller.* | grep -c 'building node programs' || true)
  [[ "$builds" == 1 ]] || { echo "$builds builds, expected 1"; cat "$WORK"/caller.*; return 1; }
  local paths; paths=$(cat "$WORK"/caller.* | grep -c "^$KILN_CACHE/bin/kiln-node-" || true)
  [[ "$paths" == 4 ]] || { echo "$paths callers printed the path, expected 4"; return 1; }
  [[ -x "$(tail -n1 "$WORK/caller.0")/pause" ]]
}
check "4 parallel callers of e2e/tools/node-programs.sh on an empty cache: one Go build" node_programs_callers

echo "cache helpers: $passed passed, $failed failed"
[[ $failed == 0 ]]
