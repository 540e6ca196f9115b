#!/usr/bin/env bash
# Builds containerd 2.x (containerd, ctr and containerd-shim-runc-v2) from
# the Go module proxy, at the release pinned below (CONTAINERD_VERSION), into
# a cache directory keyed on every input:
#
#   ${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}/bin/<key>/
#   key = containerd-<version>_<go version>-<GOOS>-<GOARCH>_<hash>
#   hash = sha256 of this script and of the go.mod it generates
#
# Why a build of our own: Debian 12 ships containerd 1.6.20, and usernode
# renders a different config (version 3) for 2.x and refuses 2.x in degraded
# mode; both need a real 2.x binary to be tested against, and `usernode up
# --containerd PATH` needs one to run with a delegated cgroup tree.
#
# The three are main packages of github.com/containerd/containerd/v2 (cmd/...)
# importing its internal/ packages, so they are built by import path from a
# generated module: go.mod requiring the pinned release and naming the three
# in tool directives, with any replace directives of containerd's own go.mod
# copied in, since a dependency's replaces are ignored (v2.4.2 has none).
# containerd's go directive is go 1.26.6: an older go switches toolchain as
# GOTOOLCHAIN says.
#
# It is built like upstream's static release (`make STATIC=1`), with the
# build tags and -ldflags of its Makefile, but with CGO_ENABLED=0 for all
# three (upstream does so for the shim only): containerd 2.4.2 has no cgo of
# its own but the btrfs snapshotter, which no_btrfs drops (a rootless node
# cannot use btrfs, and usernode disables the plugin anyway), so nothing
# needs a C toolchain and the binaries are static by construction, with Go's
# resolver and user lookup. Tags (BUILDTAGS, the shim's SHIM_BUILDTAGS):
#   urfave_cli_no_docs              upstream's: no man-page generator linked in;
#   osusergo netgo static_build     upstream's STATIC=1 set;
#   no_btrfs                        no btrfs snapshotter (cgo, btrfs headers);
#   no_grpc (shim only)             upstream's: the shim speaks ttrpc only.
# zfs and devmapper are pure Go and stay in, as in upstream's release; the
# node disables them in its config (pkg/node/containerd).
# -ldflags are upstream's: -s -w and version.Version, version.Revision and
# version.Package, so `containerd --version` prints the release. The module
# proxy reports no commit for v2.4.2 (its .info has no Origin), so Revision
# is the commit only when the proxy gives one, and empty otherwise (the
# output then has three fields; ctr compares client's and daemon's revision,
# both empty).
#
# A run whose key is already built does nothing but print the directory.
# The binaries are built into a temporary directory next to it, checked
# (each reports the release; all three are statically linked; `containerd
# config default` runs, so the plugins register), and renamed into place, so
# an interrupted build never leaves a partial cache entry. Concurrent runs
# serialise on a lock of their own (bin-containerd.lock), independent of the
# other build scripts'. The compiles run under nice -n 19.
#
# Measured on this 2-core machine while a Kubernetes build ran beside it
# (load 7-9): cold (empty module and build caches: 163 modules downloaded
# from the proxy) 2.5 min; with the modules cached and an empty build cache
# 2.2 min; a cached key 0.1 s. Cold and warm builds gave byte-identical
# binaries (containerd 38 MB, ctr 22 MB, shim 7.7 MB).
#
#   hack/build-containerd.sh [OUTDIR]   build (or reuse) the cache entry; with
#                                       OUTDIR, also copy the three there
#   hack/build-containerd.sh --clean    remove every cached containerd build
#
# Progress goes to stderr; stdout is one line: the directory holding
# containerd, ctr and containerd-shim-runc-v2 (OUTDIR if given, else the
# cache entry). `usernode up --containerd DIR/containerd` takes ctr and the
# shim from beside it.
# Needs: go, readelf (binutils). GOCACHE and GOMODCACHE are left at their
# defaults.
set -euo pipefail

