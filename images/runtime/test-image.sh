#!/usr/bin/env bash
# Checks a built runtime image: it runs as a non-root user, `describe` works,
# and `train` fits a tiny k-means job on a mounted /opt/ml and writes a model.
set -euo pipefail
image="${1:?usage: test-image.sh IMAGE}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../e2e/tools/common.sh"
uid="$(docker run --rm --entrypoint id "$image" -u)"
[[ "$uid" != 0 ]] || die "the image runs as root"
docker run --rm "$image" describe kmeans | grep -q '| `k` |' || die "describe kmeans printed no table"
# The job folder travels into the container by docker cp (the engine may not
# share this machine's file system).
ml="$(mktemp -d)"
trap 'rm -rf "$ml"; docker rm -f kiln-runtime-image-test >/dev/null 2>&1 || true' EXIT
mkdir -p "$ml/input/config" "$ml/input/data/train"
echo '{"k": "2"}' > "$ml/input/config/hyperparameters.json"
printf '0,0\n0,1\n10,10\n10,11\n' > "$ml/input/data/train/data.csv"
docker create --name kiln-runtime-image-test "$image" train --algorithm kmeans >/dev/null
docker cp "$ml/input" kiln-runtime-image-test:/opt/ml/ >/dev/null
docker start -a kiln-runtime-image-test | grep -q '"kiln_metric":"train:inertia"' || die "no train:inertia metric"
docker cp kiln-runtime-image-test:/opt/ml/model "$ml/model"
[[ -s "$ml/model/model.json" && -s "$ml/model/model.safetensors" ]] || die "no model artifact"
log "runtime image $image: ok"
