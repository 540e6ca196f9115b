#!/usr/bin/env bash
# Runs inside a node (usernode enter): cpab.sh VARIANT(a|b) ROUND [SETTLE] [IDLE]
# a: kube-apiserver, kube-controller-manager, kube-scheduler as three processes
# b: one `kube-node control-plane` process. Same kube-node, same flags.
set -u
V=$1 R=$2 SETTLE=${3:-90} IDLE=${4:-60}
# A kube-node built with kubenode-control-plane.patch (README.md).
KN=${KUBE_NODE:?set KUBE_NODE to a kube-node built with kubenode-control-plane.patch}
HERE=$(cd "$(dirname "$0")" && pwd)
PKI=/var/lib/usernode/pki
D=/tmp/cpab/$V$R
rm -rf "$D" && mkdir -p "$D" || exit 1
export GOGC=50 KUBE_NODE_SETTLED_GOGC=25 KUBE_NODE_SETTLE_AFTER=60s

# flags NAME: the node's own daemon's flags, one a line.
flags() {
	local p
	p=$(pgrep -f "^/opt/usernode-k8s/$1 " | head -n1)
	[ -n "$p" ] && tr '\0' '\n' < "/proc/$p/cmdline" | tail -n +2
}
flags kube-apiserver | grep -v -e '^--secure-port=' -e '^--etcd-servers=' > "$D/apiserver.flags"
printf '%s\n' --secure-port=16443 --etcd-servers=https://127.0.0.1:22379 >> "$D/apiserver.flags"
sed 's#127.0.0.1:6443#127.0.0.1:16443#' /etc/usernode/controller-manager.kubeconfig > "$D/cm.kubeconfig"
sed 's#127.0.0.1:6443#127.0.0.1:16443#' /etc/usernode/scheduler.kubeconfig > "$D/sched.kubeconfig"
flags kube-controller-manager | sed "s#/etc/usernode/controller-manager.kubeconfig#$D/cm.kubeconfig#" > "$D/cm.flags"
echo --secure-port=20257 >> "$D/cm.flags"
flags kube-scheduler | sed "s#/etc/usernode/scheduler.kubeconfig#$D/sched.kubeconfig#" > "$D/sched.flags"
echo --secure-port=20259 >> "$D/sched.flags"
mapfile -t AF < "$D/apiserver.flags"
mapfile -t CF < "$D/cm.flags"
mapfile -t SF < "$D/sched.flags"
if [ "${#AF[@]}" -le 10 ] || [ "${#CF[@]}" -le 5 ] || [ "${#SF[@]}" -le 3 ]; then
	echo "the node's daemons' flags not found: run this inside a running node" >&2
	exit 1
fi

"$KN" etcd --name=cpab --data-dir="$D/etcd" \
	--listen-client-urls=https://127.0.0.1:22379 --advertise-client-urls=https://127.0.0.1:22379 \
	--listen-peer-urls=https://127.0.0.1:22380 --initial-advertise-peer-urls=https://127.0.0.1:22380 \
	--initial-cluster=cpab=https://127.0.0.1:22380 --initial-cluster-state=new \
	--listen-metrics-urls=http://127.0.0.1:22381 \
	--cert-file=$PKI/etcd/server.crt --key-file=$PKI/etcd/server.key \
	--client-cert-auth=true --trusted-ca-file=$PKI/etcd/ca.crt \
	--peer-cert-file=$PKI/etcd/peer.crt --peer-key-file=$PKI/etcd/peer.key \
	--peer-client-cert-auth=true --peer-trusted-ca-file=$PKI/etcd/ca.crt \
	--snapshot-count=10000 --quota-backend-bytes=1073741824 > "$D/etcd.log" 2>&1 &
ETCD=$!
for _ in $(seq 100); do
	curl -s http://127.0.0.1:22381/health | grep -q true && break
	sleep 0.2
done

t0=$(date +%s.%N)
PIDS=()
if [ "$V" = a ]; then
	"$KN" kube-apiserver "${AF[@]}" > "$D/apiserver.log" 2>&1 &
	PIDS+=($!)
	"$KN" kube-controller-manager "${CF[@]}" > "$D/cm.log" 2>&1 &
	PIDS+=($!)
	"$KN" kube-scheduler "${SF[@]}" > "$D/sched.log" 2>&1 &
	PIDS+=($!)
else
	"$KN" control-plane kube-apiserver "${AF[@]}" --- kube-controller-manager "${CF[@]}" --- kube-scheduler "${SF[@]}" > "$D/cp.log" 2>&1 &
	PIDS+=($!)
fi
ticks() {
	local s=0 p
	for p in "${PIDS[@]}"; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
	echo "$s"
}
ok() { curl -sk --max-time 2 "$@" 2>/dev/null | grep -qx ok; }
ready=
for _ in $(seq 600); do
	if ok --cert $PKI/admin.crt --key $PKI/admin.key https://127.0.0.1:16443/readyz &&
		ok https://127.0.0.1:20257/healthz && ok https://127.0.0.1:20259/readyz; then
		ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
		break
	fi
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || { echo "$V$R: pid $p died" >&2; break 2; }
	done
	sleep 0.25
done
rt=$(ticks)
el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
sleep $((SETTLE - el))
m1=$("$HERE/rollup.sh" "${PIDS[@]}"); t1=$(ticks); e1=$("$HERE/rollup.sh" "$ETCD")
sleep "$IDLE"
m2=$("$HERE/rollup.sh" "${PIDS[@]}"); t2=$(ticks); e2=$("$HERE/rollup.sh" "$ETCD")
sum() { echo "$1" | awk '{a+=$3;b+=$4;c+=$5;k+=$6} END{printf "%.1f %.1f %.1f kn=%.1f", a, b, c, k}'; }
echo "RESULT $V $R ready_s=$ready ready_ticks=$rt pss@${SETTLE}s(total/anon/file)=$(sum "$m1") pss@$((SETTLE + IDLE))s=$(sum "$m2") idle_ticks_${IDLE}s=$((t2 - t1)) total_ticks=$t2"
# prefix TEXT LINES: each line of LINES after TEXT.
prefix() { printf '%s\n' "$2" | while IFS= read -r l; do printf '%s%s\n' "$1" "$l"; done; }
prefix '  @settle ' "$m1"
prefix '  @end    ' "$m2"
prefix '  @settle etcd2 ' "$e1"
prefix '  @end    etcd2 ' "$e2"
kill "${PIDS[@]}"
sleep 3
kill -9 "${PIDS[@]}" 2>/dev/null
kill "$ETCD"
wait 2>/dev/null
grep -ciE 'panic|duplicate|already registered' "$D"/*.log | sed 's/^/  errs /'
