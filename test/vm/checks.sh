#!/bin/bash
# The VM tier's checks. hack/vm/test-vm.sh hands this script in over 9p;
# the image's usernode-vmtest.service runs it as root at boot, and it runs
# everything usernode does as the unprivileged user `node` (uid 1000,
# subuid/subgid 100000:65536, lingering on), through node's systemd user
# manager. One line per check goes to OUT/results.txt:
#   PASS|FAIL NAME DETAIL
# Logs go to OUT/logs/. The host parses the results.
#
# The checks are functions run through `check NAME FUNC`, which shellcheck
# cannot follow: it reports their bodies as unreachable (SC2317).
# (A directive before the first command covers the whole file.)
# shellcheck disable=SC2317
#
# Two variants, one boot:
#   full   Debian's Delegate=cpu memory pids for user@.service plus a
#          drop-in adding cpuset and io: doctor all PASS, the node in full
#          mode under `usernode install`'s unit, limits enforced.
#   nocpu  a drop-in that takes cpu away: doctor FAILs with the fix, and
#          `up` runs in degraded mode as documented (docs/vm.md).
#
# The run works on the guest's own disk, not on the 9p shares: twice the
# out share stopped answering once the pods started (every write to it,
# and so the checks, hung until qemu was killed, with the node still
# busy). The Kubernetes binaries are copied off their share first,
# results and logs are written locally and copied to the share at the
# end, and progress goes to the serial console (console.log on the host),
# which needs no 9p.
set -uo pipefail
out=${1:?usage: checks.sh OUT_DIR}
in=$(cd "$(dirname "$0")" && pwd)
work=/var/tmp/usernode-vm
rm -rf "$work"
res=$work/results.txt
logs=$work/logs
mkdir -p "$logs"
: > "$res"
t0=$(cut -d' ' -f1 /proc/uptime)
console=/dev/ttyS0
[ -w "$console" ] || console=/dev/null
exec > "$work/checks.log" 2>&1
publish() { cp -r "$work/." "$out/"; sync; }
# Opened afresh for each line: getty's vhangup at boot revokes any
# descriptor to the console opened before it.
say() { echo "$*" > "$console" 2>/dev/null || true; }

# Not under /var/lib, /run or /tmp, which the node's sandbox replaces.
K8S=/usr/local/lib/usernode-k8s
rm -rf "$K8S"
cp -r /opt/usernode-k8s "$K8S"
chmod -R a+rX "$K8S"
UN=/usr/local/bin/usernode
NODE_UID=1000
RUNDIR=/run/user/$NODE_UID
DATA=/home/node/.local/share/usernode/usernode
KUBECONFIG_NODE=$DATA/kubeconfig
USERCG=/sys/fs/cgroup/user.slice/user-$NODE_UID.slice/user@$NODE_UID.service
DROPIN=/etc/systemd/system/user@.service.d/delegate.conf
BUSYBOX=docker.io/library/busybox:usernode

