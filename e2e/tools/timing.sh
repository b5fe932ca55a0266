#!/usr/bin/env bash
# The timing summary of `make test`: every suite and every cached build,
# with "cached" or the seconds it took. Rows are tab-separated lines
# (KIND, NAME, STATUS, SECONDS) appended to $KILN_TIMINGS by the suites
# (below) and by common.sh's cache helpers.
#
#   timing.sh start                  empty the file (the start of a run)
#   timing.sh suite NAME COMMAND...  run COMMAND as suite NAME, recording its time
#   timing.sh summary                print the table
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${KILN_TIMINGS:?KILN_TIMINGS must name the timing file}"

case "${1:-}" in
  start)
    mkdir -p "$(dirname "$KILN_TIMINGS")"
    : >"$KILN_TIMINGS"
    ;;
  suite)
    name=${2:?usage: timing.sh suite NAME COMMAND...}; shift 2
    start=$SECONDS
    status=0
    "$@" || status=$?
    if ((status == 0)); then result=passed; else result=FAILED; fi
    printf 'suite\t%s\t%s\t%s\n' "$name" "$result" $((SECONDS - start)) >>"$KILN_TIMINGS"
    exit "$status"
    ;;
  summary)
    [[ -s "$KILN_TIMINGS" ]] || exit 0
    awk -F'\t' '
      function dur(s) { return s == "" ? "" : sprintf("%d min %02d s", s / 60, s % 60) }
      $1 == "suite" { suites[++ns] = sprintf("  %-46s %-8s %12s", $2, $3, dur($4)); total += $4 }
      $1 == "build" {
        # A build is listed once: where several callers met it, the one that built it wins.
        if (!($2 in seen) || $3 == "built") { if (!($2 in seen)) order[++nb] = $2; seen[$2] = $3; secs[$2] = $4 }
      }
      END {
        print "\nmake test: timing summary"
        printf "  %-46s %-8s %12s\n", "suite", "result", "time"
        for (i = 1; i <= ns; i++) print suites[i]
        printf "  %-46s %-8s %12s\n", "total", "", dur(total)
        printf "  %-46s %s\n", "cached build", "status"
        for (i = 1; i <= nb; i++) {
          n = order[i]
          printf "  %-46s %s\n", n, seen[n] == "built" ? "built in " dur(secs[n]) : seen[n]
        }
      }' "$KILN_TIMINGS"
    ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
