#!/usr/bin/env bash
# Runs upstream's [NodeConformance] e2e tests against a node brought up by
# `usernode up`, as a non-root user (docs/conformance.md):
#
#   hack/conformance.sh USERNODE K8S_DIR E2E_DIR
#   hack/conformance.sh --build-images DIR USERNODE E2E_DIR
#
#   USERNODE  the usernode binary (make build)
#   K8S_DIR   the Kubernetes binaries (hack/build-k8s.sh), readable by the
#             user the node runs as
#   E2E_DIR   e2e.test, agnhost, nnp and ginkgo (hack/build-e2e.sh)
#
# --build-images only builds the image archives (and tags.txt) into DIR,
# for a run elsewhere with CONFORMANCE_IMAGES=DIR (the VM tier's:
# hack/vm/conformance-vm.sh, where there is no Go toolchain).
#
# Steps: build the images the tests run (test/conformance/e2eimages: busybox,
# agnhost, glibc-dns-testing, nonewprivs, nonroot and pause under the names e2e.test
# lists, from files on this
# machine: no registry is reachable), bring a node up, import the images
# into its containerd, run e2e.test under ginkgo with CONFORMANCE_PROCS
# parallel processes, print passed/failed/skipped, keep the JUnit report and
# the log in CONFORMANCE_OUT, and take the node down (--purge).
#
# Run as root, everything but the image build runs as the test account
# (hack/run-as-user.sh): the node never runs as root.
#
# Environment:
#   CONFORMANCE_FOCUS    ginkgo focus regex (default \[NodeConformance\])
#   CONFORMANCE_PROCS    parallel ginkgo processes (default 8)
#   CONFORMANCE_TIMEOUT  ginkgo's timeout for the whole run (default 90m)
#   CONFORMANCE_OUT      where the report goes (default bin/conformance)
#   CONFORMANCE_NAME     the node's name (default conformance)
#   CONFORMANCE_API_PORT, CONFORMANCE_KUBELET_PORT  host ports (26443, 20250)
#   CONFORMANCE_DRY_RUN=1  list the specs that would run, run none
#   CONFORMANCE_EXTRA_SKIPS  files of more skips (the format of
#                        hack/conformance-skips.txt), for a declared subset
#   CONFORMANCE_IMAGES   a directory of archives --build-images made: used
#                        as they are instead of building them (no Go needed)
#   CONFORMANCE_UP_WRAP  words run before `usernode up` (default none), e.g.
#                        `systemd-run --user --scope -p Delegate=yes --quiet`
#                        for a node in a delegated cgroup (full mode)
#   CONFORMANCE_UP_FLAGS more flags for `usernode up` (default none), e.g.
#                        `--timeout 10m` on a slow machine
#
# The skips: Kubernetes' own rootless CI job's (ROOTLESS_SKIP), and the
# ones in hack/conformance-skips.txt, each with its reason there.
set -euo pipefail

# The same regex Kubernetes' rootless kind job skips with.
ROOTLESS_SKIP='\[Environment:NotInUserNS\]|\[Slow\]'

log() { printf 'conformance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# skip_regex FILE: ROOTLESS_SKIP and each regex of FILE (text before a tab
# or " #", comments and blank lines dropped), joined with |.
skip_regex() {
	local re=$ROOTLESS_SKIP line
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%%$'\t'*}
		line=${line%% #*}
		case $line in '' | '#'*) continue ;; esac
		re="$re|$line"
	done <"$1"
	printf '%s\n' "$re"
}

# count_specs FOCUS SKIP: how many specs e2e.test would run (a dry run).
count_specs() {
	"$WORK/e2e.test" --ginkgo.dry-run --ginkgo.no-color --ginkgo.focus="$1" ${2:+--ginkgo.skip="$2"} 2>/dev/null |
		sed -n 's/^Ran \([0-9]*\) of .*/\1/p' | tail -n1
}

