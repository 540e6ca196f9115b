#!/bin/sh
# The seed's "hard way", for comparison with `usernode up`: the same
# binaries, started by hand under Debian's RootlessKit (1.1) with
# slirp4netns, the copy-ups the task page asks for and the builtin port
# driver, from files that usernode's own composition wrote (`benchup` in
# gen mode, bench/up/gen.go, through node.Plan): PKI, kubeconfigs,
# containerd.toml, kubelet.yaml, kube-proxy.yaml, the CNI conflist, the
# Corefile and CoreDNS's objects, each component's flags (one per line in
# NAME.args) and the two images as OCI archives (no registry is reachable).
#
# Run it as the non-root user, in the foreground; SIGTERM or Ctrl-C stops it:
#
#   HW_STATE=~/.local/share/usernode-hardway/NAME HW_BIN=/opt/usernode-k8s \
#   HW_API_PORT=36444 HW_KUBELET_PORT=40251 bench/up/hardway.sh
#
# HW_STATE holds etc/ (from gen mode) and, kept across runs, var/lib/*
# (etcd, containerd, kubelet, cni, the PKI and images) and var/log/usernode
# (the components' logs). It prints "hardway: STEP EPOCH" as it goes.
#
# Order, as one would write it by hand: containerd, etcd and kube-apiserver
# at once (kube-apiserver retries etcd by itself); the images once
# containerd's socket is there; the RBAC binding once kube-apiserver is
# ready (and CoreDNS's objects, when HW_BIN has coredns); then the
# controller-manager, the scheduler, the kubelet, kube-proxy and CoreDNS at
# once. Nothing waits on etcd, the controller-manager, the scheduler or the
# kubelet: they retry on their own.
set -eu
: "${HW_STATE:?set HW_STATE}" "${HW_BIN:?set HW_BIN}"

if [ "${1:-}" != --inside ]; then
	# Everything after this runs in RootlessKit's namespaces: user (the
	# caller -> 0, the subuid range -> 1..), mount, network (slirp4netns,
	# 10.0.2.100 on tap0) and pid (so that nothing outlives the script).
	exec rootlesskit --net=slirp4netns --mtu=65520 \
		--copy-up=/etc --copy-up=/run --copy-up=/var/lib --copy-up=/var/log \
		--disable-host-loopback --port-driver=builtin \
		-p "127.0.0.1:${HW_API_PORT:-6443}:6443/tcp" \
		-p "127.0.0.1:${HW_KUBELET_PORT:-10250}:10250/tcp" \
		--pidns "$(readlink -f "$0")" --inside
fi

say() { echo "hardway: $1 $(date +%s.%N)"; }
say namespace

# The copy-ups made /etc, /run, /var/lib and /var/log tmpfs with symlinks
# to the host's entries; replace what the node writes with its own dirs,
# persistent ones for state.
own() { # own DIR [SOURCE]: DIR writable, bound to SOURCE if given
	if [ -L "$1" ]; then rm "$1"; fi
	mkdir -p "$1"
	if [ -n "${2:-}" ]; then
		mkdir -p "$2"
		mount --bind "$2" "$1"
	fi
}
for d in lib/etcd lib/containerd lib/kubelet lib/cni lib/containers lib/usernode log/usernode; do
	own "/var/$d" "$HW_STATE/var/$d"
done
own /etc/usernode
own /etc/cni
own /etc/cni/net.d
own /run/containerd
# /run/netns too: if the host has one (ip netns made it), the copy-up's
# symlink to it is root's and containerd cannot make pods' netns there.
own /run/netns
cp "$HW_STATE"/etc/usernode/* /etc/usernode/
cp "$HW_STATE"/etc/cni/net.d/* /etc/cni/net.d/
# The node routes for its pods (the bridge plugin would set it too).
echo 1 >/proc/sys/net/ipv4/ip_forward

logs=/var/log/usernode
pki=/var/lib/usernode/pki
pids=
start() { # start NAME ARGV...: in the background, log to $logs/NAME.log
	n=$1
	shift
	"$@" >"$logs/$n.log" 2>&1 &
	pids="$! $pids" # newest first: stop in reverse order
}
stop() { # one by one, newest first: kube-apiserver hangs if etcd goes first
	trap - TERM INT
	for p in $pids; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" || true
	done
	exit 0
}
trap stop TERM INT

# start_flags NAME BINARY: start NAME with the flags gen wrote, one per line
# in /etc/usernode/NAME.args. Each line is one argument as it stands (no
# splitting on spaces, no globbing); empty lines are skipped.
start_flags() {
	name=$1 bin=$2
	set --
	while IFS= read -r arg || [ -n "$arg" ]; do
		if [ -n "$arg" ]; then set -- "$@" "$arg"; fi
	done <"/etc/usernode/$name.args"
	start "$name" "$bin" "$@"
}

start containerd containerd --config /etc/usernode/containerd.toml
start_flags etcd "$HW_BIN/etcd"
start_flags kube-apiserver "$HW_BIN/kube-apiserver"

until [ -S /run/containerd/containerd.sock ]; do sleep 0.02; done
say containerd
for img in /var/lib/usernode/images/*.tar; do
	ctr --address /run/containerd/containerd.sock --namespace k8s.io images import "$img" >/dev/null
done
say images

until curl -sf --cacert $pki/ca.crt --cert $pki/admin.crt --key $pki/admin.key \
	https://127.0.0.1:6443/readyz >/dev/null 2>&1; do sleep 0.1; done
say kube-apiserver
"$HW_BIN/kubectl" --kubeconfig /etc/usernode/admin.kubeconfig apply --server-side \
	-f /etc/usernode/bootstrap.yaml >/dev/null
say bootstrap-rbac
# CoreDNS, as usernode runs it, if the bin dir has it: its Service and
# RBAC objects, then the server.
dns=
if [ -x "$HW_BIN/coredns" ]; then
	dns=1
	"$HW_BIN/kubectl" --kubeconfig /etc/usernode/admin.kubeconfig apply --server-side \
		--field-manager=usernode --force-conflicts -f /etc/usernode/coredns.yaml >/dev/null
	say coredns-objects
fi

start_flags kube-controller-manager "$HW_BIN/kube-controller-manager"
start_flags kube-scheduler "$HW_BIN/kube-scheduler"
start_flags kubelet "$HW_BIN/kubelet"
start_flags kube-proxy "$HW_BIN/kube-proxy"
if [ -n "$dns" ]; then start coredns "$HW_BIN/coredns" -conf /etc/usernode/Corefile; fi
say started

# Until a signal (stop exits) or every component has ended.
wait
