#!/usr/bin/env bash
# Builds the operator image (`images/build.sh operator`) and checks it
# (`make test-images`): tags, non-root user, entrypoint, OCI labels, and that
# the binary runs under the constraints the chart puts on the pod (read-only
# root filesystem, uid 65532, no capabilities, no privilege escalation).
# Prints one line per check and a closing count; exits 1 when any failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source e2e/tools/common.sh

images/build.sh operator
eval "$(e2e/docker/engine.sh up)"

VERSION=$(awk '/^\[/ { p = ($0 == "[workspace.package]") } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/kiln/Chart.yaml)
IMAGE=kiln/operator:dev
# What the chart's pod spec enforces, applied to a plain container.
LOCKED_DOWN=(--rm --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges --network none)

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
passed=0
failed=0
check() { # check NAME COMMAND...: passes when COMMAND exits 0
  local name=$1; shift
  if "$@" >"$OUT" 2>&1; then
    passed=$((passed + 1)); printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1)); printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$OUT" | head -n 20
  fi
}
inspect() { docker image inspect --format "$1" "$IMAGE"; }
equals() { [[ "$1" == "$2" ]] || { printf 'expected %q, got %q\n' "$2" "$1"; return 1; }; }
contains_all() { # contains_all TEXT WORD...
  local text=$1 word; shift
  for word in "$@"; do grep -qF -- "$word" <<<"$text" || { echo "missing $word in: $text"; return 1; }; done
}

check "tags kiln/operator:$VERSION and :dev are the same image" \
  equals "$(docker image inspect --format '{{.Id}}' "kiln/operator:$VERSION")" "$(inspect '{{.Id}}')"
check "the chart's default image (kiln/operator:$APP_VERSION, its appVersion) is built" \
  docker image inspect "kiln/operator:$APP_VERSION"
check "image user is 65532:65532" equals "$(inspect '{{.Config.User}}')" "65532:65532"
check "entrypoint is the operator binary" \
  equals "$(inspect '{{json .Config.Entrypoint}}')" '["/usr/local/bin/kiln-operator"]'
check "OCI labels: version" \
  equals "$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')" "$VERSION"
for label in title revision source licenses; do
  check "OCI labels: $label is set" \
    test -n "$(inspect "{{index .Config.Labels \"org.opencontainers.image.$label\"}}")"
done
check "the container runs as a non-root uid by default" \
  equals "$(docker run --rm --entrypoint /usr/bin/id "$IMAGE" -u)" "65532"
check "the binary is not writable by the user the operator runs as" \
  docker run --rm --entrypoint /bin/sh "$IMAGE" -c 'test ! -w /usr/local/bin/kiln-operator'

# The binary starts (all its libraries resolve) under the pod's constraints.
check "--help exits 0 read-only, as uid 65532, with no capabilities" \
  docker run "${LOCKED_DOWN[@]}" "$IMAGE" --help
help=$(docker run "${LOCKED_DOWN[@]}" "$IMAGE" --help 2>&1 || true)
check "--help lists the flags the chart sets through the environment" contains_all "$help" \
  --metrics-bind-address --health-bind-address --leader-elect --lease-name --lease-namespace \
  --log-format --log-level --watch-namespace
check "--help names the environment variables the chart sets" contains_all "$help" \
  KILN_METRICS_BIND_ADDRESS KILN_HEALTH_BIND_ADDRESS KILN_LEADER_ELECT KILN_LEASE_NAME \
  KILN_LEASE_NAMESPACE KILN_LOG_FORMAT KILN_LOG_LEVEL KILN_WATCH_NAMESPACE
check "--help lists the Endpoint settings the chart sets" contains_all "$help" \
  --runtime-image --router-image --router-replicas KILN_ROUTER_IMAGE KILN_ROUTER_REPLICAS
# The traffic router of Endpoints ships in the same image and starts locked down.
check "kiln-router --help exits 0 read-only, as uid 65532, with no capabilities" \
  docker run "${LOCKED_DOWN[@]}" --entrypoint /usr/local/bin/kiln-router "$IMAGE" --help
check "kiln-router is not writable by the user it runs as" \
  docker run --rm --entrypoint /bin/sh "$IMAGE" -c 'test ! -w /usr/local/bin/kiln-router'

printf 'test-images: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