now() { awk -v t0="$t0" '{printf "%.0f", $1 - t0}' /proc/uptime; }
oneline() { tr '\n' ' ' | tr -s ' ' | cut -c1-400; }
# the end of a failure's output says most
tailline() { tr '\n' ' ' | tr -s ' ' | rev | cut -c1-500 | rev; }
pass() { echo "PASS $1 ${2:-} [t+$(now)s]" >> "$res"; echo "== PASS $1 ${2:-}"; say "PASS $1 [t+$(now)s]"; }
fail() { echo "FAIL $1 ${2:-} [t+$(now)s]" >> "$res"; echo "== FAIL $1 ${2:-}"; say "FAIL $1 [t+$(now)s]: $(printf '%s' "${2:-}" | cut -c1-300)"; }
# check NAME CMD...: PASS when CMD succeeds; its output is the detail.
# CMD runs in its own process group and is killed after CHECK_TIMEOUT
# seconds, so a check that hangs (a CI run once lost the whole VM budget
# to one) fails with what it printed, and the checks after it still run.
CHECK_TIMEOUT=${CHECK_TIMEOUT:-420}
check() {
  local name=$1 o rc pid deadline f; shift
  mkdir -p "$logs/checks"; f=$logs/checks/$name.txt
  echo "== $name: $* [t+$(now)s]"; say "== $name [t+$(now)s]"
  set -m; "$@" > "$f" 2>&1 & pid=$!; set +m
  deadline=$(( $(now) + CHECK_TIMEOUT ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(now)" -ge "$deadline" ]; then
      kill -TERM -- "-$pid" 2>/dev/null; sleep 3; kill -KILL -- "-$pid" 2>/dev/null
      echo "TIMEOUT: $name did not finish within ${CHECK_TIMEOUT}s" >> "$f"
      break
    fi
    sleep 1
  done
  wait "$pid"; rc=$?
  o=$(cat "$f")
  if [ $rc -eq 0 ]; then pass "$name" "$(printf '%s' "$o" | oneline)"; else fail "$name" "$(printf '%s' "$o" | tailline)"; fi
  return $rc
}
as_node() {
  runuser -u node -- env -i HOME=/home/node USER=node LOGNAME=node SHELL=/bin/bash NO_COLOR=1 \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
    XDG_RUNTIME_DIR=$RUNDIR DBUS_SESSION_BUS_ADDRESS=unix:path=$RUNDIR/bus "$@"
}
# Every request has a deadline: kubectl waits forever on an API server
# that accepted the connection and never answers. kc_wait is for
# `kubectl wait`, whose watch outlives a request timeout.
kc() { as_node "$K8S/kubectl" --kubeconfig "$KUBECONFIG_NODE" --request-timeout=60s "$@"; }
kc_wait() { as_node "$K8S/kubectl" --kubeconfig "$KUBECONFIG_NODE" wait "$@"; }
unit_cgroup() { echo "/sys/fs/cgroup$(as_node systemctl --user show -p ControlGroup --value usernode.service)"; }

# retry SECONDS CMD...: run CMD until it succeeds or SECONDS pass.
retry() {
  local deadline=$(( $(now) + $1 )); shift
  until "$@"; do
    [ "$(now)" -ge "$deadline" ] && return 1
    sleep 2
  done
}

# delegate CONTROLLERS...: user@.service's Delegate= for the run, applied
# by restarting node's user manager (lingering starts it again).
delegate() {
  mkdir -p "${DROPIN%/*}"
  printf '[Service]\nDelegate=\nDelegate=%s\n' "$*" > "$DROPIN"
  systemctl daemon-reload
  systemctl restart "user@$NODE_UID.service"
  retry 60 test -S "$RUNDIR/systemd/private"
  retry 60 test -S "$RUNDIR/bus"
  local have; have=$(cat "$USERCG/cgroup.controllers")
  echo "user@$NODE_UID.service delegates: $have"
  [ "$have" = "$(sort_controllers "$@")" ]
}
# in the kernel's order, as cgroup.controllers lists them
sort_controllers() {
  local c o=; for c in cpuset cpu io memory hugetlb pids rdma misc; do
    case " $* " in *" $c "*) o="$o $c";; esac; done; echo "${o# }"
}

# doctor_statuses: "ID STATUS" per check, from doctor --json.
doctor_statuses() {
  as_node "$UN" doctor --json > "$logs/doctor-$1.json" 2>&1
  awk -F'"' '/"id":/ {id=$4} /"status":/ {print id, $4}' "$logs/doctor-$1.json"
}

# node_procs: processes the node could leave behind: any of the subuid
# range, any of node's in the unit's cgroup, and node's components by name.
node_procs() {
  ps -eo pid=,uid=,comm=,cgroup= --no-headers | awk -v lo=100000 -v hi=165535 '
    $2 >= lo && $2 <= hi { print; next }
    $2 == 1000 && ($4 ~ /usernode\.service/ || $3 ~ /^(usernode|containerd|containerd-shim|runc|crun|crio|conmon|pinns|etcd|kube|slirp4netns|pasta|passt|sleep|httpd)/) { print }'
}
host_mounts() { awk '{print $5, $9}' /proc/1/mountinfo | sort; }

collect_logs() {
  local tag=$1
  mkdir -p "$logs/$tag"
  cp -r "$DATA/var/log/usernode/." "$logs/$tag/" 2>/dev/null
  journalctl --no-pager _SYSTEMD_USER_UNIT=usernode.service > "$logs/$tag/unit-journal.log" 2>&1
  kc get pods -A -o wide > "$logs/$tag/pods.txt" 2>&1
  kc describe pods > "$logs/$tag/pods-describe.txt" 2>&1
}

# A heartbeat on the host's share every 20 s: load, memory and the busiest
# processes, so that a run that stalls (a CI run once did, after the pods
# were created) shows what the guest was doing; test-vm.sh prints its end.
heartbeat() {
  local top
  while :; do
    top=$(ps -eo pcpu=,stat=,comm= --sort=-pcpu | head -n 4 | awk '{printf "%s(%s%%,%s) ", $3, $1, $2}')
    {
      echo "== t+$(now)s load $(cut -d' ' -f1-3 /proc/loadavg)"
      free -m | sed -n 2p
      ps -eo pid,user:12,rss,pcpu,stat,etime,comm --sort=-pcpu | head -n 8
    } >> "$logs/heartbeat.log" 2>&1
    say "heartbeat t+$(now)s load $(cut -d' ' -f1 /proc/loadavg) free $(free -m | awk 'NR==2 {print $4}')M: $top"
    sleep 20
  done
}
heartbeat &
heartbeat_pid=$!
trap 'kill "$heartbeat_pid" 2>/dev/null; publish' EXIT

# Wait for the user manager lingering started at boot.
retry 120 test -S "$RUNDIR/systemd/private" || fail boot.user-manager "no $RUNDIR/systemd/private"
install -m 0755 "$in/usernode" "$UN"
echo "checks start at uptime $t0 s; usernode $("$UN" version 2>/dev/null || true)"

########## variant full: Debian's default plus cpuset and io ##########
check delegation.full delegate cpu cpuset io memory pids

# The full variant's node keeps its state on a filesystem of its own, a
# loop-mounted ext4 image (root mounts it, node owns it), so that
# disk.pressure-eviction can fill it without filling the guest's disk.
# 1.5 GiB: `up` asks for 512 MiB free at each start and this node's state
# stays under 300 MiB; every MiB more is a MiB the hog must write.
# Mounted before mounts_before is taken (the stop checks see it as the
# host's) and unmounted after `uninstall`, so the CRI-O, containerd 2.x and
# nocpu nodes (fresh states, `down --purge`) run on the guest's disk as
# before. Not in $work: that is copied to the 9p share at the end.
STATEFS_IMG=/var/tmp/usernode-statefs.img
STATEFS_SIZE=1536M
statefs_mount() {
  umount "$DATA" 2>/dev/null
  rm -f "$STATEFS_IMG"
  truncate -s "$STATEFS_SIZE" "$STATEFS_IMG" &&
  mkfs.ext4 -q -m 0 "$STATEFS_IMG" || return 1
  modprobe loop 2>/dev/null
  as_node mkdir -p "$DATA" &&
  mount -o loop "$STATEFS_IMG" "$DATA" &&
  rmdir "$DATA/lost+found" &&
  chown node:node "$DATA" && chmod 0700 "$DATA" || return 1
  findmnt -n -o SOURCE,TARGET,FSTYPE,SIZE,AVAIL "$DATA"
}
check statefs.mount statefs_mount

do_install() {
  as_node "$UN" install --bin-dir "$K8S" &&
  test -f /home/node/.config/systemd/user/usernode.service &&
  as_node systemctl --user show -p Type -p Delegate -p KillMode -p NotifyAccess usernode.service
}
check install do_install
cp /home/node/.config/systemd/user/usernode.service "$logs/usernode.service" 2>/dev/null

# doctor as node from its shell: every check PASS, WARN only where docs/vm.md
# says why (ports below 1024 need a sysctl the VM leaves at Debian's default).
doctor_full() {
  local s bad
  s=$(doctor_statuses full)
  echo "$s" | tr '\n' ' '; echo
  # The VM has no network of its own: the multi-node checks (a host IP
  # other hosts reach) may warn.
  bad=$(echo "$s" | awk '$2 == "FAIL" || ($2 == "WARN" && $1 != "sysctl.ip_unprivileged_port_start" && $1 !~ /^multinode\./)')
  [ -z "$bad" ] || { echo "unexpected: $bad"; return 1; }
  grep -q '"mode": "full"' "$logs/doctor-full.json" || { echo "summary mode is not full"; return 1; }
}
check doctor.full doctor_full

mounts_before=$(host_mounts)
start_node() {
  local t; t=$(now)
  as_node systemctl --user start usernode.service || { as_node systemctl --user status usernode.service --no-pager; return 1; }
  echo "systemctl --user start returned after $(( $(now) - t )) s: $(as_node systemctl --user is-active usernode.service)"
}
check node.start start_node

node_ready() {
  local s
  s=$(kc get nodes --no-headers 2>&1) || { echo "$s"; return 1; }
  echo "$s"
  echo "$s" | grep -q ' Ready '
}
check kubectl.nodes node_ready

status_full() {
  local s; s=$(as_node "$UN" status); echo "$s"
  echo "$s" | grep -q 'cgroups full' && echo "$s" | grep -q 'doctor: full'
}
check status.full status_full

CG=$(unit_cgroup)
qos_tree() {
  local d ok=0
  for d in supervisor node node/init node/kubepods node/kubepods/burstable node/kubepods/besteffort; do
    if [ -d "$CG/$d" ]; then echo "$d"; else echo "MISSING $d"; ok=1; fi
  done
  echo "node/init: $(wc -l < "$CG/node/init/cgroup.procs") procs; kubepods memory.max $(cat "$CG/node/kubepods/memory.max")"
  # the kubelet and containerd run in the node's leaf, not the supervisor's
  grep -qx "$(pgrep -u node -x kubelet)" "$CG/node/init/cgroup.procs" || { echo "kubelet is not in node/init"; ok=1; }
  return "$ok"
}
check cgroup.qos-tree qos_tree

# The pod that allocates 200 MiB under a 64 MiB limit: OOMKilled in full
# mode, runs to the end in degraded mode. tail keeps a line without a
# newline in memory (the image links few applets; busybox runs the rest).
oom_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "head -c 200m /dev/zero | busybox tail | busybox wc -c"]
    resources:
      limits: {memory: 64Mi}
