#!/usr/bin/env bash
# Builds upstream's conformance tools at the cluster's Kubernetes version,
# from the Go module proxy, into a cache directory keyed on every input:
#
#   e2e.test   k8s.io/kubernetes/test/e2e (a Ginkgo suite: `go test -c`)
#   agnhost    k8s.io/kubernetes/test/images/agnhost (the e2e tests' tool
#              image's one binary; hack/conformance.sh wraps it in an image)
#   nnp        k8s.io/kubernetes/test/images/nonewprivs (the nonewprivs
#              image's one binary)
#   ginkgo     github.com/onsi/ginkgo/v2/ginkgo at the version e2e.test is
#              built with: the runner that runs the suite in parallel
#              processes (e2e.test alone runs one spec at a time)
#
#   ${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}/bin/<key>/
#   key = e2e-<k8s version>_<go version>-<GOOS>-<GOARCH>_<hash>
#   hash = sha256 of this script, k8s/go.mod and k8s/go.sum
#
# The module is k8s/go.mod (k8s.io/kubernetes and its staging replaces, the
# same pins as the cluster's binaries) under another name, plus the test
# packages' own dependencies (ginkgo, gomega, ...), which `go mod tidy`
# adds: a tools.go imports everything test/e2e/e2e_test.go imports, because
# tidy does not follow the tests of a dependency's packages.
#
# A run whose key is already built does nothing but print the directory.
# The binaries are built into a temporary directory next to it, checked
# (e2e.test --version, agnhost --version), and renamed into place, so an
# interrupted build never leaves a partial cache entry; GOCACHE keeps the
# compiled packages, so a rerun after an interruption resumes where it
# stopped. Concurrent runs serialise on bin-e2e.lock.
#
#   hack/build-e2e.sh [OUTDIR]   build (or reuse) the cache entry; with
#                                OUTDIR, also copy the binaries there
#   hack/build-e2e.sh --clean    remove every cached e2e build
#
# Progress goes to stderr; stdout is one line: the directory holding
# e2e.test, agnhost, nnp and ginkgo (OUTDIR if given, else the cache entry).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
CACHE_ROOT=${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}
BIN_ROOT=$CACHE_ROOT/bin

log() { printf 'build-e2e: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

if [ "${1-}" = --clean ]; then
	if [ -d "$BIN_ROOT" ]; then
		exec 9>"$CACHE_ROOT/bin-e2e.lock"
		flock 9
		rm -rf "$BIN_ROOT"/e2e-* "$BIN_ROOT"/.e2e-tmp.*
		log "removed $BIN_ROOT/e2e-*"
	fi
	exit 0
fi
case "${1-}" in -*) die "usage: $0 [OUTDIR] | --clean" ;; esac
OUTDIR=${1-}

export GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off CGO_ENABLED=0

# A require line or a line of a require block (gen-gomod.sh writes a block).
K8S_VERSION=$(awk '($1 == "require" && $2 == "k8s.io/kubernetes") { print $3; exit } ($1 == "k8s.io/kubernetes" && $2 ~ /^v/) { print $2; exit }' "$ROOT/k8s/go.mod")
[ -n "$K8S_VERSION" ] || die "k8s/go.mod does not require k8s.io/kubernetes"
GO_VERSION=$(cd "$ROOT/k8s" && "$GO" env GOVERSION)
GOOS=$(cd "$ROOT/k8s" && "$GO" env GOOS)
GOARCH=$(cd "$ROOT/k8s" && "$GO" env GOARCH)
HASH=$(cat "$ROOT/hack/build-e2e.sh" "$ROOT/k8s/go.mod" "$ROOT/k8s/go.sum" | sha256sum | cut -c1-16)
KEY="e2e-${K8S_VERSION}_${GO_VERSION}-${GOOS}-${GOARCH}_${HASH}"
DEST=$BIN_ROOT/$KEY
BINARIES=(e2e.test agnhost nnp ginkgo)

publish() {
	local b
	if [ -z "$OUTDIR" ]; then
		echo "$DEST"
		return
	fi
	mkdir -p "$OUTDIR"
	if [ "$(cat "$OUTDIR/.build-e2e-key" 2>/dev/null)" != "$KEY" ]; then
		rm -f "$OUTDIR/.build-e2e-key"
		for b in "${BINARIES[@]}"; do
			cp -f "$DEST/$b" "$OUTDIR/$b.tmp.$$" && mv -f "$OUTDIR/$b.tmp.$$" "$OUTDIR/$b"
		done
		echo "$KEY" >"$OUTDIR/.build-e2e-key"
		log "copied to $OUTDIR"
	fi
	(cd "$OUTDIR" && pwd)
}

if [ -d "$DEST" ]; then
	log "cached: $KEY"
	publish
	exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-e2e.XXXXXX")
TMP=
CHILD=
trap 'rm -rf "$WORK" ${TMP:+"$TMP"}' EXIT

mkdir -p "$BIN_ROOT"
chmod 0755 "$CACHE_ROOT" "$BIN_ROOT" 2>/dev/null || true # the runner may be another user
exec 9>"$CACHE_ROOT/bin-e2e.lock"
if ! flock -n 9; then
	log "waiting for another build-e2e.sh ($CACHE_ROOT/bin-e2e.lock) ..."
	flock 9
fi
if [ -d "$DEST" ]; then # built while we waited
	log "cached: $KEY"
	publish
	exit 0
