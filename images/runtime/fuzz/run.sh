#!/usr/bin/env bash
# Fuzzes the request parsers of kiln-runtime serve with cargo fuzz
# (libFuzzer), SECONDS per target (default 120), and prints each target's
# runs. cargo-fuzz is built once under $KILN_CACHE/bin; on a stable
# toolchain RUSTC_BOOTSTRAP lets it pass its unstable flags. Crashes are
# left in fuzz/artifacts/<target>/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../../e2e/tools/common.sh
source "$here/../../../e2e/tools/common.sh"
seconds="${1:-120}"
version=0.13.1
bin="$KILN_CACHE/bin/cargo-fuzz-$version/bin"
if [[ ! -x "$bin/cargo-fuzz" ]]; then
  log "building cargo-fuzz $version (cached in $bin)"
  CARGO_TARGET_DIR="$KILN_CACHE/cargo-fuzz-build" cargo install -q --locked \
    --root "$KILN_CACHE/bin/cargo-fuzz-$version" cargo-fuzz --version "$version" >&2
fi
export PATH="$bin:$PATH" RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$KILN_CACHE/cargo-target-fuzz"
cd "$here/.."
for target in sagemaker v2; do
  mkdir -p "fuzz/corpus/$target"
  log "fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 \
    | tee "$KILN_CACHE/fuzz-$target.log" | grep -E "^(stat::number_of_executed_units|stat::peak_rss|Done|==|SUMMARY)|panicked" || true
  grep -q "^Done" "$KILN_CACHE/fuzz-$target.log" || die "fuzz target $target failed: see $KILN_CACHE/fuzz-$target.log"
done
