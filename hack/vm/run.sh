#!/usr/bin/env bash
# Boots the VM tier's image once under qemu TCG and waits for it to power
# itself off.
#
#   run.sh IMAGE_DIR IN_DIR K8S_DIR OUT_DIR
#
# IMAGE_DIR is build-image.sh's output. The VM gets a fresh qcow2 overlay
# over its disk.img (thrown away afterwards), IN_DIR (usernode, checks.sh)
# and K8S_DIR (the Kubernetes binaries) as read-only 9p shares, and OUT_DIR
# as a writable one for results. The guest's serial console goes to
# OUT_DIR/console.log. Environment:
#   USERNODE_VM_TIMEOUT  seconds before qemu is killed (default 2100; a
#                        whole run took 741 s on a fresh machine before
#                        the CRI-O and containerd 2.x runs, and ~1250 s
#                        with them on a machine busy with other tests)
#   USERNODE_VM_MEM      guest memory in MiB (default 4096)
#   USERNODE_VM_SMP      guest CPUs (default 2)
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 IMAGE_DIR IN_DIR K8S_DIR OUT_DIR" >&2; exit 2; }
img=$1 in=$2 k8s=$3 out=$4
timeout_s=${USERNODE_VM_TIMEOUT:-2100}
qemu=$(command -v qemu-system-x86_64) || { echo "run.sh: qemu-system-x86_64 missing: apt-get install qemu-system-x86 (hack/install-deps.sh)" >&2; exit 1; }
mkdir -p "$out"
overlay=$(mktemp --tmpdir usernode-vm.XXXXXX.qcow2)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -f "$overlay"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
qemu-img create -q -f qcow2 -F raw -b "$img/disk.img" "$overlay"

# TCG: nested KVM does not boot a kernel on these machines. No network
# device: the node's network is slirp4netns inside the guest. -cpu max
# measured slower than the default model.
"$qemu" -accel tcg -smp "${USERNODE_VM_SMP:-2}" -m "${USERNODE_VM_MEM:-4096}" \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet" \
  -drive "file=$overlay,if=virtio,format=qcow2,cache=unsafe" \
  -virtfs "local,path=$in,mount_tag=usernode_in,security_model=none,readonly=on" \
  -virtfs "local,path=$k8s,mount_tag=usernode_k8s,security_model=none,readonly=on" \
  -virtfs "local,path=$out,mount_tag=usernode_out,security_model=none" \
  -nic none -display none -monitor none -serial "file:$out/console.log" \
  -no-reboot &
pid=$!
deadline=$((SECONDS + timeout_s))
while kill -0 "$pid" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "run.sh: the VM did not power off within ${timeout_s}s; killed it (see $out/console.log)" >&2
    kill "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    exit 1
  fi
  sleep 1
done
wait "$pid" || { rc=$?; pid=; echo "run.sh: qemu exited $rc" >&2; exit 1; }
pid=
