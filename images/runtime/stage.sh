#!/usr/bin/env bash
# Stages the CPU runtime image's build context: a release kiln-runtime and
# only the libtorch libraries it loads on a CPU machine.
#
#   images/runtime/stage.sh DIR     # images/build.sh runtime does this, then docker build
#
# The binary is linked against libtorch_cuda.so on purpose (so one build sees
# CUDA where the GPU libraries are present); the CPU image drops that entry
# with patchelf, which leaves libtorch_cpu.so, libc10, libgomp and the two
# small CUDA runtime libraries libtorch_cpu.so itself needs (about 460 MB).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$root/e2e/tools/common.sh"
out="${1:?usage: stage.sh DIR}"
eval "$("$here/torch-env.sh")"
apt_ensure patchelf patchelf

log "building kiln-runtime (release)"
(cd "$root" && cargo build --release --locked -p kiln-runtime >&2)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

rm -rf "$out" && mkdir -p "$out/lib"
cp "$target/release/kiln-runtime" "$out/kiln-runtime"
cp "$here/Dockerfile" "$out/Dockerfile"
for lib in libtorch_cuda.so libc10_cuda.so; do
  patchelf --remove-needed "$lib" "$out/kiln-runtime"
done
patchelf --set-rpath /usr/local/lib/kiln "$out/kiln-runtime"

# Every library the binary loads from the PyTorch install, found by ldd.
LD_LIBRARY_PATH="$KILN_TORCH_LIB" ldd "$out/kiln-runtime" | awk '/=> \// {print $3}' | while read -r path; do
  case "$path" in
    "$KILN_TORCH_VENV"/*) cp -L "$path" "$out/lib/" ;;
  esac
done
for lib in libtorch_cpu.so libc10.so libgomp.so.1 libcudart.so.13 libcupti.so.13; do
  [[ -f "$out/lib/$lib" ]] || die "ldd did not find $lib for the image"
done
if LD_LIBRARY_PATH="$out/lib" ldd "$out/kiln-runtime" | grep -q 'not found'; then
  die "the staged binary misses libraries: $(LD_LIBRARY_PATH="$out/lib" ldd "$out/kiln-runtime" | grep 'not found')"
fi
log "staged $(du -sh "$out" | cut -f1) in $out"
