# shellcheck shell=bash
# Shared settings for the tool scripts: sourced, never run.
# Every build product lives under KILN_CACHE, outside the checkout, keyed by
# version, so a warm machine rebuilds nothing and `git clean` loses nothing.
#
# Tests and make targets run in parallel, so every cache entry is built under
# an exclusive lock of its own (flock on ENTRY.lock): the first caller builds,
# the others wait, re-check and reuse. An entry is built in a fresh folder
# beside it and published with one rename, so nobody ever sees half of one.
KILN_CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
export KILN_CACHE
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="${GOFLAGS:--trimpath}"
export GOPATH="${GOPATH:-$KILN_CACHE/gopath}"
export GOMODCACHE="${GOMODCACHE:-$KILN_CACHE/gomod}"
export GOCACHE="${GOCACHE:-$KILN_CACHE/gobuild}"
# pip's download cache, shared by every virtual environment and image build:
# a wheel is fetched once per machine.
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$KILN_CACHE/pip-cache}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# How long a caller waits for another's build of the same entry (a cold
# Kubernetes build on a loaded 2-core machine takes over 20 minutes).
KILN_LOCK_WAIT=${KILN_LOCK_WAIT:-3600}

# timing_record WHAT STATUS [SECONDS]: one row of `make test`'s timing summary
# (e2e/tools/timing.sh), when KILN_TIMINGS names its file.
timing_record() {
  [[ -n "${KILN_TIMINGS:-}" ]] || return 0
  mkdir -p "$(dirname "$KILN_TIMINGS")"
  printf 'build\t%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$KILN_TIMINGS"
}

# with_lock LOCKFILE COMMAND...: runs COMMAND holding an exclusive flock on
# LOCKFILE, waiting up to KILN_LOCK_WAIT seconds for it. COMMAND runs in a
# subshell that has closed the lock's descriptor, so a daemon it starts (the
# Docker engine, say) does not keep holding the lock.
with_lock() {
  local lockfile=$1 fd rc=0; shift
  mkdir -p "$(dirname "$lockfile")"
  exec {fd}>>"$lockfile"
  if ! flock -n "$fd"; then
    log "waiting for $lockfile: another process is building the same entry"
    flock -w "$KILN_LOCK_WAIT" "$fd" || { exec {fd}>&-; die "$lockfile is still held after ${KILN_LOCK_WAIT}s"; }
  fi
  set +e
  (set -e; exec {fd}>&-; "$@")
  rc=$?
  set -e
  exec {fd}>&-
  return "$rc"
}

# cached WHAT LOCKFILE CHECK KEY BUILD [ARGS...]: the one way a cache entry
# is made. `CHECK KEY` says whether the entry is complete; when it is not,
# under LOCKFILE, CHECK runs again (another caller may have built it while
# this one waited) and only then `BUILD ARGS...`, after which CHECK must
# pass. WHAT names the entry in the log and in the timing summary: cached,
# cached after waiting for another build, or built in N seconds.
cached() {
  local what=$1 lockfile=$2 check=$3 key=$4 rc; shift 4
  if "$check" "$key"; then timing_record "$what" cached; return 0; fi
  # Not `with_lock ... || die`: inside a `||` list bash ignores `set -e` in
  # everything the builder runs.
  set +e
  with_lock "$lockfile" _cached_build "$SECONDS" "$what" "$check" "$key" "$@"
  rc=$?
  set -e
  ((rc == 0)) || die "building $what failed"
}

_cached_build() {
  local start=$1 what=$2 check=$3 key=$4; shift 4
  if "$check" "$key"; then
    timing_record "$what" "cached (waited $((SECONDS - start)) s)"
    return 0
  fi
  log "building $what"
  # Explicit checks: a caller may run all this where bash ignores `set -e`.
  "$@" || return 1
  "$check" "$key" || die "building $what did not produce $key"
  timing_record "$what" built $((SECONDS - start))
}

