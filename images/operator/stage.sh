#!/usr/bin/env bash
# Fills the build context of the operator image: builds kiln-operator and
# kiln-router on the host (release profile) and copies them next to the
# Dockerfile.
#   stage.sh CONTEXT_DIR      run by images/build.sh from the repository root
set -euo pipefail
CONTEXT=$1
CARGO=${CARGO:-cargo}
"$CARGO" build --release --locked -p kiln-operator -p kiln-router >&2
TARGET_DIR=$("$CARGO" metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
install -m 0755 "$TARGET_DIR/release/kiln-operator" "$CONTEXT/kiln-operator"
install -m 0755 "$TARGET_DIR/release/kiln-router" "$CONTEXT/kiln-router"
