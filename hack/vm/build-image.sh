#!/usr/bin/env bash
# Builds (or reuses) the VM tier's Debian image: a debootstrap rootfs with
# systemd and what usernode needs, a user `node` with subordinate IDs and
# lingering, written into an ext4 disk image with `mke2fs -d` (no loop
# mount), plus the kernel and initrd from the rootfs's /boot.
#
# Cached under ${USERNODE_VM_CACHE:-${USERNODE_CACHE:-~/.cache/usernode}/vm}/<key>/
# (USERNODE_VM_CACHE moves only the images, not the Kubernetes build), where the key
# hashes the release, the package list, this script and the files baked
# into the image (hack/vm/guest/). The last line printed is that directory,
# which holds disk.img (raw, sparse), vmlinuz, initrd.img and BUILD-INFO.
#
# Root only (debootstrap). Environment:
#   USERNODE_VM_RELEASE  Debian release (default bookworm)
#   USERNODE_VM_MIRROR   mirror (default http://deb.debian.org/debian); not
#                        part of the key
#   USERNODE_VM_DISK     disk size for mke2fs (default 6G; sparse)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
release=${USERNODE_VM_RELEASE:-bookworm}
mirror=${USERNODE_VM_MIRROR:-http://deb.debian.org/debian}
disk_size=${USERNODE_VM_DISK:-6G}
cache_root=${USERNODE_VM_CACHE:-${USERNODE_CACHE:-$HOME/.cache/usernode}/vm}

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$')
key=$( { echo "release=$release"; echo "disk=$disk_size"; cat "$here/packages.txt" "$here/build-image.sh";
         for f in "$here"/guest/*; do echo "== ${f##*/}"; cat "$f"; done; } | sha256sum | cut -c1-16)
out=$cache_root/$key
if [ -f "$out/BUILD-INFO" ] && [ -f "$out/disk.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "build-image: cached ($out)" >&2
  echo "$out"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: debootstrap needs root (image $key is not cached in $cache_root)" >&2
  exit 1
fi
for tool in debootstrap:debootstrap mke2fs:e2fsprogs; do
  command -v "${tool%%:*}" >/dev/null || { echo "build-image: ${tool%%:*} missing: apt-get install ${tool##*:} (hack/install-deps.sh)" >&2; exit 1; }
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
cleanup() {
  # A failed debootstrap can leave /proc and /sys mounted in the chroot.
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start=$(date +%s)
rootfs=$work/rootfs

echo "build-image: debootstrap $release (${#pkgs[@]} packages) from $mirror" >&2
debootstrap --variant=minbase --include="$(IFS=,; echo "${pkgs[*]}")" \
  "$release" "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
}
t_boot=$(date +%s)

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo usernode-vm > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 usernode-vm\n::1 localhost\n' > "$rootfs/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$rootfs/etc/fstab"
# No network in the VM: the node uses slirp4netns, which needs none.
: > "$rootfs/etc/resolv.conf"

# The test user: subordinate IDs (the doctor's subid checks) and lingering
# (its user manager, and so the delegated cgroup, exists from boot).
in_root useradd --create-home --uid 1000 --user-group --shell /bin/bash node
echo 'node:100000:65536' > "$rootfs/etc/subuid"
echo 'node:100000:65536' > "$rootfs/etc/subgid"
mkdir -p "$rootfs/var/lib/systemd/linger"
touch "$rootfs/var/lib/systemd/linger/node"

# doctor's kernel.modules fix, and 9p for the shares.
install -m 0644 "$here/guest/modules-load.conf" "$rootfs/etc/modules-load.d/usernode.conf"
install -m 0755 "$here/guest/usernode-vm-boot" "$rootfs/usr/local/sbin/usernode-vm-boot"
install -m 0644 "$here/guest/usernode-vmtest.service" "$rootfs/etc/systemd/system/usernode-vmtest.service"
ln -sf /etc/systemd/system/usernode-vmtest.service "$rootfs/etc/systemd/system/multi-user.target.wants/usernode-vmtest.service"

# Only what the test needs runs at boot: the system containerd (root) is
# not usernode's, and timers would only compete for the two emulated CPUs.
for u in containerd.service apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer systemd-timesyncd.service getty@tty1.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
done
mkdir -p "$rootfs/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$rootfs/etc/systemd/journald.conf.d/volatile.conf"
# Root can log in on the serial console without a password: a debugging
# aid for a throwaway VM that has no network.
in_root passwd -d root >/dev/null

kernel=$(printf '%s\n' "$rootfs"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(printf '%s\n' "$rootfs"/boot/initrd.img-* | sort -V | tail -n1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs/debootstrap"

mke2fs -q -t ext4 -L usernode-vm -d "$rootfs" "$work/disk.img" "$disk_size"
rm -rf "$rootfs"
end=$(date +%s)
{
  echo "key=$key"
  echo "release=$release"
  echo "mirror=$mirror"
  echo "kernel=${kernel##*/}"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "debootstrap_seconds=$((t_boot - start))"
  echo "total_seconds=$((end - start))"
  echo "packages=${pkgs[*]}"
} > "$work/BUILD-INFO"
rm -f "$work/debootstrap.log"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
# Images of older inputs are ~1 GiB each and never used again.
for old in "$cache_root"/????????????????; do
  [ "$old" != "$out" ] && [ -f "$old/BUILD-INFO" ] && rm -rf "$old"
done
echo "build-image: built $out in $((end - start)) s (debootstrap $((t_boot - start)) s)" >&2
echo "$out"