CONTAINERD_MODULE=github.com/containerd/containerd/v2
CONTAINERD_VERSION=v2.4.2
PKGS=("$CONTAINERD_MODULE/cmd/containerd" "$CONTAINERD_MODULE/cmd/ctr")
SHIM_PKG=$CONTAINERD_MODULE/cmd/containerd-shim-runc-v2
BUILDTAGS=(urfave_cli_no_docs osusergo netgo static_build no_btrfs)
SHIM_BUILDTAGS=("${BUILDTAGS[@]}" no_grpc)

GO=${GO:-go}
CACHE_ROOT=${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}
BIN_ROOT=$CACHE_ROOT/bin
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
BINARIES=(containerd ctr containerd-shim-runc-v2)

log() { printf 'build-containerd: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

if [ "${1-}" = --clean ]; then
	if [ -d "$BIN_ROOT" ]; then
		exec 9>"$CACHE_ROOT/bin-containerd.lock"
		flock 9
		rm -rf "$BIN_ROOT"/containerd-* "$BIN_ROOT"/.containerd-tmp.*
		log "removed $BIN_ROOT/containerd-*"
	fi
	exit 0
fi
case "${1-}" in -*) die "usage: $0 [OUTDIR] | --clean" ;; esac
OUTDIR=${1-}

# Never let the build edit go.mod/go.sum, ignore any go.work, no cgo (see
# above), no VCS stamping (the sources live in the module cache).
export GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off CGO_ENABLED=0

command -v readelf >/dev/null || die "no readelf (apt-get install binutils)"

# Scratch directory, outside any other module: the generated module goes in
# $MOD; module queries run in $WORK itself, where no go.mod applies (in $MOD
# they would fail for want of a go.sum).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-containerd.XXXXXX")
MOD=$WORK/mod
mkdir "$MOD"
TMP=
CHILD=
trap 'rm -rf "$WORK" ${TMP:+"$TMP"}' EXIT

# json_field NAME: the first string value of NAME in go's indented -json.
json_field() {
	sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",*\$/\\1/p" | sed -n 1p
}
# containerd's module as `go list -m -json` reports it: GoMod (its go.mod)
# and, when the proxy knows it, Origin's Hash (the release's commit). Only
# the .info and .mod files are fetched, once: they stay in the module cache.
MODINFO=$(cd "$WORK" && "$GO" list -m -json "$CONTAINERD_MODULE@$CONTAINERD_VERSION") ||
	die "cannot fetch $CONTAINERD_MODULE@$CONTAINERD_VERSION from the module proxy"
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
	local upstream go_directive repl p
	upstream=$(json_field GoMod <<<"$MODINFO")
	[ -f "$upstream" ] || die "cannot fetch $CONTAINERD_MODULE@$CONTAINERD_VERSION's go.mod from the module proxy"
	go_directive=$(awk '$1 == "go" { print $2; exit }' "$upstream")
	[ -n "$go_directive" ] || die "$upstream has no go directive"
	repl=$(replaces "$upstream")
	# A replacement by a local path (=> ./x) cannot be honoured from outside.
	if printf '%s\n' "$repl" | awk '{ for (i = 1; i < NF; i++) if ($i == "=>") print $(i + 1) }' | grep -q '^[./]'; then
		die "$CONTAINERD_MODULE@$CONTAINERD_VERSION replaces a module by a local path: $repl"
	fi
	printf '%s\n' "// Generated by hack/build-containerd.sh: builds containerd from $CONTAINERD_MODULE@$CONTAINERD_VERSION." \
		"module usernode.local/build-containerd" "" "go $go_directive" "" \
		"require $CONTAINERD_MODULE $CONTAINERD_VERSION" ""
	for p in "${PKGS[@]}" "$SHIM_PKG"; do
		echo "tool $p"
	done
	if [ -n "$repl" ]; then
		printf '\n// Copied from %s@%s/go.mod.\n%s\n' "$CONTAINERD_MODULE" "$CONTAINERD_VERSION" "$repl"
	fi
}
GOMOD=$(gen_gomod)
printf '%s\n' "$GOMOD" >"$MOD/go.mod"
# Run in the generated module so a GOTOOLCHAIN switch its go line demands
# shows up here too.
GO_VERSION=$(cd "$MOD" && "$GO" env GOVERSION)
GOOS=$(cd "$MOD" && "$GO" env GOOS)
GOARCH=$(cd "$MOD" && "$GO" env GOARCH)
HASH=$({ cat "$SELF"; printf '%s\n' "$GOMOD"; } | sha256sum | cut -c1-16)
KEY="containerd-${CONTAINERD_VERSION}_${GO_VERSION}-${GOOS}-${GOARCH}_${HASH}"
DEST=$BIN_ROOT/$KEY

