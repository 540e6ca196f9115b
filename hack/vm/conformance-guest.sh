#!/bin/bash
# The guest half of `make conformance-vm` (hack/vm/conformance-vm.sh hands
# it in as IN_DIR/checks.sh; the image's usernode-vmtest.service runs it as
# root at boot with the out share as $1, then powers the VM off).
#
# It runs hack/conformance.sh, unchanged, as the unprivileged user `node`
# (uid 1000, lingering) against a node in full mode: user@1000.service
# delegates cpu cpuset io memory pids (the drop-in docs/vm.md gives), and
# `usernode up` runs in a transient scope with Delegate=yes
# (CONFORMANCE_UP_WRAP), so the node gets its own delegated subtree.
#
# IN_DIR holds: usernode, e2e/{e2e.test,ginkgo}, images/ (archives from
# `hack/conformance.sh --build-images`), hack/ (conformance.sh and its skip
# files) and env (the CONFORMANCE_* settings, sourced). Everything is
# copied to the guest's own disk first and the report is written there:
# the out share has stopped answering under load before (test/vm/checks.sh,
# docs/vm.md), so only the end result is copied to it, and progress goes to
# the serial console (console.log on the host).
set -uo pipefail
out=${1:?usage: checks.sh OUT_DIR}
in=$(cd "$(dirname "$0")" && pwd)
work=/var/tmp/usernode-confvm
rm -rf "$work"
mkdir -p "$work/logs"
console=/dev/ttyS0
[ -w "$console" ] || console=/dev/null
exec > "$work/logs/guest.log" 2>&1
t0=$(cut -d' ' -f1 /proc/uptime)
now() { awk -v t0="$t0" '{printf "%.0f", $1 - t0}' /proc/uptime; }
say() { echo "$*"; echo "$*" > "$console" 2>/dev/null || true; }
# Run by the EXIT trap (shellcheck cannot follow it: SC2317).
# shellcheck disable=SC2317
publish() {
  journalctl --no-pager _UID=1000 > "$work/logs/node-journal.log" 2>&1
  cp -r "$work/report" "$work/logs" "$out/" 2>/dev/null
  sync
}

NODE_UID=1000
RUNDIR=/run/user/$NODE_UID
USERCG=/sys/fs/cgroup/user.slice/user-$NODE_UID.slice/user@$NODE_UID.service
DROPIN=/etc/systemd/system/user@.service.d/delegate.conf
as_node() {
  runuser -u node -- env -i HOME=/home/node USER=node LOGNAME=node SHELL=/bin/bash NO_COLOR=1 \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
    XDG_RUNTIME_DIR=$RUNDIR DBUS_SESSION_BUS_ADDRESS=unix:path=$RUNDIR/bus "$@"
}
retry() {
  local deadline=$(( $(now) + $1 )); shift
  until "$@"; do
    [ "$(now)" -ge "$deadline" ] && return 1
    sleep 2
  done
}

# A heartbeat on the console every 60 s: load, memory, and how far ginkgo
# got (its parallel output has a • for each spec passed, an S for each
# skipped, and a report with [FAIL] for each failure).
heartbeat() {
  local e2e status_done=
  while :; do
    sleep 60
    e2e=$(find /var/tmp -maxdepth 2 -path '/var/tmp/usernode-conformance.*/e2e.log' 2>/dev/null | head -n1)
    say "heartbeat t+$(now)s load $(cut -d' ' -f1-3 /proc/loadavg) free $(free -m | awk 'NR==2 {print $4 "M, available " $7 "M"}')" \
      "${e2e:+e2e: $(grep -o '•' "$e2e" | wc -l) specs passed, $(grep -c '\[FAIL\]' "$e2e") [FAIL] lines}"
    # The node's status once it is Ready, to show the run's cgroup mode.
    if [ -z "$status_done" ] && as_node /usr/local/bin/usernode status --name conformance > "$work/logs/status.txt" 2>&1 &&
      grep -q cgroups "$work/logs/status.txt"; then
      status_done=1
      say "node status: $(head -n 4 "$work/logs/status.txt" | tr '\n' ' ')"
    fi
  done
}

say "conformance-vm: guest start at uptime $t0 s"
# The run's settings, from the host.
# shellcheck source=/dev/null
. "$in/env"