EOF
}

apply_pods() { kc apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: limits}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 250m, memory: 96Mi}
---
$(oom_pod)
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo usernode-vm-ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 30080}
EOF
}
check pods.apply apply_pods
pods_ready() { kc_wait --for=condition=Ready pod/limits pod/web --timeout=240s; }
check pods.ready pods_ready

pod_limits() {
  local uid d ok=0
  uid=$(kc get pod limits -o jsonpath='{.metadata.uid}')
  # The pod's cgroup is pod<uid> (cgroupfs driver) or pod<uid_with_underscores> (systemd).
  for d in "$CG"/node/kubepods/burstable/pod"$uid" "$CG"/node/kubepods/burstable/pod"${uid//-/_}" ""; do
    [ -d "$d" ] && break
  done
  [ -n "$d" ] || { echo "no cgroup for pod $uid under $CG/node/kubepods/burstable"; return 1; }
  echo "pod ${d#"$CG"/}: memory.max $(cat "$d/memory.max") cpu.max $(cat "$d/cpu.max");"
  [ "$(cat "$d/memory.max")" = 100663296 ] || ok=1
  [ "$(cat "$d/cpu.max")" = "25000 100000" ] || ok=1
  # The container's own cgroup, found from its process (the pod's only
  # `sleep 3600`), not from a name: containerd names it by the container
  # ID, CRI-O crio-ID, and a runtime may nest it deeper.
  local pid c
  pid=$(pgrep -x -f 'sleep 3600' | head -n1)
  [ -n "$pid" ] || { echo "no process of the limits pod (sleep 3600)"; return 1; }
  c=/sys/fs/cgroup$(awk -F: '$1 == "0" { print $3 }' "/proc/$pid/cgroup")
  case $c in
    "$d"/?*) ;;
    *)
      # CRI-O with _CRIO_ROOTLESS=1 (the seed's setting) clears every
      # container's cgroups path (server/rootless_linux.go in 1.36:
      # g.SetLinuxCgroupsPath("")), so runc puts it at the node's root as
      # its ID, outside its pod's cgroup: seen in this tier. The
      # container's own limits still hold there; pod-level accounting
      # (QoS, node allocatable) does not cover it (README, CRI-O row).
      if [ "${RUNTIME:-}" = crio ] && [ "$c" = "$CG/node/${c##*/}" ]; then
        echo "CRI-O: the container (pid $pid) runs in ${c#"$CG"/}, outside its pod's cgroup (CRI-O's rootless mode);"
      else
        echo "the container's process (pid $pid) is in ${c#"$CG"/}, not under its pod's cgroup; the pod's cgroup holds: $(find "$d" -mindepth 1 -maxdepth 2 -type d | sed "s|^$d/||" | oneline)"; return 1
      fi;;
  esac
  echo "container (pid $pid) ${c#"$d"/}: memory.max $(cat "$c/memory.max") cpu.max $(cat "$c/cpu.max") cpu.weight $(cat "$c/cpu.weight") memory.oom.group $(cat "$c/memory.oom.group") pids.max $(cat "$c/pids.max")"
  [ "$(cat "$c/memory.max")" = 100663296 ] || ok=1
  [ "$(cat "$c/cpu.max")" = "25000 100000" ] || ok=1
  return "$ok"
}
check pod.limits-cgroup pod_limits