# containerd_ldflags: upstream's GO_LDFLAGS (EXTRA_LDFLAGS -s -w without
# GODEBUG); no -extldflags, since nothing is linked externally without cgo.
containerd_ldflags() {
	local commit
	commit=$(json_field Hash <<<"$MODINFO")
	printf '%s' "-s -w" \
		" -X $CONTAINERD_MODULE/version.Version=$CONTAINERD_VERSION" \
		" -X $CONTAINERD_MODULE/version.Revision=$commit" \
		" -X $CONTAINERD_MODULE/version.Package=$CONTAINERD_MODULE"
}

# publish: copy the binaries to OUTDIR (skipped if it already holds KEY).
publish() {
	local b
	if [ -z "$OUTDIR" ]; then
		check_reachable "$DEST"
		echo "$DEST"
		return
	fi
	mkdir -p "$OUTDIR"
	if [ "$(cat "$OUTDIR/.build-containerd-key" 2>/dev/null)" != "$KEY" ]; then
		rm -f "$OUTDIR/.build-containerd-key"
		for b in "${BINARIES[@]}"; do
			cp -f "$DEST/$b" "$OUTDIR/$b.tmp.$$" && mv -f "$OUTDIR/$b.tmp.$$" "$OUTDIR/$b"
		done
		echo "$KEY" >"$OUTDIR/.build-containerd-key"
		log "copied to $OUTDIR"
	fi
	check_reachable "$OUTDIR"
	(cd "$OUTDIR" && pwd)
}

# Tests run the binaries as another user: say so if they cannot reach them.
check_reachable() {
	local d
	d=$(cd "$1" && pwd)
	while [ "$d" != / ]; do
		if (($(stat -c %a "$d" | rev | cut -c1) % 2 == 0)); then
			log "warning: $d is not searchable by other users (mode $(stat -c %a "$d")): other accounts cannot run the binaries; set USERNODE_CACHE or pass OUTDIR"
			return
		fi
		d=$(dirname "$d")
	done
}

# run DIR CMD...: run CMD in DIR, in the background so that a TERM/INT trap
# runs at once, not after go.
run() {
	local dir=$1
	shift
	(cd "$dir" && exec "$@") &
	CHILD=$!
	wait "$CHILD" || die "$* failed"
	CHILD=
}

# check_static FILE: no dynamic section, no interpreter.
check_static() {
	if readelf -d "$1" 2>/dev/null | grep -q NEEDED || readelf -l "$1" | grep -q 'INTERP'; then
		die "$(basename "$1") is not statically linked"
	fi
}

# check_version WANT CMD...: the first line CMD prints must be WANT.
check_version() {
	local want=$1 out
	shift
	out=$("$@" 2>&1 | sed -n 1p || true)
	[ "$out" = "$want" ] || die "$(basename "$1") ${*:2} reports '$out', want '$want'"
}

if [ -d "$DEST" ]; then
	log "cached: $KEY"
	publish
	exit 0
fi

mkdir -p "$BIN_ROOT"
chmod 0755 "$CACHE_ROOT" "$BIN_ROOT" 2>/dev/null || true # tests run the binaries as another user
exec 9>"$CACHE_ROOT/bin-containerd.lock"
if ! flock -n 9; then
	log "waiting for another build-containerd.sh ($CACHE_ROOT/bin-containerd.lock) ..."
	flock 9
fi
if [ -d "$DEST" ]; then # built while we waited
	log "cached: $KEY"
	publish
	exit 0
