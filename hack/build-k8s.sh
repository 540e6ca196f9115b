#!/usr/bin/env bash
# Builds the Kubernetes binaries (kubelet, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl), etcd and
# CoreDNS from the Go module proxy, using the pinned modules in k8s/ (made
# by k8s/gen-gomod.sh), into a cache directory keyed on every input:
#
#   ${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}/bin/<key>/
#   key = k8s-<version>_etcd-<version>_coredns-<version>_<go version>-<GOOS>-<GOARCH>_<hash>
#   hash = sha256 of k8s/{go.mod,go.sum,kubenode/*.go} and this script
#
# The five Kubernetes daemons, etcd and CoreDNS are one executable,
# kube-node (k8s/kubenode: each runs as a process of its own, picked by
# the name it is run as), and each daemon's name is a symlink to it:
# processes of one file share its pages (docs/benchmarks.md, "One
# executable"). kubectl, which users and the node's oneshots run, stays a
# binary of its own.
#
# A run whose key is already built does nothing but print the directory.
# Binaries are built into a temporary directory next to it, checked
# (--version), and renamed into place, so an interrupted build never leaves a
# partial cache entry. Concurrent runs serialise on a lock.
#
#   hack/build-k8s.sh [OUTDIR]   build (or reuse) the cache entry; with OUTDIR,
#                                also copy the binaries there
#   hack/build-k8s.sh --clean    remove every cached build (bin/ in the cache)
#
# Progress goes to stderr; stdout is one line: the directory holding the
# binaries (OUTDIR if given, else the cache entry).
# GOCACHE and GOMODCACHE are left at their defaults.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
CACHE_ROOT=${USERNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usernode}
BIN_ROOT=$CACHE_ROOT/bin

log() { printf 'build-k8s: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

if [ "${1-}" = --clean ]; then
	if [ -d "$BIN_ROOT" ]; then
		exec 9>"$CACHE_ROOT/bin.lock"
		flock 9
		rm -rf "$BIN_ROOT"
		log "removed $BIN_ROOT"
	fi
	exit 0
fi
case "${1-}" in -*) die "usage: $0 [OUTDIR] | --clean" ;; esac
OUTDIR=${1-}

# Pinned modules: never let the build edit go.mod/go.sum, ignore any go.work,
# no cgo (static binaries), no VCS stamping (the main packages live in the
# module cache anyway).
export GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off CGO_ENABLED=0