oom_reason() { kc get pod oom -o jsonpath='{.status.containerStatuses[0].state.terminated.reason}'; }
# wait_oom_reason prints how the oom pod's container ended, once it has.
# One slow answer of the API (the guest's load reaches 10 under TCG) must
# not read as no reason: it asks again until the deadline.
wait_oom_reason() {
  local r="" deadline=$(( $(now) + 240 ))
  until [ -n "$r" ] || [ "$(now)" -ge "$deadline" ]; do
    r=$(oom_reason 2>/dev/null) || r=""
    [ -n "$r" ] || sleep 2
  done
  echo "$r"
}
pod_oom() {
  local r; r=$(wait_oom_reason)
  echo "oom pod (64Mi limit, 200Mi allocated): terminated reason=$r exitCode=$(kc get pod oom -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')"
  [ "$r" = OOMKilled ]
}
check pod.oomkilled pod_oom

# The kubelet's stats API (eviction, metrics-server, kubectl top): the
# node's filesystem and the limits pod with its own figures, in full mode
# from the pod's cgroup.
summary_has_pod() {
  local s; s=$(kc get --raw /api/v1/nodes/usernode/proxy/stats/summary 2>&1) || { echo "$s" | tail -n 3; return 1; }
  echo "$s" | grep -q '"capacityBytes"' && echo "$s" | grep -q '"name": "limits"' && echo "$s" | grep -q '"ephemeral-storage"'
}
stats_summary() { retry 120 summary_has_pod && echo "/stats/summary: node fs, the limits pod and its ephemeral storage"; }
check stats.summary stats_summary

