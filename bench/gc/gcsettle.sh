#!/usr/bin/env bash
# The GC target's trade-off (docs/benchmarks.md, "A settled GC target"):
# for each (usernode binary, Kubernetes bin dir) pair, alternated ROUNDS
# times, a warm `up` as USER, then after 75 s: PSS of the node's
# processes and kube-apiserver's, CPU of them all over 60 idle seconds,
# and the CPU and wall time of a 20-pod Deployment created, Running,
# deleted and gone. Run as root (it reads the user's /proc).
#
#   bench/gc/gcsettle.sh USER ROUNDS LABEL=USERNODE:BINDIR [LABEL=USERNODE:BINDIR ...]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 USER ROUNDS LABEL=USERNODE:BINDIR..." >&2; exit 2; }
user=$1 rounds=$2
shift 2
uid=$(id -u "$user")
home=$(getent passwd "$user" | cut -d: -f6)
as() { setpriv --reuid="$uid" --regid="$(id -g "$user")" --init-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	HOME="$home" USER="$user" XDG_RUNTIME_DIR="/run/user/$uid" "$@"; }
pss() { # PSS in MB of uid's processes: all, and those whose argv0 ends in $1
	local p n k
	for p in $(pgrep -u "$uid"); do
		n=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -d' ' -f1) || continue
		k=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
		echo "${n##*/} $k"
	done | awk -v m="$1" '{t+=$2} $1==m {c+=$2} END {printf "%.1f %.1f\n", t/1024, c/1024}'
}
cpu() { # CPU ticks (utime+stime) of uid's live processes
	local p
	for p in $(pgrep -u "$uid"); do cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null || true; done | awk '{t+=$1+$2} END {print t+0}'
}
printf '%-10s %-8s %9s %14s %9s %11s %9s\n' side Ready node_PSS apiserver_PSS idle_cpu churn_cpu churn_s
for ((r = 1; r <= rounds; r++)); do
	for side in "$@"; do
		label=${side%%=*} rest=${side#*=}
		un=${rest%%:*} bd=${rest#*:}
		kc="$home/.local/share/usernode/usernode/kubeconfig"
		k() { as "$bd/kubectl" --kubeconfig "$kc" "$@"; }
		as "$un" down >/dev/null 2>&1 || true
		ready=$(as "$un" up -d --bin-dir "$bd" 2>&1 | grep -oE 'Ready [0-9.]+s' | cut -d' ' -f2)
		sleep 75
		read -r total api < <(pss kube-apiserver)
		c0=$(cpu); sleep 60; c1=$(cpu)
		t0=$(date +%s.%N)
		k create deployment churn --image=registry.k8s.io/pause:3.10 --replicas=20 >/dev/null
		k patch deployment churn --type=json -p '[{"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"}]' >/dev/null
		k rollout status deployment churn --timeout=5m >/dev/null
		k delete deployment churn --wait >/dev/null
		while [ "$(k get pods --no-headers 2>/dev/null | wc -l)" != 0 ]; do sleep 0.5; done
		t1=$(date +%s.%N) c2=$(cpu)
		printf '%-10s %-8s %9s %14s %9s %11s %9.1f\n' "$label" "$ready" "$total" "$api" $((c1 - c0)) $((c2 - c1)) "$(echo "$t1 - $t0" | bc)"
		as "$un" down >/dev/null 2>&1 || true
	done
done
