# Shared settings for the tool scripts: sourced, never run.
# Every build product lives under KILN_CACHE, outside the checkout, keyed by
# version, so a warm machine rebuilds nothing and `git clean` loses nothing.
KILN_CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
export KILN_CACHE
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="${GOFLAGS:--trimpath}"
export GOPATH="${GOPATH:-$KILN_CACHE/gopath}"
export GOMODCACHE="${GOMODCACHE:-$KILN_CACHE/gomod}"
export GOCACHE="${GOCACHE:-$KILN_CACHE/gobuild}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_install NAME VERSION PACKAGE@VERSION [LDFLAGS]
# Builds one Go command into $KILN_CACHE/bin/NAME-VERSION/NAME once and prints its path.
go_install() {
  local name=$1 version=$2 pkg=$3 ldflags=${4:-}
  local dir="$KILN_CACHE/bin/$name-$version"
  if [[ ! -x "$dir/$name" ]]; then
    command -v go >/dev/null || die "go is not installed"
    log "building $name $version (cached in $dir)"
    mkdir -p "$dir.tmp"
    CGO_ENABLED=0 GOBIN="$dir.tmp" go install -ldflags "-s -w $ldflags" "$pkg" >&2 \
      || die "go install $pkg failed"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir/$name"
}

# go_install_set NAME VERSION LDFLAGS PACKAGE@VERSION...
# Builds several commands of one module into $KILN_CACHE/bin/NAME-VERSION/ once
# (all or none) and prints that folder.
go_install_set() {
  local name=$1 version=$2 ldflags=$3; shift 3
  local dir="$KILN_CACHE/bin/$name-$version"
  if [[ ! -f "$dir/.complete" ]]; then
    command -v go >/dev/null || die "go is not installed"
    log "building $name $version (cached in $dir)"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    CGO_ENABLED=0 GOBIN="$dir.tmp" go install -ldflags "-s -w $ldflags" "$@" >&2 \
      || die "go install $* failed"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir"
}

# apt_ensure CMD PACKAGE...: installs Debian packages when CMD is missing.
apt_ensure() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  log "installing $* from Debian"
  if [[ ! -f "$KILN_CACHE/.apt-updated" ]] || [[ -n "$(find "$KILN_CACHE/.apt-updated" -mmin +720)" ]]; then
    apt-get update -qq >&2 && mkdir -p "$KILN_CACHE" && touch "$KILN_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}