nodeport() { retry 90 curl -sf --max-time 5 http://127.0.0.1:30080/ && return 0; curl -sv --max-time 5 http://127.0.0.1:30080/; return 1; }
check nodeport nodeport

uids_before=$(kc get pods -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid} {end}')
collect_logs full-1

stopped_clean() {
  local t p m ok=0
  t=$(now)
  as_node systemctl --user stop usernode.service || ok=1
  echo "stop took $(( $(now) - t )) s;"
  p=$(node_procs); [ -z "$p" ] || { echo "processes left: $p"; ok=1; }
  m=$(diff <(echo "$mounts_before") <(host_mounts)) || { echo "mounts changed: $m"; ok=1; }
  [ ! -e "$CG" ] || { echo "cgroup left: $(find "$CG" -type d | head)"; ok=1; }
  [ "$ok" -eq 0 ] && echo "no process, mount or cgroup ($CG) left"
  return "$ok"
}
check node.stop-clean stopped_clean

restart_same_pods() {
  start_node || return 1
  kc_wait --for=condition=Ready pod/limits pod/web --timeout=240s || return 1
  local now_uids; now_uids=$(kc get pods -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid} {end}')
  echo "before: $uids_before; after: $now_uids"
  [ "$now_uids" = "$uids_before" ] && retry 60 curl -sf --max-time 5 http://127.0.0.1:30080/
}
check node.restart-same-pods restart_same_pods
CG=$(unit_cgroup)
check pod.limits-cgroup-after-restart pod_limits

# Node-pressure eviction in full mode (test-faults' TestFaultsDiskFull
# asserts the same on the host, degraded): a pod fills its emptyDir, on
# the state dir's filesystem (statefs.mount), to half of the kubelet's
# nodefs threshold (1% free, pkg/node/kubelet EvictionHard), at most
# 24 MiB a second so that the kubelet's volume stats (every 10 s) see it
# grow and rank it first; then it waits. The kubelet sets DiskPressure,
# evicts that pod alone, its emptyDir's space comes back, the other pods
# run on (the same UIDs and phases) and DiskPressure clears by itself
# (evictionPressureTransitionPeriod 30 s). The image links few applets;
# busybox runs the rest.
disk_hog() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "set -- \$(busybox df -k /data | busybox tail -n 1); leave=\$((\$2 / 1024 / 200)); [ \$leave -lt 4 ] && leave=4; n=\$((\$4 / 1024 - leave)); i=0; while [ \$i -lt \$n ]; do c=\$((n - i)); [ \$c -gt 24 ] && c=24; busybox dd if=/dev/zero of=/data/f\$i bs=1M count=\$c 2>/dev/null; i=\$((i + c)); busybox sleep 1; done; exec busybox sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
EOF
}
# the pods but the hog: name=uid:phase
other_pods() { kc get pods -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}:{.status.phase}{"\n"}{end}' | grep -v '^hog=' | sort | tr '\n' ' '; }
# same_pods BEFORE AFTER: the same pods (names and UIDs), and every one
# that was Running still is (the oom pod may have ended meanwhile).
same_pods() {
  local p
  [ "$(for p in $1; do echo "${p%%:*}"; done)" = "$(for p in $2; do echo "${p%%:*}"; done)" ] || return 1
  for p in $1; do
    case $p in *:Running) case " $2 " in *" $p "*) ;; *) return 1;; esac;; esac
  done
}
disk_pressure() { kc get node usernode -o jsonpath='{.status.conditions[?(@.type=="DiskPressure")].status}'; }
statefs_free() { df -k --output=avail,size "$DATA" | awk 'NR == 2 { printf "%d MiB free of %d MiB", $1 / 1024, $2 / 1024 }'; }
statefs_half_free() { df -k --output=avail,size "$DATA" | awk 'NR == 2 { exit !($1 > $2 / 2) }'; }
disk_eviction() {
  # not t0: now() reads the script's
  local log=$logs/disk-eviction.txt before after began deadline r p saw=no evicted cleared msg
  before=$(other_pods) || { echo "pods: $before"; return 1; }
  echo "before: $before; $(statefs_free)" >> "$log"
  began=$(now)
  disk_hog | kc apply -f - >> "$log" 2>&1 || { tail -n 3 "$log"; return 1; }
  deadline=$(( began + 240 ))
  while :; do
    p=$(disk_pressure 2>&1); [ "$p" = True ] && saw=yes
    r=$(kc get pod hog -o jsonpath='{.status.phase}/{.status.reason}: {.status.message}' 2>&1)
    echo "t+$(( $(now) - began ))s DiskPressure=$p hog=$r; $(statefs_free)" >> "$log"
    case $r in Failed/Evicted*) break;; esac
    if [ "$(now)" -ge "$deadline" ]; then
      echo "the hog was not evicted within 240 s: $r; DiskPressure $p; $(statefs_free); pods: $(other_pods)"; return 1
    fi
    sleep 2
  done
  evicted=$(( $(now) - began ))
  msg=$(kc get pod hog -o jsonpath='{.status.message}')
  case $msg in *ephemeral-storage*|*DiskPressure*) ;; *) echo "the eviction does not name the disk: $msg"; return 1;; esac
  after=$(other_pods)
  same_pods "$before" "$after" || { echo "the other pods after the eviction: $after; before: $before"; return 1; }
  # The evicted pod's emptyDir goes with it.
  retry 60 statefs_half_free || { echo "the emptyDir's space did not come back: $(statefs_free)"; return 1; }
  echo "t+$(( $(now) - began ))s space back: $(statefs_free)" >> "$log"
  # DiskPressure stays True for the transition period after the eviction,
  # longer than a poll: it must be seen.
  deadline=$(( began + evicted + 150 ))
  while :; do
    p=$(disk_pressure 2>&1)
    echo "t+$(( $(now) - began ))s DiskPressure=$p" >> "$log"
    [ "$p" = True ] && saw=yes
    [ "$p" = False ] && break
    [ "$(now)" -ge "$deadline" ] && { echo "DiskPressure still $p 150 s after the eviction"; return 1; }
    sleep 2
  done
  cleared=$(( $(now) - began - evicted ))
  [ "$saw" = yes ] || { echo "DiskPressure was never seen True"; return 1; }
  after=$(other_pods)
  same_pods "$before" "$after" || { echo "the other pods after DiskPressure cleared: $after; before: $before"; return 1; }
  echo "after: $after; the hog's message: $msg" >> "$log"
  retry 30 curl -sf --max-time 5 -o /dev/null http://127.0.0.1:30080/ || { echo "the NodePort does not answer after the eviction"; return 1; }
  kc delete pod hog --wait=false > /dev/null
  # Names, not UIDs: the line is cut at 400 characters (the log has all).
  local pod names=
  for pod in $after; do names="$names${pod%%=*}:${pod##*:} "; done
  echo "hog evicted ${evicted} s after it was created, DiskPressure True; False ${cleared} s after the eviction; $(statefs_free); the same pods: ${names}the NodePort answers; \"$msg\""
}
check disk.pressure-eviction disk_eviction
collect_logs full-2

