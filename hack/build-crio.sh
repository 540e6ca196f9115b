#!/usr/bin/env bash
# Builds CRI-O's crio and its pinns helper from the Go module proxy, at the
# release pinned below (CRIO_VERSION), into a cache directory keyed on every
# input:
#
#   ${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}/bin/<key>/
#   key = crio-<version>_<go version>-<GOOS>-<GOARCH>_<hash>
#   hash = sha256 of this script, of the go.mod it generates and of the C
#          toolchain linked into both binaries (the C compiler's version, the
#          glibc and libseccomp versions): both are static, so these are
#          inputs of the binaries, not of the host they run on
#
# The release: the module proxy refuses (403) github.com/cri-o/cri-o at most
# versions and at every v1.37.x; it serves v1.36.3, which is what we pin.
# CRI-O 1.36 runs beside Kubernetes 1.37 since both speak CRI v1.
#
# crio is the main package github.com/cri-o/cri-o/cmd/crio. It imports
# cri-o's internal/ packages, so it cannot be copied out (as
# hack/build-flannel.sh does with flannel's main.go): it is built by import
# path from a generated module (go.mod requiring the pinned release and naming
# cmd/crio in a tool directive, with any replace directives of cri-o's own
# go.mod copied in, since a dependency's replaces are ignored; v1.36.3 has
# none). cri-o's go directive is go 1.26.3: an older go switches toolchain as
# GOTOOLCHAIN says (e.g. GOTOOLCHAIN=go1.27.3 fetches that one from the proxy).
#
# It is built like upstream's static release build (nix/derivation.nix):
# cgo, linked with -static, with the build tags in BUILDTAGS:
#   static netgo osusergo   a static binary: Go's resolver and user lookup,
#                           not glibc's NSS;
#   seccomp                 libseccomp (Debian: libseccomp-dev, static
#                           libseccomp.a). Without it crio runs pods asking for
#                           the RuntimeDefault seccomp profile unconfined (a
#                           warning only) and refuses Localhost profiles;
#   containers_image_openpgp  image signature checks in Go, not libgpgme;
#   exclude_graphdriver_btrfs no btrfs storage driver (it needs btrfs headers).
# apparmor (libapparmor; a rootless node cannot load profiles anyway), selinux
# (no longer a build tag of anything crio links), libsubid and sequoia are
# left out. The version is a constant of internal/version; the build date
# and commit are linked in as upstream's Makefile does
# (internal/version.buildDate and .buildCommit): the release's commit time and
# commit hash, as the module proxy reports them (.info), so the output depends
# on the inputs only.
#
# pinns (C, in the module's pinns/) is compiled with ${CC:-gcc} from a copy of
# its sources (the module cache is read-only), with the flags of its Makefile:
# -std=c99 -Os -Wall -Werror -Wextra -static, -O3 for the objects, stripped.
#
# A run whose key is already built does nothing but print the directory.
# The binaries are built into a temporary directory next to it, checked
# (crio --version reports the release, both are statically linked, pinns runs
# and rejects a call without arguments), and renamed into place, so an
# interrupted build never leaves a partial cache entry. Concurrent runs
# serialise on a lock of their own (bin-crio.lock), independent of
# hack/build-k8s.sh's and hack/build-flannel.sh's. The compiles run under
# nice -n 19.
#
#   hack/build-crio.sh [OUTDIR]   build (or reuse) the cache entry; with
#                                 OUTDIR, also copy crio and pinns there
#   hack/build-crio.sh --clean    remove every cached crio build
#
# Progress goes to stderr; stdout is one line: the directory holding crio and
# pinns (OUTDIR if given, else the cache entry).
# Needs: go, a C compiler with glibc's static libraries (gcc, libc6-dev),
# pkg-config, libseccomp-dev, strip and readelf (binutils).
# GOCACHE and GOMODCACHE are left at their defaults.
set -euo pipefail

CRIO_MODULE=github.com/cri-o/cri-o
CRIO_VERSION=v1.36.3
CRIO_PKG=$CRIO_MODULE/cmd/crio
BUILDTAGS=(static netgo osusergo seccomp containers_image_openpgp exclude_graphdriver_btrfs)
PINNS_CFLAGS=(-std=c99 -Os -Wall -Werror -Wextra -static)