fi
# We hold the lock, so any temporary directory left is from a killed run.
rm -rf "$BIN_ROOT"/.e2e-tmp.*
TMP=$(mktemp -d "$BIN_ROOT/.e2e-tmp.$KEY.XXXXXX")
trap 'log interrupted; [ -z "$CHILD" ] || kill -INT "$CHILD" 2>/dev/null; wait; exit 130' INT TERM HUP

# run CMD...: run in the generated module, in the background so that a
# TERM/INT trap runs at once, not after go.
run() {
	(cd "$WORK" && exec "$@") &
	CHILD=$!
	wait "$CHILD" || die "$* failed"
	CHILD=
}

log "building $KEY with $GO_VERSION into $DEST"
T0=$(now)
sed 's|^module .*|module usernode.local/build-e2e|' "$ROOT/k8s/go.mod" >"$WORK/go.mod"
cp "$ROOT/k8s/go.sum" "$WORK/go.sum"
# The suite's imports, read from the e2e_test.go of the pinned release.
SRC=$(cd "$ROOT/k8s" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
[ -f "$SRC/test/e2e/e2e_test.go" ] || die "no test/e2e/e2e_test.go in k8s.io/kubernetes@$K8S_VERSION ($SRC)"
{
	printf '%s\n' "//go:build tools" "" "// Generated by hack/build-e2e.sh." "package tools" "" "import ("
	awk '/^import \(/ { on = 1; next } on && /^\)/ { exit }
		on { for (i = 1; i <= NF; i++) if ($i ~ /^"[^"]*\.[^"]*\//) print "\t_ " $i }' "$SRC/test/e2e/e2e_test.go" | sort -u
	printf '\t_ "%s"\n' k8s.io/kubernetes/test/e2e k8s.io/kubernetes/test/images/agnhost \
		k8s.io/kubernetes/test/images/nonewprivs github.com/onsi/ginkgo/v2/ginkgo
	echo ")"
} >"$WORK/tools.go"
log "resolving the test packages' modules (go mod tidy) ..."
GOFLAGS=-buildvcs=false run "$GO" mod tidy
t=$(now)

# The version variables the release build sets (hack/lib/version.sh), as in
# hack/build-k8s.sh: the suite compares them with the server's.
rest=${K8S_VERSION#v}
major=${rest%%.*}
rest=${rest#*.}
minor=${rest%%.*}
LDFLAGS="-s -w"
for v in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" gitCommit= gitTreeState=clean; do
	LDFLAGS="$LDFLAGS -X k8s.io/component-base/version.$v -X k8s.io/client-go/pkg/version.$v"
done
AGNHOST_VERSION=$(cat "$SRC/test/images/agnhost/VERSION")

log "building e2e.test (go test -c k8s.io/kubernetes/test/e2e) ..."
run "$GO" test -c -trimpath -ldflags "$LDFLAGS" -o "$TMP/e2e.test" k8s.io/kubernetes/test/e2e
log "built e2e.test in $(since "$t") ($(du -m "$TMP/e2e.test" | cut -f1) MB)"
t=$(now)
log "building agnhost $AGNHOST_VERSION ..."
run "$GO" build -trimpath -ldflags "-s -w -X main.Version=$AGNHOST_VERSION" -o "$TMP/agnhost" k8s.io/kubernetes/test/images/agnhost
log "built agnhost in $(since "$t") ($(du -m "$TMP/agnhost" | cut -f1) MB)"
run "$GO" build -trimpath -ldflags "-s -w" -o "$TMP/nnp" k8s.io/kubernetes/test/images/nonewprivs
t=$(now)
log "building ginkgo ..."
run "$GO" build -trimpath -ldflags "-s -w" -o "$TMP/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
log "built ginkgo in $(since "$t") ($(du -m "$TMP/ginkgo" | cut -f1) MB)"

e2ev=$("$TMP/e2e.test" --version 2>&1 | sed -n 1p || true)
case $e2ev in *"$K8S_VERSION"*) ;; *) die "e2e.test --version reports '$e2ev', want $K8S_VERSION" ;; esac
agv=$("$TMP/agnhost" --version 2>&1 | sed -n 1p || true)
case $agv in *"$AGNHOST_VERSION"*) ;; *) die "agnhost --version reports '$agv', want $AGNHOST_VERSION" ;; esac
gkv=$("$TMP/ginkgo" version 2>&1 | sed -n 1p || true)
case $gkv in "Ginkgo Version "*) ;; *) die "ginkgo version reports '$gkv'" ;; esac
{
	echo "key: $KEY"
	echo "k8s.io/kubernetes: $K8S_VERSION"
	echo "go: $GO_VERSION $GOOS/$GOARCH CGO_ENABLED=0 -trimpath"
	echo "e2e.test --version: $e2ev"
	echo "agnhost --version: $agv"
	echo "agnhost-version: $AGNHOST_VERSION"
	echo "ginkgo version: $gkv"
	echo "build seconds: $(since "$T0")"
	echo "sha256:"
	(cd "$TMP" && sha256sum "${BINARIES[@]}")
} >"$TMP/BUILD-INFO"
cp "$WORK/go.mod" "$TMP/go.mod"
cp "$WORK/go.sum" "$TMP/go.sum"
chmod 0755 "$TMP" "$TMP/e2e.test" "$TMP/agnhost" "$TMP/nnp" "$TMP/ginkgo"
chmod 0644 "$TMP/BUILD-INFO" "$TMP/go.mod" "$TMP/go.sum"
mv -T "$TMP" "$DEST"
TMP=
trap - INT TERM HUP
log "built in $(since "$T0"): e2e.test $e2ev, agnhost $agv, $gkv"
publish