uninstall_clean() {
  as_node "$UN" uninstall || return 1
  [ ! -e /home/node/.config/systemd/user/usernode.service ] || { echo "unit file left"; return 1; }
  local p; p=$(node_procs); [ -z "$p" ] || { echo "processes left: $p"; return 1; }
  [ ! -e "$CG" ] || { echo "cgroup left"; return 1; }
  echo "unit stopped and removed"
}
check uninstall uninstall_clean

# The loop filesystem goes before the fresh states below; the nocpu
# variant's stop check compares the mounts with these.
statefs_umount() {
  retry 30 umount "$DATA" || { echo "umount $DATA failed for 30 s; detached it lazily"; umount -l "$DATA"; return 1; }
  rm -f "$STATEFS_IMG"
  echo "unmounted $DATA"
}
check statefs.umount statefs_umount
mounts_before=$(host_mounts)

########## variant full, the other runtimes: CRI-O, containerd 2.x ##########
# Each runs the node in full mode under `usernode install`'s unit, from a
# fresh state: the KEP's check (the kubelet runs in a user namespace), the
# runtime it reports, pod limits in the pod's cgroup, the 64Mi pod
# OOMKilled, and a clean stop. containerd 2.x cannot run without
# delegation (the host tier tests its refusal); this is where it runs.
CONTAINERD2=$K8S/containerd2/containerd
purge_node() { as_node "$UN" down --purge > /dev/null 2>&1; [ ! -e "$DATA" ] || { echo "state $DATA left"; return 1; }; }