mod_version() { # go.mod module -> version it requires
	awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1"
}
K8S_VERSION=$(mod_version "$ROOT/k8s/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(mod_version "$ROOT/k8s/go.mod" go.etcd.io/etcd/server/v3)
COREDNS_VERSION=$(mod_version "$ROOT/k8s/go.mod" github.com/coredns/coredns)
[ -n "$K8S_VERSION" ] || die "k8s/go.mod does not require k8s.io/kubernetes"
[ -n "$ETCD_VERSION" ] || die "k8s/go.mod does not require go.etcd.io/etcd/server/v3"
[ -n "$COREDNS_VERSION" ] || die "k8s/go.mod does not require github.com/coredns/coredns"
# Run in k8s/ so a GOTOOLCHAIN switch demanded by go.mod shows up here too.
GO_VERSION=$(cd "$ROOT/k8s" && "$GO" env GOVERSION)
GOOS=$(cd "$ROOT/k8s" && "$GO" env GOOS)
GOARCH=$(cd "$ROOT/k8s" && "$GO" env GOARCH)
HASH=$(cd "$ROOT" && cat k8s/go.mod k8s/go.sum k8s/kubenode/*.go hack/build-k8s.sh | sha256sum | cut -c1-16)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_coredns-${COREDNS_VERSION}_${GO_VERSION}-${GOOS}-${GOARCH}_${HASH}"
DEST=$BIN_ROOT/$KEY

K8S_DAEMONS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
K8S_BINARIES=("${K8S_DAEMONS[@]}" kubectl)
# kube-node first: publish copies the links after what they point to.
ALL_BINARIES=(kube-node etcd coredns "${K8S_BINARIES[@]}")

# The same variables the Kubernetes release build sets (hack/lib/version.sh),
# in both packages that carry them. buildDate is the release's commit time as
# the module proxy reports it, so the output depends on the inputs only. The
# commit hash is not available from the proxy: gitCommit is left empty.
k8s_ldflags() {
	local info date major minor rest v
	info=$(cd "$ROOT/k8s" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",*$/\1/p')
	date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
	[ -n "$date" ] || date=1970-01-01T00:00:00Z
	rest=${K8S_VERSION#v}
	major=${rest%%.*}
	rest=${rest#*.}
	minor=${rest%%.*}
	local -a kv=("gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor"
		"gitCommit=" "gitTreeState=clean" "buildDate=$date")
	printf '%s' "-s -w"
	for v in "${kv[@]}"; do
		printf ' -X k8s.io/component-base/version.%s -X k8s.io/client-go/pkg/version.%s' "$v" "$v"
	done
}
# etcd's only link-time variable is GitSHA (kube-node's ldflags carry it);
# the proxy does not know it either.
ETCD_LDFLAGS="-X go.etcd.io/etcd/api/v3/version.GitSHA=unknown"
# CoreDNS's version is a constant (coremain.CoreVersion); its release build
# sets only GitCommit, which the proxy does not know either.
COREDNS_LDFLAGS="-X github.com/coredns/coredns/coremain.GitCommit=unknown"

# build NAME DIR: go build one binary into DIR.
build() {
	local name=$1 dir=$2 moddir pkg ldflags t
	case $name in
	kube-node) moddir=$ROOT/k8s pkg=./kubenode ldflags="$K8S_LDFLAGS $ETCD_LDFLAGS $COREDNS_LDFLAGS" ;;
	*) moddir=$ROOT/k8s pkg=k8s.io/kubernetes/cmd/$name ldflags=$K8S_LDFLAGS ;;
	esac
	t=$(now)
	log "building $name ($pkg) ..."
	# In the background so that a TERM/INT trap runs at once, not after go build.
	(cd "$moddir" && exec "$GO" build -trimpath -ldflags "$ldflags" -o "$dir/$name" "$pkg") &
	CHILD=$!
	wait "$CHILD" || die "go build $pkg failed"
	CHILD=
	log "built $name in $(since "$t") ($(du -m "$dir/$name" | cut -f1) MB)"
}

# check DIR: every binary reports the expected version; writes VERSIONS.
check() {
	local dir=$1 out want=${K8S_VERSION} b
	{
		for b in "${K8S_BINARIES[@]}"; do
			case $b in
			kubectl) out=$("$dir/kubectl" version --client 2>&1 | sed -n 1p || true) ;;
			*) out=$("$dir/$b" --version 2>&1 | sed -n 1p || true) ;;
			esac
			case $out in *"$want"*) ;; *) die "$b reports '$out', want $want" ;; esac
			printf '%s: %s\n' "$b" "$out"
		done
		out=$("$dir/etcd" --version 2>&1 | sed -n 1p || true)
		case $out in *"${ETCD_VERSION#v}"*) ;; *) die "etcd reports '$out', want ${ETCD_VERSION#v}" ;; esac
		printf 'etcd: %s\n' "$out"
		out=$("$dir/coredns" -version 2>&1 | sed -n 1p || true)
		case $out in "CoreDNS-${COREDNS_VERSION#v}") ;; *) die "coredns reports '$out', want CoreDNS-${COREDNS_VERSION#v}" ;; esac
		printf 'coredns: %s\n' "$out"
	} >"$dir/VERSIONS"
}

# publish: copy the cache entry to OUTDIR (skipped if it already holds KEY).
publish() {
	local b
	if [ -z "$OUTDIR" ]; then
		check_reachable "$DEST"
		echo "$DEST"
		return
	fi
	mkdir -p "$OUTDIR"
	if [ "$(cat "$OUTDIR/.build-k8s-key" 2>/dev/null)" != "$KEY" ]; then
		rm -f "$OUTDIR/.build-k8s-key"
		# -P: the daemons' links stay links (to kube-node beside them).
		for b in "${ALL_BINARIES[@]}" VERSIONS BUILD-INFO; do
			cp -fP "$DEST/$b" "$OUTDIR/$b.tmp.$$" && mv -fT "$OUTDIR/$b.tmp.$$" "$OUTDIR/$b"
		done
		echo "$KEY" >"$OUTDIR/.build-k8s-key"
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

if [ -d "$DEST" ]; then
	log "cached: $KEY"
	publish
	exit 0
fi

mkdir -p "$BIN_ROOT"
chmod 0755 "$CACHE_ROOT" "$BIN_ROOT" 2>/dev/null || true # tests run the binaries as another user
exec 9>"$CACHE_ROOT/bin.lock"
if ! flock -n 9; then
	log "waiting for another build-k8s.sh ($CACHE_ROOT/bin.lock) ..."
	flock 9
fi
if [ -d "$DEST" ]; then # built while we waited
	log "cached: $KEY"
	publish
	exit 0
fi
# We hold the lock, so any temporary directory left is from a killed run.
rm -rf "$BIN_ROOT"/.tmp.*
TMP=$(mktemp -d "$BIN_ROOT/.tmp.$KEY.XXXXXX")
CHILD=
trap 'rm -rf "$TMP"' EXIT
trap 'log interrupted; [ -z "$CHILD" ] || kill -INT "$CHILD" 2>/dev/null; wait; exit 130' INT TERM HUP

log "building $KEY with $GO_VERSION into $DEST"
T0=$(now)
K8S_LDFLAGS=$(k8s_ldflags)
for b in kube-node kubectl; do build "$b" "$TMP"; done
for b in "${K8S_DAEMONS[@]}" etcd coredns; do ln -s kube-node "$TMP/$b"; done
check "$TMP"
# kube-node's own code (the settled GC target): its unit tests, once per
# build (the main module's `make test` does not reach this module).
t=$(now)
(cd "$ROOT/k8s" && exec "$GO" test -count=1 -vet=off -trimpath ./kubenode/) >&2 &
CHILD=$!
wait "$CHILD" || die "go test ./kubenode/ (k8s module) failed"
CHILD=
log "tested kube-node in $(since "$t")"
{
	echo "key: $KEY"
	echo "k8s.io/kubernetes: $K8S_VERSION (module github.com/usernode/usernode/k8s)"
	echo "go.etcd.io/etcd/server/v3: $ETCD_VERSION (module github.com/usernode/usernode/k8s)"
	echo "github.com/coredns/coredns: $COREDNS_VERSION (module github.com/usernode/usernode/k8s, plugins: k8s/kubenode/main.go)"
	echo "go: $GO_VERSION $GOOS/$GOARCH CGO_ENABLED=0 -trimpath"
	echo "kube-node ldflags: $K8S_LDFLAGS $ETCD_LDFLAGS $COREDNS_LDFLAGS"
	echo "sha256:"
	(cd "$TMP" && sha256sum kube-node kubectl)
	echo "links to kube-node: ${K8S_DAEMONS[*]} etcd coredns"
} >"$TMP/BUILD-INFO"
chmod 0755 "$TMP" "$TMP/kube-node" "$TMP/kubectl"
chmod 0644 "$TMP/VERSIONS" "$TMP/BUILD-INFO"
mv -T "$TMP" "$DEST"
trap - EXIT INT TERM HUP
log "built all in $(since "$T0"):"
sed 's/^/build-k8s:   /' "$DEST/VERSIONS" >&2
publish