_exists() { [[ -e "$1" ]]; }
# _image_current "TAG KEY": TAG exists and, where KEY is given, carries the
# label dev.kiln.inputs=KEY.
_image_current() {
  local tag=${1%% *} key="" got
  [[ "$1" == *" "* ]] && key=${1#* }
  got=$(docker image inspect -f '{{index .Config.Labels "dev.kiln.inputs"}}' "$tag" 2>/dev/null) || return 1
  [[ -z "$key" || "$got" == "$key" ]]
}

# cache_entry DIR MARKER WHAT BUILDER [ARGS...]: the folder DIR, complete when
# DIR/MARKER exists. `BUILDER ARGS... TMP` fills TMP, a fresh folder beside
# DIR, which is then renamed to DIR; a failed build leaves nothing behind.
cache_entry() {
  local dir=$1 marker=$2 what=$3; shift 3
  cached "$what" "$dir.lock" _exists "$dir/$marker" _publish_dir "$dir" "$@"
}

_publish_dir() {
  local dir=$1 tmp; shift
  tmp=$(mktemp -d "$dir.tmp.XXXXXX")
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$tmp'" EXIT
  "$@" "$tmp" || { rm -rf "$tmp"; return 1; }
  rm -rf "$dir" && mv "$tmp" "$dir" || return 1
  trap - EXIT
}

# cache_in_place DIR MARKER WHAT BUILDER [ARGS...]: as cache_entry, for a
# folder that cannot move once made (a Python virtual environment records its
# own path): an incomplete DIR is removed, `BUILDER ARGS... DIR` makes it
# anew, and MARKER is written last.
cache_in_place() {
  local dir=$1 marker=$2 what=$3; shift 3
  cached "$what" "$dir.lock" _exists "$dir/$marker" _make_in_place "$dir" "$marker" "$@"
}

_make_in_place() {
  local dir=$1 marker=$2; shift 2
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  "$@" "$dir" || return 1
  touch "$dir/$marker"
}

# image_entry TAG KEY WHAT BUILDER [ARGS...]: a Docker image as a cache entry;
# the tag is its marker (docker tags an image only once its build is whole).
# A KEY (a hash of what the image is made from) must also match the image's
# label dev.kiln.inputs, which BUILDER sets (`docker build --label`), so that
# a changed input rebuilds an image whose tag stays the same; an empty KEY
# is for tags that carry their inputs' hash already. The lock lives under
# $KILN_CACHE/locks. Needs DOCKER_HOST (engine.sh up).
image_entry() {
  local tag=$1 key=$2 what=$3; shift 3
  cached "$what" "$KILN_CACHE/locks/image-$(tr '/:' '__' <<<"$tag").lock" _image_current "$tag${key:+ $key}" "$@"
}

# inputs_hash DIR...: a short hash of the files under each DIR (their paths
# relative to it, and their contents), for image keys: the same wherever the
# checkout lies.
inputs_hash() {
  local dir
  for dir in "$@"; do
    (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
  done | sha256sum | cut -c1-12
}

# go_install NAME VERSION PACKAGE@VERSION [LDFLAGS]
# Builds one Go command into $KILN_CACHE/bin/NAME-VERSION/NAME once and prints its path.
go_install() {
  local name=$1 version=$2 pkg=$3 ldflags=${4:-}
  local dir="$KILN_CACHE/bin/$name-$version"
  cache_entry "$dir" "$name" "$name $version" _go_install "$pkg" "$ldflags"
  printf '%s\n' "$dir/$name"
}

# go_install_set NAME VERSION LDFLAGS PACKAGE@VERSION...
# Builds several commands of one module into $KILN_CACHE/bin/NAME-VERSION/ once
# (all or none) and prints that folder.
go_install_set() {
  local name=$1 version=$2 ldflags=$3; shift 3
  local dir="$KILN_CACHE/bin/$name-$version"
  cache_entry "$dir" .complete "$name $version" _go_install_set "$ldflags" "$@"
  printf '%s\n' "$dir"
}

# _go_install PACKAGE LDFLAGS OUT / _go_install_set LDFLAGS PACKAGE... OUT
_go_install() {
  command -v go >/dev/null || die "go is not installed"
  CGO_ENABLED=0 GOBIN="$3" go install -ldflags "-s -w $2" "$1" >&2 || die "go install $1 failed"
}
_go_install_set() {
  local ldflags=$1 out=${*: -1}; shift
  command -v go >/dev/null || die "go is not installed"
  CGO_ENABLED=0 GOBIN="$out" go install -ldflags "-s -w $ldflags" "${@:1:$#-1}" >&2 \
    || die "go install ${*:1:$#-1} failed"
  touch "$out/.complete"
}

# apt_ensure CMD PACKAGE...: installs Debian packages when CMD is missing,
# one apt-get at a time (dpkg takes its own lock and fails a second caller).
apt_ensure() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  with_lock "$KILN_CACHE/locks/apt.lock" _apt_install "$cmd" "$@"
}

_apt_install() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  log "installing $* from Debian"
  if [[ ! -f "$KILN_CACHE/.apt-updated" ]] || [[ -n "$(find "$KILN_CACHE/.apt-updated" -mmin +720)" ]]; then
    apt-get update -qq >&2 && mkdir -p "$KILN_CACHE" && touch "$KILN_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}
