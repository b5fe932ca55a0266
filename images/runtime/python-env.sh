#!/usr/bin/env bash
# Makes (once) a small Python virtual environment under $KILN_CACHE for the
# model server's third-party clients and peers, and prints its python:
#
#   images/runtime/python-env.sh clients   # tritonclient[http,grpc]: the v2 client tests
#   images/runtime/python-env.sh mlserver  # MLServer + scikit-learn: make bench-serve
#   images/runtime/python-env.sh optuna    # Optuna's samplers: make bench-tuning
#
# Each set is pinned and keyed by its versions, so a version bump makes a new
# environment and a warm machine installs nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../e2e/tools/common.sh
source "$here/../../e2e/tools/common.sh"

case "${1:-}" in
  clients) name=tritonclient-2.73.0-grpc; packages=("tritonclient[http,grpc]==2.73.0" "numpy<3") ;;
  # uvloop 0.22 and later refuse asyncio.get_event_loop(), which MLServer
  # 1.7.1 calls in its inference workers.
  mlserver) name=mlserver-1.7.1-uvloop-0.21; packages=("mlserver==1.7.1" "mlserver-sklearn==1.7.1" "scikit-learn==1.7.2" "uvloop==0.21.0") ;;
  optuna) name=optuna-5.1.0-numpy-2.4.6; packages=("optuna==5.1.0" "numpy==2.4.6") ;;
  *) die "usage: $0 clients|mlserver|optuna" ;;
esac
venv="$KILN_CACHE/venv/$name"
make_venv() {
  command -v python3 >/dev/null || die "python3 is not installed"
  python3 -m venv "$1" >&2
  "$1/bin/pip" install -q --disable-pip-version-check "${packages[@]}" >&2 \
    || die "pip install ${packages[*]} failed"
}
cache_in_place "$venv" .ok "python env $name" make_venv
printf '%s\n' "$venv/bin/python"
