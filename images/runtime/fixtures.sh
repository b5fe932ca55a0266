#!/usr/bin/env bash
# Writes the scikit-learn fixtures once (keyed by the script's content) under
# $KILN_CACHE and prints their folder, for KILN_FIXTURES.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../e2e/tools/common.sh"
eval "$("$here/torch-env.sh" --with-sklearn)"
key="$(cat "$here/fixtures/make_datasets.py" "$here/torch-env.sh" | sha256sum | cut -c1-12)"
out="$KILN_CACHE/fixtures/sklearn-$key"
write() { "$KILN_TORCH_VENV/bin/python" "$here/fixtures/make_datasets.py" "$1" >&2; }
cache_entry "$out" baselines.json "scikit-learn fixtures $key" write
printf '%s\n' "$out"
