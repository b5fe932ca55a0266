#!/usr/bin/env bash
# Builds the CPU runtime image (`images/build.sh runtime`) and checks it
# (`make test-images`): a non-root user, `describe` works under the pod's
# constraints, and `train` fits a tiny k-means job on /opt/ml and writes a
# model. Prints one line per check and a closing count; exits 1 when any failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source e2e/tools/common.sh

images/build.sh runtime
eval "$(e2e/docker/engine.sh up)"
IMAGE=kiln/runtime:dev
LOCKED_DOWN=(--rm --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges --network none)

OUT=$(mktemp)
ML=$(mktemp -d)
trap 'rm -rf "$OUT" "$ML"; docker rm -f kiln-runtime-test >/dev/null 2>&1 || true' EXIT
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
not_root() { [[ "$(docker image inspect --format '{{.Config.User}}' "$IMAGE")" == 65532 ]]; }
describe() { docker run "${LOCKED_DOWN[@]}" --read-only "$IMAGE" describe kmeans | grep -qF '| `k` |'; }
# The job folder travels by docker cp: the engine may not share this file system.
train() {
  mkdir -p "$ML/input/config" "$ML/input/data/train"
  echo '{"k": "2"}' >"$ML/input/config/hyperparameters.json"
  printf '0,0\n0,1\n10,10\n10,11\n' >"$ML/input/data/train/data.csv"
  docker rm -f kiln-runtime-test >/dev/null 2>&1 || true
  docker create --name kiln-runtime-test --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --network none "$IMAGE" train --algorithm kmeans >/dev/null
  docker cp "$ML/input" kiln-runtime-test:/opt/ml/
  docker start -a kiln-runtime-test | tee /dev/stderr | grep -q '"kiln_metric":"train:inertia"'
  docker cp kiln-runtime-test:/opt/ml/model "$ML/model"
  [[ -s "$ML/model/model.json" && -s "$ML/model/model.safetensors" ]]
}
bad_input_fails() {
  docker rm -f kiln-runtime-test >/dev/null 2>&1 || true
  docker create --name kiln-runtime-test --user 65532:65532 --network none "$IMAGE" train --algorithm kmeans >/dev/null
  local code=0
  docker start -a kiln-runtime-test || code=$?
  [[ $code == 2 ]] || { echo "exit code $code, expected 2"; return 1; }
  docker cp kiln-runtime-test:/opt/ml/output/failure "$ML/failure"
  grep -q 'hyperparameter k: required' "$ML/failure"
}

check "runs as uid 65532, not root" not_root
check "describe kmeans under a read-only root, no capabilities" describe
check "train kmeans writes metrics and a model" train
check "a bad job exits 2 with output/failure" bad_input_fails
echo "runtime image: $passed passed, $failed failed"
[[ $failed == 0 ]]