# inner WORK NAME API KLT: the part run as the node's user. Everything it
# reads is in WORK; its report goes to WORK/report.
inner() {
	local work=$1 name=$2 api=$3 klt=$4 t0 rc=0 tar
	cd "$work"
	# A node left by an interrupted run would hold the ports.
	./usernode down --name "$name" --purge >/dev/null 2>&1 || true
	NODE=$name
	# Whatever happens, the node goes (its output in down.log).
	trap './usernode down --name "$NODE" --purge >down.log 2>&1 || log "down failed: $(tail -n3 down.log)"' EXIT
	t0=$(date +%s)
	log "usernode up --name $name (api $api, kubelet $klt) ..."
	# shellcheck disable=SC2046 # up-wrap and up-flags are words
	$(cat up-wrap) ./usernode up -d --name "$name" --bin-dir "$(cat k8s-dir)" --api-port "$api" --kubelet-port "$klt" $(cat up-flags) >up.log 2>&1 ||
		die "usernode up failed: $(tail -n20 up.log)"
	log "node Ready in $(($(date +%s) - t0)) s"
	local -a ctr=(./usernode enter --name "$name" -- ctr --address /run/containerd/containerd.sock --namespace k8s.io images)
	for tar in images/*.tar; do
		"${ctr[@]}" import "$work/$tar" >>import.log 2>&1 || die "importing $tar failed: $(tail -n5 import.log)"
	done
	while read -r src dst; do
		"${ctr[@]}" tag "$src" "$dst" >>import.log 2>&1 || die "ctr images tag $src $dst failed: $(tail -n5 import.log)"
	done <images/tags.txt
	log "imported $(find images -name '*.tar' | wc -l) images, $(wc -l <images/tags.txt) more tags"
	./usernode kubeconfig --name "$name" >node.kubeconfig
	mkdir -p report
	local -a ginkgo=(./ginkgo --procs="$(cat procs)" --timeout="$(cat timeout)" --focus="$(cat focus)" --skip="$(cat skip)"
		--no-color --poll-progress-after=5m)
	[ "$(cat dry-run)" != 1 ] || ginkgo+=(--dry-run --procs=1)
	t0=$(date +%s)
	# e2e.test's own flags after --: --report-dir makes the framework write
	# its JUnit report there; --provider=skeleton as Kubernetes' kind jobs
	# (no cloud); the node's kubectl for the tests that shell out to it.
	"${ginkgo[@]}" ./e2e.test -- --kubeconfig="$work/node.kubeconfig" --provider=skeleton \
		--report-dir="$work/report" --kubectl-path="$(cat k8s-dir)/kubectl" \
		--disable-log-dump=true >e2e.log 2>&1 || rc=$?
	echo $(($(date +%s) - t0)) >e2e-seconds
	# Node-side evidence for the failures: the kubelet's and containerd's logs.
	./usernode logs --name "$name" kubelet >kubelet.log 2>&1 || true
	./usernode logs --name "$name" containerd >containerd.log 2>&1 || true
	return "$rc"
}

if [ "${1-}" = --inner ]; then
	shift
	inner "$@"
	exit
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}

# The images under the names this e2e.test uses (all of its tags of each,
# comma-separated): registry.k8s.io's only; the private registry's agnhost
# is what a registry test must fail or succeed to pull.
ref() {
	local r
	r=$("$E2E_DIR/e2e.test" --list-images 2>/dev/null | grep -E "^registry\.k8s\.io/$1:" | sort -u | paste -sd, -)
	[ -n "$r" ] || die "e2e.test --list-images names no registry.k8s.io/$1 image"
	echo "$r"
}
# build_images DIR: the archives, and DIR/tags.txt, from files on this
# machine (test/conformance/e2eimages).
build_images() {
	local out=$1 src
	local busybox agnhost glibc nnp nonroot pause
	busybox=$(ref e2e-test-images/busybox)
	agnhost=$(ref e2e-test-images/agnhost)
	glibc=$(ref e2e-test-images/glibc-dns-testing)
	nnp=$(ref e2e-test-images/nonewprivs)
	nonroot=$(ref e2e-test-images/nonroot)
	pause=$(ref pause)
	# agnhost's porter serves a certificate that ships in its source directory.
	src=$(cd "$ROOT/k8s" && GOFLAGS=-mod=readonly "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)
	[ -n "$src" ] || src=$(cd "$ROOT/k8s" && "$GO" mod download -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	log "building images: $busybox $agnhost $glibc $nnp $nonroot $pause"
	(cd "$ROOT" && "$GO" run ./test/conformance/e2eimages -out "$out" -agnhost "$E2E_DIR/agnhost" \
		-nnp "$E2E_DIR/nnp" -agnhost-src "$src/test/images/agnhost" -self "$USERNODE" \
		-busybox-ref "$busybox" -agnhost-ref "$agnhost" -glibc-ref "$glibc" \
		-nonewprivs-ref "$nnp" -nonroot-ref "$nonroot" -pause-ref "$pause") >/dev/null
}

if [ "${1-}" = --build-images ]; then
	[ $# -eq 4 ] || die "usage: $0 --build-images DIR USERNODE E2E_DIR"
	USERNODE=$3 E2E_DIR=$4
	build_images "$2"
	exit
fi

[ $# -eq 3 ] || die "usage: $0 USERNODE K8S_DIR E2E_DIR"
USERNODE=$1 K8S_DIR=$2 E2E_DIR=$3
OUT=${CONFORMANCE_OUT:-$ROOT/bin/conformance}
NAME=${CONFORMANCE_NAME:-conformance}
API=${CONFORMANCE_API_PORT:-26443}
KLT=${CONFORMANCE_KUBELET_PORT:-20250}
FOCUS=${CONFORMANCE_FOCUS:-'\[NodeConformance\]'}
SKIP=$(skip_regex "$ROOT/hack/conformance-skips.txt")
# A declared subset (CI's: hack/conformance-ci-skips.txt) skips more, from
# files in the same format.
for f in ${CONFORMANCE_EXTRA_SKIPS-}; do
	[ -f "$f" ] || die "CONFORMANCE_EXTRA_SKIPS: no file $f"
	extra=$(ROOTLESS_SKIP='' skip_regex "$f" | sed 's/^|//')
	# An empty alternative would match, and skip, every spec.
	[ -z "$extra" ] || SKIP="$SKIP|$extra"
done
# Skips for what this host's kernel lacks, checked here rather than
# listed: a kernel with the feature runs the spec.
HOST_SKIPS=()
# PrivilegedPod runs `ip link add dummy1 type dummy` in a privileged
# container; a kernel without the dummy driver (and no modules to load)
# refuses it to root on the host too ("Unknown device type").
if ! unshare -Urn ip link add usernode-probe type dummy 2>/dev/null &&
	! { [ "$(id -u)" -eq 0 ] && unshare -n ip link add usernode-probe type dummy 2>/dev/null; }; then
	HOST_SKIPS+=('PrivilegedPod should enable privileged commands')
	log "this kernel has no dummy network device: skipping PrivilegedPod's spec, which creates one"
fi
for s in "${HOST_SKIPS[@]}"; do SKIP="$SKIP|$s"; done

[ -x "$USERNODE" ] || die "$USERNODE: no usernode binary (make build)"
for b in kubelet kube-apiserver kubectl; do
	[ -x "$K8S_DIR/$b" ] || die "$K8S_DIR/$b missing: build the Kubernetes binaries (hack/build-k8s.sh, or make k8s)"
done
# agnhost and nnp go into the images only: prebuilt ones need neither.
tools=(e2e.test ginkgo)
[ -n "${CONFORMANCE_IMAGES-}" ] || tools+=(agnhost nnp)
for b in "${tools[@]}"; do
	[ -x "$E2E_DIR/$b" ] || die "$E2E_DIR/$b missing: build it with hack/build-e2e.sh (make conformance does)"
done

T0=$(date +%s)
WORK=$(mktemp -d /var/tmp/usernode-conformance.XXXXXX) # not /tmp: the node mounts its own there
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"
cp "$USERNODE" "$WORK/usernode"
# Hard links where they can be (the disk is not large): the node's user
# reads them, and never writes them.
for b in e2e.test ginkgo; do
	ln -f "$E2E_DIR/$b" "$WORK/$b" 2>/dev/null || cp "$E2E_DIR/$b" "$WORK/$b"
done
echo "$K8S_DIR" >"$WORK/k8s-dir"
echo "${CONFORMANCE_PROCS:-8}" >"$WORK/procs"
echo "${CONFORMANCE_TIMEOUT:-90m}" >"$WORK/timeout"
echo "${CONFORMANCE_DRY_RUN:-0}" >"$WORK/dry-run"
echo "${CONFORMANCE_UP_WRAP-}" >"$WORK/up-wrap"
echo "${CONFORMANCE_UP_FLAGS-}" >"$WORK/up-flags"
printf '%s\n' "$FOCUS" >"$WORK/focus"
printf '%s\n' "$SKIP" >"$WORK/skip"
cp "$0" "$WORK/conformance.sh"

if [ -n "${CONFORMANCE_IMAGES-}" ]; then
	[ -f "$CONFORMANCE_IMAGES/tags.txt" ] || die "CONFORMANCE_IMAGES: no $CONFORMANCE_IMAGES/tags.txt (hack/conformance.sh --build-images DIR makes it)"
	mkdir "$WORK/images"
	for f in "$CONFORMANCE_IMAGES"/*.tar "$CONFORMANCE_IMAGES/tags.txt"; do
		ln -f "$f" "$WORK/images/" 2>/dev/null || cp "$f" "$WORK/images/"
	done
	log "images: $(find "$WORK/images" -name '*.tar' | wc -l) archives from $CONFORMANCE_IMAGES"
else
	build_images "$WORK/images"
fi

log "focus: $FOCUS"
log "skip: $SKIP"
rc=0
if [ "$(id -u)" -eq 0 ]; then
	name=${USERNODE_USER:-usernode-test}
	id "$name" >/dev/null 2>&1 || USERNODE_TEST_USER="$name" "$ROOT/hack/test-user.sh" >&2
	# The account writes its report and logs here; what root put here it
	# only reads (e2e.test may be a hard link into root's cache).
	chown "$name:" "$WORK"
	"$ROOT/hack/run-as-user.sh" /bin/bash "$WORK/conformance.sh" --inner "$WORK" "$NAME" "$API" "$KLT" || rc=$?
else
	bash "$WORK/conformance.sh" --inner "$WORK" "$NAME" "$API" "$KLT" || rc=$?
fi

rm -rf "$OUT"
mkdir -p "$OUT"
for f in e2e.log up.log import.log kubelet.log containerd.log down.log; do
	[ ! -f "$WORK/$f" ] || cp "$WORK/$f" "$OUT/"
done
[ ! -d "$WORK/report" ] || cp -r "$WORK/report/." "$OUT/"
# Ginkgo's summary: "Ran N of M Specs in S seconds", then
# "SUCCESS!|FAIL! -- P Passed | F Failed | X Pending | K Skipped".
summary=$(grep -E '^(SUCCESS|FAIL)! .* Passed \| ' "$OUT/e2e.log" | tail -n1 || true)
ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$OUT/e2e.log" | tail -n1 || true)
passed=$(sed -n 's/.* \([0-9]*\) Passed .*/\1/p' <<<"$summary")
failed=$(sed -n 's/.* \([0-9]*\) Failed .*/\1/p' <<<"$summary")
# The focused specs each skip removes, from dry runs (no cluster needed):
# ginkgo's own "Skipped" also counts the thousands outside the focus.
focused=$(count_specs "$FOCUS" '')
rootless=$((focused - $(count_specs "$FOCUS" "$ROOTLESS_SKIP")))
skipped=$((focused - $(count_specs "$FOCUS" "$SKIP")))
{
	echo "focus: $FOCUS"
	echo "skip: $SKIP"
	echo "focused specs: $focused"
	echo "skipped: $skipped ($rootless by the rootless CI job's regex, $((skipped - rootless)) by hack/conformance-skips.txt${CONFORMANCE_EXTRA_SKIPS:+ and $CONFORMANCE_EXTRA_SKIPS}, and what this kernel lacks: ${HOST_SKIPS[*]:-none})"
	echo "ran: $((focused - skipped)); passed: ${passed:-?}; failed: ${failed:-?}"
	echo "ginkgo: ${ran:-no summary (see e2e.log)}; ${summary:-}"
	echo "e2e seconds: $(cat "$WORK/e2e-seconds" 2>/dev/null || echo '?'); procs: $(cat "$WORK/procs")"
	echo "whole run seconds: $(($(date +%s) - T0))"
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} >"$OUT/summary.txt"
sed 's/^/conformance: /' "$OUT/summary.txt" >&2
failed_specs=$(grep -E '^\s*\[FAIL\] ' "$OUT/e2e.log" | sed 's/^[[:space:]]*//' | sort -u || true)
if [ -n "$failed_specs" ]; then
	printf '%s\n' "$failed_specs" >"$OUT/failed.txt"
	log "failed specs:"
	printf '%s\n' "$failed_specs" >&2
fi
log "JUnit report, logs and summary.txt in $OUT"
exit "$rc"
