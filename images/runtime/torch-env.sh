#!/usr/bin/env bash
# Prepares the PyTorch 2.11.0 libraries that tch (torch-sys) links against and
# prints the environment a build or run of kiln-runtime needs, as `export` lines:
#
#   eval "$(images/runtime/torch-env.sh)"
#
# The virtual environment lives outside the checkout, under
# $KILN_CACHE/venv/torch-2.11.0, and is made once. Extra packages for the test
# fixtures and the benchmark (scikit-learn, pyarrow) go in the same venv when
# asked for with --with-sklearn.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../e2e/tools/common.sh
source "$here/../../e2e/tools/common.sh"

TORCH_VERSION=2.11.0
SKLEARN_VERSION=1.7.2
PYARROW_VERSION=26.0.1
venv="$KILN_CACHE/venv/torch-$TORCH_VERSION"
with_sklearn=0
for arg in "$@"; do
  case $arg in
    --with-sklearn) with_sklearn=1 ;;
    *) die "unknown argument $arg" ;;
  esac
done

# make_venv DIR: the environment with torch (about 5 GB, once).
make_venv() {
  command -v python3 >/dev/null || die "python3 is not installed"
  python3 -m venv "$1" >&2
  "$1/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" >&2 \
    || die "pip install torch==$TORCH_VERSION failed"
}
# add_sklearn: scikit-learn and pyarrow into the same environment, under the
# environment's lock (two pip runs in one environment corrupt it).
add_sklearn() {
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "scikit-learn==$SKLEARN_VERSION" "pyarrow==$PYARROW_VERSION" >&2 || die "pip install scikit-learn failed"
  touch "$venv/.sklearn-ok"
}
cache_in_place "$venv" .torch-ok "torch $TORCH_VERSION venv" make_venv
if [[ $with_sklearn == 1 ]]; then
  cached "scikit-learn $SKLEARN_VERSION in the torch venv" "$venv.lock" _exists "$venv/.sklearn-ok" add_sklearn
fi

torch_lib="$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
printf 'export LIBTORCH_USE_PYTORCH=1\n'
# torch-sys asks `python` (in a virtual environment) where torch is.
printf 'export VIRTUAL_ENV=%q\n' "$venv"
printf 'export PATH=%q\n' "$venv/bin:$PATH"
printf 'export KILN_TORCH_VENV=%q\n' "$venv"
printf 'export KILN_TORCH_LIB=%q\n' "$torch_lib"
printf 'export LD_LIBRARY_PATH=%q\n' "$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
