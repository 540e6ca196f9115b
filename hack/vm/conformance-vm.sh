#!/usr/bin/env bash
# `make conformance-vm`: upstream [NodeConformance] (hack/conformance.sh)
# against `usernode up` in full mode (cgroup v2 delegated by systemd), in
# the VM tier's throwaway Debian 12 VM under qemu TCG (docs/conformance.md).
#
#   conformance-vm.sh USERNODE_BIN K8S_DIR E2E_DIR
#
# On the host: the VM image (build-image.sh, cached), the image archives
# the specs run (hack/conformance.sh --build-images: the guest has no Go),
# and an IN_DIR with usernode, e2e.test, ginkgo, the archives,
# hack/conformance.sh with its skip files, the settings (env) and the guest
# script as checks.sh (hack/vm/conformance-guest.sh). One boot (run.sh)
# runs it as the guest's user `node` and powers off. The summary, JUnit
# report and logs land in bin/conformance-vm/ (or $USERNODE_VM_OUT).
#
# Environment: CONFORMANCE_FOCUS, CONFORMANCE_EXTRA_SKIPS (paths relative
# to the repository), CONFORMANCE_DRY_RUN as for `make conformance`, and
#   CONFORMANCE_PROCS    ginkgo processes (default 4: two emulated CPUs)
#   CONFORMANCE_TIMEOUT  ginkgo's timeout (default 4h)
#   CONFORMANCE_UP_TIMEOUT  `usernode up --timeout` (default 15m)
#   USERNODE_VM_MEM      guest MiB (default 8192 here: the node, ginkgo's
#                        e2e.test processes and the pods)
#   USERNODE_VM_SMP      guest CPUs (default 2)
#   USERNODE_VM_TIMEOUT  seconds before qemu is killed (default ginkgo's
#                        timeout plus 45 min: boot, copies, up, imports and
#                        the dry runs that count the skips)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 3 ] || { echo "usage: $0 USERNODE_BIN K8S_DIR E2E_DIR" >&2; exit 2; }
bin=$(readlink -f "$1") k8s=$(readlink -f "$2") e2e=$(readlink -f "$3")
out=${USERNODE_VM_OUT:-$repo/bin/conformance-vm}
start=$SECONDS
log() { printf 'conformance-vm: %s\n' "$*" >&2; }

for f in "$bin" "$k8s/kubelet" "$k8s/kubectl" "$e2e/e2e.test" "$e2e/ginkgo" "$e2e/agnhost" "$e2e/nnp"; do
  [ -x "$f" ] || { log "$f is missing"; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { log "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (hack/install-deps.sh)"; exit 1; }

timeout=${CONFORMANCE_TIMEOUT:-4h}
case $timeout in
  *h) tsec=$(( ${timeout%h} * 3600 )) ;;
  *m) tsec=$(( ${timeout%m} * 60 )) ;;
  *s) tsec=${timeout%s} ;;
  *) log "CONFORMANCE_TIMEOUT: want a whole number of h, m or s, not $timeout"; exit 2 ;;
esac
export USERNODE_VM_TIMEOUT=${USERNODE_VM_TIMEOUT:-$((tsec + 2700))}
export USERNODE_VM_MEM=${USERNODE_VM_MEM:-8192}
procs=${CONFORMANCE_PROCS:-4}

t=$SECONDS
image=$("$here/build-image.sh" | tail -n1)
image_s=$((SECONDS - t))

rm -rf "$out"
mkdir -p "$out/in/e2e" "$out/in/hack" "$out/result"
in=$out/in
t=$SECONDS
"$repo/hack/conformance.sh" --build-images "$in/images" "$bin" "$e2e"
images_s=$((SECONDS - t))
cp "$bin" "$in/usernode"
# Hard links where they can be: e2e.test is 113 MB.
for b in e2e.test ginkgo; do
  ln -f "$e2e/$b" "$in/e2e/$b" 2>/dev/null || cp "$e2e/$b" "$in/e2e/$b"
done
cp "$repo/hack/conformance.sh" "$repo/hack/conformance-skips.txt" "$in/hack/"
extra=
for f in ${CONFORMANCE_EXTRA_SKIPS-}; do
  [ -f "$repo/$f" ] || [ -f "$f" ] || { log "CONFORMANCE_EXTRA_SKIPS: no file $f"; exit 1; }
  src=$f; [ -f "$repo/$f" ] && src=$repo/$f
  cp "$src" "$in/hack/extra-skips-${src##*/}"
  extra="$extra hack/extra-skips-${src##*/}"
done
{
  printf 'CONFORMANCE_FOCUS=%q\n' "${CONFORMANCE_FOCUS-}"
  printf 'CONFORMANCE_EXTRA_SKIPS=%q\n' "${extra# }"
  printf 'CONFORMANCE_PROCS=%q\n' "$procs"
  printf 'CONFORMANCE_TIMEOUT=%q\n' "$timeout"
  printf 'CONFORMANCE_DRY_RUN=%q\n' "${CONFORMANCE_DRY_RUN:-0}"
  printf 'CONFORMANCE_UP_TIMEOUT=%q\n' "${CONFORMANCE_UP_TIMEOUT:-15m}"
} > "$in/env"
cp "$here/conformance-guest.sh" "$in/checks.sh"
chmod -R a+rX "$in"
chmod 0755 "$in/checks.sh" "$in/usernode"

log "booting $image (qemu TCG, ${USERNODE_VM_SMP:-2} CPUs, $USERNODE_VM_MEM MiB, killed after ${USERNODE_VM_TIMEOUT}s); procs $procs, ginkgo timeout $timeout${CONFORMANCE_EXTRA_SKIPS:+, extra skips $CONFORMANCE_EXTRA_SKIPS}"
log "progress: tail -f $out/result/console.log"
t=$SECONDS
vm_rc=0
"$here/run.sh" "$image" "$in" "$k8s" "$out/result" || vm_rc=$?
vm_s=$((SECONDS - t))
# The inputs are copies (hundreds of MB of archives): the results stay.
rm -rf "$in"

res=$out/result
# The report where make conformance puts its own, beside the VM's logs.
for f in "$res"/report/*; do
  [ -e "$f" ] && cp -r "$f" "$out/"
done
total=$((SECONDS - start))
{
  echo "mode: full (VM tier: Debian 12, qemu TCG, ${USERNODE_VM_SMP:-2} vCPUs, $USERNODE_VM_MEM MiB)"
  echo "image ${image_s}s, image archives ${images_s}s, VM ${vm_s}s (boot to the guest script $(cat "$res/boot-seconds" 2>/dev/null || echo ?)s), make target total ${total}s"
} > "$out/vm.txt"
if [ -f "$out/summary.txt" ]; then
  sed 's/^/conformance-vm: /' "$out/summary.txt" >&2
else
  log "no summary.txt from the guest"
fi
sed 's/^/conformance-vm: /' "$out/vm.txt" >&2
[ ! -f "$out/failed.txt" ] || { log "failed specs:"; cat "$out/failed.txt" >&2; }
rc=$(cat "$res/exit-code" 2>/dev/null || echo 1)
if [ "$vm_rc" -ne 0 ] || [ "$rc" -ne 0 ]; then
  for f in "$res/logs/conformance.log" "$res/console.log"; do
    [ -f "$f" ] || continue
    echo "---- the end of ${f#"$out"/}"
    tail -n 40 "$f"
  done
  log "FAILED (VM $vm_rc, guest $rc); report and logs in $out (result/logs/, result/console.log, result/journal.log)"
  exit 1
fi
log "report and logs in $out"