# runtime_up RUNTIME_PREFIX FLAGS...: installed and started with FLAGS,
# Ready, reporting a runtime version starting RUNTIME_PREFIX, in a user
# namespace, in full mode.
runtime_up() {
  local want=$1 info s; shift
  purge_node || return 1
  as_node "$UN" install --bin-dir "$K8S" "$@" || return 1
  start_node || return 1
  retry 120 node_ready > /dev/null || { node_ready; return 1; }
  info=$(kc get node usernode -o jsonpath='{.status.nodeInfo.containerRuntimeVersion} userns={.status.nodeInfo.runningInUserNamespace}')
  echo "node: $info"
  case $info in "$want"*" userns=true") ;; *) echo "want runtime $want* in a user namespace"; return 1;; esac
  s=$(as_node "$UN" status); echo "$s" | head -n 3 | oneline; echo
  echo "$s" | grep -q 'cgroups full' || { echo "status does not say cgroups full"; return 1; }
}
runtime_pods() {
  apply_pods > /dev/null || return 1
  pods_ready || return 1
  CG=$(unit_cgroup)
  pod_limits || return 1
  pod_oom || return 1
  # CRI-O's pods reach the kubelet's stats through cAdvisor's view of the
  # containers' cgroups, which CRI-O's rootless mode puts outside the pods
  # (above): its pods are not in /stats/summary (README, CRI-O row).
  [ "${RUNTIME:-}" = crio ] && { echo "stats: not checked for CRI-O (its containers are outside their pods' cgroups)"; return 0; }
  stats_summary
}