GO=${GO:-go}
CC=${CC:-gcc}
CACHE_ROOT=${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}
BIN_ROOT=$CACHE_ROOT/bin
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
BINARIES=(crio pinns)

log() { printf 'build-crio: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

if [ "${1-}" = --clean ]; then
	if [ -d "$BIN_ROOT" ]; then
		exec 9>"$CACHE_ROOT/bin-crio.lock"
		flock 9
		rm -rf "$BIN_ROOT"/crio-* "$BIN_ROOT"/.crio-tmp.*
		log "removed $BIN_ROOT/crio-*"
	fi
	exit 0
fi
case "${1-}" in -*) die "usage: $0 [OUTDIR] | --clean" ;; esac
OUTDIR=${1-}

# Never let the build edit go.mod/go.sum, ignore any go.work, cgo (libseccomp,
# sqlite, namespaces), no VCS stamping (the sources live in the module cache).
export GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off CGO_ENABLED=1 CC

command -v "$CC" >/dev/null || die "no C compiler $CC (apt-get install gcc libc6-dev)"
command -v pkg-config >/dev/null || die "no pkg-config (apt-get install pkg-config)"
pkg-config --exists libseccomp || die "no libseccomp development files (apt-get install libseccomp-dev)"
for tool in strip readelf; do
	command -v "$tool" >/dev/null || die "no $tool (apt-get install binutils)"
done

# Scratch directory, outside any other module: the generated module goes in
# $MOD, pinns's sources in $WORK/pinns; module queries run in $WORK itself,
# where no go.mod applies (in $MOD they would fail for want of a go.sum).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-crio.XXXXXX")
MOD=$WORK/mod
mkdir "$MOD"
TMP=
CHILD=
trap 'rm -rf "$WORK" ${TMP:+"$TMP"}' EXIT

# json_field NAME: the first string value of NAME in go's indented -json.
json_field() {
	sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",*\$/\\1/p" | sed -n 1p
}
# cri-o's module as `go list -m -json` reports it: GoMod (its go.mod), Time
# and Origin's Hash (the release's commit time and hash). Only the .info and
# .mod files are fetched, once: they stay in the module cache.
MODINFO=$(cd "$WORK" && "$GO" list -m -json "$CRIO_MODULE@$CRIO_VERSION") ||
	die "cannot fetch $CRIO_MODULE@$CRIO_VERSION from the module proxy"
# replaces GOMOD: its replace directives, one per line, comments dropped.
replaces() {
	awk '
		{ sub(/\/\/.*/, ""); $1 = $1 }
		inblock && $1 == ")" { inblock = 0; next }
		inblock && NF { print "replace " $0; next }
		$1 == "replace" && $2 == "(" { inblock = 1; next }
		$1 == "replace" && NF > 1 { print }
	' "$1"
}
gen_gomod() {
	local upstream go_directive repl
	upstream=$(json_field GoMod <<<"$MODINFO")
	[ -f "$upstream" ] || die "cannot fetch $CRIO_MODULE@$CRIO_VERSION's go.mod from the module proxy"
	go_directive=$(awk '$1 == "go" { print $2; exit }' "$upstream")
	[ -n "$go_directive" ] || die "$upstream has no go directive"
	repl=$(replaces "$upstream")
	# A replacement by a local path (=> ./x) cannot be honoured from outside.
	if printf '%s\n' "$repl" | awk '{ for (i = 1; i < NF; i++) if ($i == "=>") print $(i + 1) }' | grep -q '^[./]'; then
		die "$CRIO_MODULE@$CRIO_VERSION replaces a module by a local path: $repl"
	fi
	printf '%s\n' "// Generated by hack/build-crio.sh: builds crio from $CRIO_MODULE@$CRIO_VERSION." \
		"module usernode.local/build-crio" "" "go $go_directive" "" \
		"require $CRIO_MODULE $CRIO_VERSION" "" "tool $CRIO_PKG"
	if [ -n "$repl" ]; then
		printf '\n// Copied from %s@%s/go.mod.\n%s\n' "$CRIO_MODULE" "$CRIO_VERSION" "$repl"
	fi
}
# The C side of the binaries: compiler, glibc and libseccomp, linked in.
c_toolchain() {
	printf 'cc: %s\n' "$("$CC" --version | sed -n 1p)"
	printf 'glibc: %s\n' "$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)"
	printf 'libseccomp: %s\n' "$(pkg-config --modversion libseccomp)"
}
GOMOD=$(gen_gomod)
printf '%s\n' "$GOMOD" >"$MOD/go.mod"
CTOOLCHAIN=$(c_toolchain)
# Run in the generated module so a GOTOOLCHAIN switch its go line demands
# shows up here too.
GO_VERSION=$(cd "$MOD" && "$GO" env GOVERSION)
GOOS=$(cd "$MOD" && "$GO" env GOOS)
GOARCH=$(cd "$MOD" && "$GO" env GOARCH)
HASH=$({ cat "$SELF"; printf '%s\n' "$GOMOD" "$CTOOLCHAIN"; } | sha256sum | cut -c1-16)
KEY="crio-${CRIO_VERSION}_${GO_VERSION}-${GOOS}-${GOARCH}_${HASH}"
DEST=$BIN_ROOT/$KEY