# Inputs off the 9p shares onto the guest's disk (not under /var/lib, /run
# or /tmp, which the node's sandbox replaces).
K8S=/usr/local/lib/usernode-k8s
rm -rf "$K8S"
cp -r /opt/usernode-k8s "$K8S"
chmod -R a+rX "$K8S"
install -m 0755 "$in/usernode" /usr/local/bin/usernode
mkdir -p "$work/run"
cp -r "$in/e2e" "$in/images" "$in/hack" "$work/run/"
install -m 0755 "$in/usernode" "$work/run/usernode"
mkdir -p "$work/report"
chown -R node: "$work"
say "conformance-vm: inputs copied at t+$(now)s ($(du -sh "$work/run" | cut -f1) of e2e tools and images); disk: $(df -h / | awk 'NR==2 {print $4 " free"}')"

# doctor's kernel.modules fix covers what the node uses; PrivilegedPod's
# spec also creates a dummy link, whose module the kernel cannot load from
# inside a user namespace (hack/conformance.sh probes for it).
modprobe dummy || say "conformance-vm: modprobe dummy failed"

# Full mode: cpuset and io added to Debian's Delegate=cpu memory pids.
mkdir -p "${DROPIN%/*}"
printf '[Service]\nDelegate=\nDelegate=cpu cpuset io memory pids\n' > "$DROPIN"
systemctl daemon-reload
systemctl restart "user@$NODE_UID.service"
retry 120 test -S "$RUNDIR/systemd/private" || say "conformance-vm: no user manager ($RUNDIR/systemd/private)"
retry 60 test -S "$RUNDIR/bus" || say "conformance-vm: no session bus ($RUNDIR/bus)"
say "conformance-vm: user@$NODE_UID.service delegates: $(cat "$USERCG/cgroup.controllers")"
as_node /usr/local/bin/usernode doctor > "$work/logs/doctor.txt" 2>&1
as_node systemd-run --user --scope -p Delegate=yes --quiet /usr/local/bin/usernode doctor --json > "$work/logs/doctor-scope.json" 2>&1
say "conformance-vm: doctor in a delegated scope: $(grep -o '"mode": "[a-z]*"' "$work/logs/doctor-scope.json" | tail -n1)"

heartbeat &
heartbeat_pid=$!
trap 'kill "$heartbeat_pid" 2>/dev/null; publish' EXIT

say "conformance-vm: hack/conformance.sh as node at t+$(now)s: focus ${CONFORMANCE_FOCUS:-default}, procs ${CONFORMANCE_PROCS:-8}, timeout ${CONFORMANCE_TIMEOUT:-90m}, extra skips ${CONFORMANCE_EXTRA_SKIPS:-none}"
extra=
for f in ${CONFORMANCE_EXTRA_SKIPS-}; do extra="$extra $work/run/$f"; done
settings=()
[ -z "${CONFORMANCE_FOCUS-}" ] || settings+=("CONFORMANCE_FOCUS=$CONFORMANCE_FOCUS")
rc=0
as_node env "${settings[@]}" \
  CONFORMANCE_PROCS="${CONFORMANCE_PROCS:-8}" CONFORMANCE_TIMEOUT="${CONFORMANCE_TIMEOUT:-90m}" \
  CONFORMANCE_DRY_RUN="${CONFORMANCE_DRY_RUN:-0}" CONFORMANCE_EXTRA_SKIPS="${extra# }" \
  CONFORMANCE_IMAGES="$work/run/images" CONFORMANCE_OUT="$work/report" \
  CONFORMANCE_UP_WRAP='systemd-run --user --scope -p Delegate=yes --quiet' \
  CONFORMANCE_UP_FLAGS="--timeout ${CONFORMANCE_UP_TIMEOUT:-15m}" \
  bash "$work/run/hack/conformance.sh" "$work/run/usernode" "$K8S" "$work/run/e2e" > "$work/logs/conformance.log" 2>&1 || rc=$?
say "conformance-vm: hack/conformance.sh exited $rc at t+$(now)s"
tail -n 30 "$work/logs/conformance.log" | while IFS= read -r l; do say "  $l"; done
exit "$rc"