RUNTIME=crio
check runtime.crio.up runtime_up cri-o:// --cri crio
check runtime.crio.pods runtime_pods
collect_logs crio
check runtime.crio.stop-clean uninstall_clean

runtime_containerd2() {
  [ -x "$CONTAINERD2" ] || { echo "no $CONTAINERD2: make test-vm copies hack/build-containerd.sh's build there"; return 1; }
  runtime_up containerd://2. --containerd "$CONTAINERD2"
}
RUNTIME=containerd2
check runtime.containerd2.up runtime_containerd2
check runtime.containerd2.pods runtime_pods
collect_logs containerd2
check runtime.containerd2.stop-clean uninstall_clean
purge_node

########## variant nocpu: cpu not delegated ##########
check delegation.nocpu delegate cpuset io memory pids

doctor_nocpu() {
  local s
  s=$(doctor_statuses nocpu); echo "$s" | grep cgroup | oneline; echo
  echo "$s" | grep -qx 'cgroup.delegation FAIL' || return 1
  grep -q 'missing cpu' "$logs/doctor-nocpu.json" || { echo "finding does not name cpu"; return 1; }
  grep -q 'Delegate=cpu cpuset io memory pids' "$logs/doctor-nocpu.json" || { echo "no fix"; return 1; }
  grep -q '"mode": "degraded"' "$logs/doctor-nocpu.json" || { echo "summary mode is not degraded"; return 1; }
  as_node "$UN" doctor > "$logs/doctor-nocpu.txt" 2>&1 && { echo "doctor exited 0"; return 1; }
  echo "doctor exit $?"
}
check doctor.nocpu doctor_nocpu

# Documented: without cpu, memory and pids all delegated, up runs the node
# in degraded mode (says so, records it, enforces no pod limit).
nocpu_degraded() {
  as_node "$UN" install --bin-dir "$K8S" || return 1
  start_node || return 1
  node_ready || return 1
  local s; s=$(as_node "$UN" status); echo "$s" | head -n 3 | oneline
  echo "$s" | grep -q 'cgroups degraded' || return 1
  echo "$s" | grep -q 'controllers cpu are not delegated' || return 1
  grep -q 'DEGRADED MODE' "$DATA/var/log/usernode/supervisor.log" 2>/dev/null ||
    journalctl --no-pager _SYSTEMD_USER_UNIT=usernode.service | grep -q 'DEGRADED MODE' || { echo "no DEGRADED MODE warning"; return 1; }
  # the 64Mi pod that was OOMKilled in full mode now runs to the end
  kc delete pod oom --wait=true > /dev/null 2>&1
  oom_pod | kc apply -f - > /dev/null
  local r; r=$(wait_oom_reason); echo "64Mi pod allocating 200Mi: $r (limits not enforced)"
  [ "$r" = Completed ]
}
check up.nocpu-degraded nocpu_degraded
collect_logs nocpu
CG=$(unit_cgroup)
check node.stop-clean-nocpu stopped_clean
as_node "$UN" uninstall > /dev/null 2>&1

echo "checks done after $(now) s"
grep -q '^FAIL' "$res" && exit 1
exit 0
