#!/usr/bin/env bash
# Writes the scikit-learn fixtures once (keyed by the script's content) under
# $KILN_CACHE and prints their folder, for KILN_FIXTURES.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../e2e/tools/common.sh"
eval "$("$here/torch-env.sh" --with-sklearn)"
key="$(cat "$here/fixtures/make_datasets.py" "$here/torch-env.sh" | sha256sum | cut -c1-12)"
out="$KILN_CACHE/fixtures/sklearn-$key"
if [[ ! -f "$out/baselines.json" ]]; then
  log "writing scikit-learn fixtures to $out"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  "$KILN_TORCH_VENV/bin/python" "$here/fixtures/make_datasets.py" "$out.tmp" >&2
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
printf '%s\n' "$out"