# crio_ldflags: upstream's BASE_LDFLAGS plus its static build's EXTRA_LDFLAGS,
# with the date and commit of the release as the module proxy reports them.
crio_ldflags() {
	local date commit
	date=$(json_field Time <<<"$MODINFO")
	commit=$(json_field Hash <<<"$MODINFO")
	[ -n "$date" ] || date=1970-01-01T00:00:00Z
	[ -n "$commit" ] || commit=unknown
	printf '%s' "-s -w -linkmode external -extldflags '-static -lm'" \
		" -X $CRIO_MODULE/internal/version.buildDate=$date" \
		" -X $CRIO_MODULE/internal/version.buildCommit=$commit"
}

# publish: copy crio and pinns to OUTDIR (skipped if it already holds KEY).
publish() {
	local b
	if [ -z "$OUTDIR" ]; then
		check_reachable "$DEST"
		echo "$DEST"
		return
	fi
	mkdir -p "$OUTDIR"
	if [ "$(cat "$OUTDIR/.build-crio-key" 2>/dev/null)" != "$KEY" ]; then
		rm -f "$OUTDIR/.build-crio-key"
		for b in "${BINARIES[@]}"; do
			cp -f "$DEST/$b" "$OUTDIR/$b.tmp.$$" && mv -f "$OUTDIR/$b.tmp.$$" "$OUTDIR/$b"
		done
		echo "$KEY" >"$OUTDIR/.build-crio-key"
		log "copied to $OUTDIR"
	fi
	(cd "$OUTDIR" && pwd)
}

# Tests run the binaries as another user: say so if they cannot reach them.
check_reachable() {
	local d=$1
	while [ "$d" != / ]; do
		if (($(stat -c %a "$d" | rev | cut -c1) % 2 == 0)); then
			log "warning: $d is not searchable by other users (mode $(stat -c %a "$d")): other accounts cannot run the binaries; set USERNODE_CACHE or pass OUTDIR"
			return
		fi
		d=$(dirname "$d")
	done
}

# run DIR CMD...: run CMD in DIR, in the background so that a TERM/INT trap
# runs at once, not after go or cc.
run() {
	local dir=$1
	shift
	(cd "$dir" && exec "$@") &
	CHILD=$!
	wait "$CHILD" || die "$* failed"
	CHILD=
}

