#!/usr/bin/env bash
# `make test-vm`: usernode on real cgroup v2 with systemd delegation, in a
# throwaway Debian 12 VM under qemu TCG.
#
#   test-vm.sh USERNODE_BIN K8S_DIR
#
# Builds (or reuses) the image (build-image.sh), hands usernode, the checks
# (test/vm/checks.sh) and the Kubernetes binaries in over 9p, boots the VM
# once (run.sh), and parses the results the checks wrote: it fails if any
# check FAILed or did not run. Results and logs: bin/test-vm/ (or
# $USERNODE_VM_OUT).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 2 ] || { echo "usage: $0 USERNODE_BIN K8S_DIR" >&2; exit 2; }
bin=$(readlink -f "$1") k8s=$(readlink -f "$2")
out=${USERNODE_VM_OUT:-$repo/bin/test-vm}
start=$SECONDS

for f in "$bin" "$k8s/kubelet" "$k8s/kubectl"; do
  [ -x "$f" ] || { echo "test-vm: $f is missing" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "test-vm: qemu-system-x86_64 missing: apt-get install qemu-system-x86 (hack/install-deps.sh)" >&2; exit 1; }

t=$SECONDS
image=$("$here/build-image.sh" | tail -n1)
image_s=$((SECONDS - t))

rm -rf "$out"
mkdir -p "$out/in" "$out/result"
cp "$bin" "$out/in/usernode"
cp "$repo/test/vm/checks.sh" "$out/in/checks.sh"
chmod 0755 "$out/in" "$out/in/usernode" "$out/in/checks.sh"

echo "test-vm: booting $image (qemu TCG, 2 CPUs, 4 GiB); console: $out/result/console.log" >&2
t=$SECONDS
vm_rc=0
"$here/run.sh" "$image" "$out/in" "$k8s" "$out/result" || vm_rc=$?
vm_s=$((SECONDS - t))

res=$out/result/results.txt
echo "---- $res"
[ -f "$res" ] && cat "$res"
echo "----"
# Every check the script names must have a line: a crash half-way must
# not read as a pass.
mapfile -t want < <(sed -n 's/^check \([a-z0-9.-]*\) .*/\1/p' "$repo/test/vm/checks.sh")
failed=0
for name in "${want[@]}"; do
  if ! grep -q "^PASS $name " "$res" 2>/dev/null; then
    grep -q "^FAIL $name " "$res" 2>/dev/null || echo "test-vm: check $name did not run"
    failed=$((failed + 1))
  fi
done
passed=$(grep -c '^PASS' "$res" 2>/dev/null || true)
total=$((SECONDS - start))
echo "test-vm: ${passed:-0}/${#want[@]} checks passed; image ${image_s}s, VM ${vm_s}s (boot to checks $(cat "$out/result/boot-seconds" 2>/dev/null || echo ?)s), tier total ${total}s"
if [ "$vm_rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
  # CI keeps only this output: the end of what each failed check printed,
  # of the checks' own log and of the node's supervisor log.
  for f in "$out"/result/logs/checks/*.txt; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .txt)
    grep -q "^PASS $name " "$res" 2>/dev/null && continue
    echo "---- $name (the end of logs/checks/$name.txt)"
    tail -n 25 "$f"
  done
  for f in "$out/result/checks.log" "$out/result/logs/heartbeat.log" "$out"/result/logs/*/supervisor.log "$out/result/console.log"; do
    [ -f "$f" ] || continue
    echo "---- the end of ${f#"$out"/result/}"
    tail -n 60 "$f"
  done
  echo "test-vm: FAILED; logs in $out/result (checks.log, logs/, console.log, journal.log)" >&2
  exit 1
fi