fi
# We hold the lock, so any temporary directory left is from a killed run.
# (Not .tmp.*, .crio-tmp.* nor .flannel-tmp.*: those belong to the other
# build scripts.)
rm -rf "$BIN_ROOT"/.containerd-tmp.*
TMP=$(mktemp -d "$BIN_ROOT/.containerd-tmp.$KEY.XXXXXX")
# TERM, not INT, for the child: a background job of a non-interactive
# shell ignores SIGINT, and go build went on to the end with it (measured).
trap 'log interrupted; [ -z "$CHILD" ] || kill -TERM "$CHILD" 2>/dev/null; wait; exit 130' INT TERM HUP

log "building $KEY with $GO_VERSION into $DEST"
T0=$(now)
LDFLAGS=$(containerd_ldflags)
log "resolving modules (go mod tidy) ..."
run "$MOD" "$GO" mod tidy
t=$(now)
log "building containerd and ctr (tags: ${BUILDTAGS[*]}) ..."
run "$MOD" nice -n 19 "$GO" build -trimpath -tags "${BUILDTAGS[*]}" -ldflags "$LDFLAGS" -o "$TMP/" "${PKGS[@]}"
log "built containerd and ctr in $(since "$t")"
t=$(now)
log "building containerd-shim-runc-v2 (tags: ${SHIM_BUILDTAGS[*]}) ..."
run "$MOD" nice -n 19 "$GO" build -trimpath -tags "${SHIM_BUILDTAGS[*]}" -ldflags "$LDFLAGS" -o "$TMP/containerd-shim-runc-v2" "$SHIM_PKG"
log "built containerd-shim-runc-v2 in $(since "$t")"

for b in "${BINARIES[@]}"; do
	[ -x "$TMP/$b" ] || die "the build left no $b"
	check_static "$TMP/$b"
done
# None of these reads a config file, touches /etc or /var, or needs root.
want_rev=$(json_field Hash <<<"$MODINFO")
check_version "containerd $CONTAINERD_MODULE $CONTAINERD_VERSION $want_rev" "$TMP/containerd" --version
check_version "ctr $CONTAINERD_MODULE $CONTAINERD_VERSION" "$TMP/ctr" --version
shim_v=$("$TMP/containerd-shim-runc-v2" -v 2>&1 | awk '$1 == "Version:" { print $2 }')
[ "$shim_v" = "$CONTAINERD_VERSION" ] || die "containerd-shim-runc-v2 -v reports version '$shim_v', want $CONTAINERD_VERSION"
"$TMP/containerd" config default >"$WORK/default.toml" 2>&1 ||
	die "containerd config default failed: $(cat "$WORK/default.toml")"
{
	echo "key: $KEY"
	echo "$CONTAINERD_MODULE: $CONTAINERD_VERSION (${PKGS[*]#"$CONTAINERD_MODULE/"} ${SHIM_PKG#"$CONTAINERD_MODULE/"})"
	echo "go: $GO_VERSION $GOOS/$GOARCH CGO_ENABLED=0 -trimpath, static"
	echo "tags: ${BUILDTAGS[*]} (shim: ${SHIM_BUILDTAGS[*]})"
	echo "ldflags: $LDFLAGS"
	echo "containerd --version:"
	"$TMP/containerd" --version 2>&1 | sed 's/^/  /'
	echo "sha256:"
	(cd "$TMP" && sha256sum "${BINARIES[@]}")
	echo "go.mod (after go mod tidy):"
	sed 's/^/  /' "$MOD/go.mod"
} >"$TMP/BUILD-INFO"
cp "$MOD/go.sum" "$TMP/go.sum"
chmod 0755 "$TMP"
for b in "${BINARIES[@]}"; do
	chmod 0755 "$TMP/$b"
done
chmod 0644 "$TMP/BUILD-INFO" "$TMP/go.sum"
mv -T "$TMP" "$DEST"
TMP=
trap - INT TERM HUP
log "built in $(since "$T0"): $("$DEST/containerd" --version)"
publish