# build_pinns SRCDIR: compile pinns from a writable copy of SRCDIR/pinns/src.
build_pinns() {
	local src=$1/pinns/src f objs=()
	[ -d "$src" ] || die "$CRIO_MODULE@$CRIO_VERSION has no pinns/src"
	mkdir "$WORK/pinns"
	cp "$src"/*.c "$src"/*.h "$WORK/pinns/"
	chmod u+w "$WORK"/pinns/*
	for f in "$WORK"/pinns/*.c; do
		run "$WORK/pinns" nice -n 19 "$CC" "${PINNS_CFLAGS[@]}" -O3 -o "${f%.c}.o" -c "$f"
		objs+=("${f%.c}.o")
	done
	run "$WORK/pinns" "$CC" -o "$TMP/pinns" "${objs[@]}" "${PINNS_CFLAGS[@]}"
	run "$WORK/pinns" strip -s "$TMP/pinns"
}

# check_static FILE: no dynamic section, no interpreter.
check_static() {
	if readelf -d "$1" 2>/dev/null | grep -q NEEDED || readelf -l "$1" | grep -q 'INTERP'; then
		die "$(basename "$1") is not statically linked"
	fi
}

if [ -d "$DEST" ]; then
	log "cached: $KEY"
	publish
	exit 0
fi

mkdir -p "$BIN_ROOT"
chmod 0755 "$CACHE_ROOT" "$BIN_ROOT" 2>/dev/null || true # tests run the binaries as another user
exec 9>"$CACHE_ROOT/bin-crio.lock"
if ! flock -n 9; then
	log "waiting for another build-crio.sh ($CACHE_ROOT/bin-crio.lock) ..."
	flock 9
fi
if [ -d "$DEST" ]; then # built while we waited
	log "cached: $KEY"
	publish
	exit 0
fi
# We hold the lock, so any temporary directory left is from a killed run.
# (Not .tmp.* nor .flannel-tmp.*: those belong to the other build scripts.)
rm -rf "$BIN_ROOT"/.crio-tmp.*
TMP=$(mktemp -d "$BIN_ROOT/.crio-tmp.$KEY.XXXXXX")
trap 'log interrupted; [ -z "$CHILD" ] || kill -INT "$CHILD" 2>/dev/null; wait; exit 130' INT TERM HUP

log "building $KEY with $GO_VERSION into $DEST"
T0=$(now)
LDFLAGS=$(crio_ldflags)
SRC=$(cd "$WORK" && "$GO" mod download -json "$CRIO_MODULE@$CRIO_VERSION" | json_field Dir)
[ -d "$SRC" ] || die "cannot download $CRIO_MODULE@$CRIO_VERSION"
log "resolving modules (go mod tidy) ..."
run "$MOD" "$GO" mod tidy
t=$(now)
log "building crio ($CRIO_PKG, tags: ${BUILDTAGS[*]}) ..."
run "$MOD" nice -n 19 "$GO" build -trimpath -tags "${BUILDTAGS[*]}" -ldflags "$LDFLAGS" -o "$TMP/crio" "$CRIO_PKG"
log "built crio in $(since "$t") ($(du -m "$TMP/crio" | cut -f1) MB)"
t=$(now)
log "building pinns ($CRIO_MODULE@$CRIO_VERSION/pinns) ..."
build_pinns "$SRC"
log "built pinns in $(since "$t") ($(du -k "$TMP/pinns" | cut -f1) kB)"

check_static "$TMP/crio"
check_static "$TMP/pinns"
# crio --version neither reads a config file nor touches /etc or /var.
out=$("$TMP/crio" --version 2>&1 | sed -n 1p || true)
[ "$out" = "crio version ${CRIO_VERSION#v}" ] || die "crio --version reports '$out', want 'crio version ${CRIO_VERSION#v}'"
# pinns has no --version: without arguments it must say what is missing and
# exit 1 (proves it runs; it pins nothing).
rc=0
pout=$("$TMP/pinns" 2>&1) || rc=$?
if [ "$rc" != 1 ] || [ "$pout" != "[pinns:e] Path for pinning namespaces not specified" ]; then
	die "pinns without arguments exited $rc saying '$pout'"
fi
{
	echo "key: $KEY"
	echo "$CRIO_MODULE: $CRIO_VERSION ($CRIO_PKG and pinns/)"
	echo "go: $GO_VERSION $GOOS/$GOARCH CGO_ENABLED=1 -trimpath, static"
	echo "tags: ${BUILDTAGS[*]}"
	echo "ldflags: $LDFLAGS"
	echo "pinns cflags: ${PINNS_CFLAGS[*]} (objects: -O3), strip -s"
	printf '%s\n' "$CTOOLCHAIN"
	echo "crio --version:"
	"$TMP/crio" --version 2>&1 | sed 's/^/  /'
	echo "sha256:"
	(cd "$TMP" && sha256sum "${BINARIES[@]}")
	echo "go.mod (after go mod tidy):"
	sed 's/^/  /' "$MOD/go.mod"
} >"$TMP/BUILD-INFO"
cp "$MOD/go.sum" "$TMP/go.sum"
chmod 0755 "$TMP" "$TMP/crio" "$TMP/pinns"
chmod 0644 "$TMP/BUILD-INFO" "$TMP/go.sum"
mv -T "$TMP" "$DEST"
TMP=
trap - INT TERM HUP
log "built in $(since "$T0"): $out"
publish
