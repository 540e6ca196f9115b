#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages usernode runs with and its tests use.
# Root only; what is installed already is skipped.
set -euo pipefail
# The setuid ID mappers, the network drivers, the CRI and OCI runtimes, CNI
# plugins, iptables, busybox for the local images, and the peers the
# benchmarks compare against (rootlesskit, socat, iperf3, lxc), and what
# `make test-vm` builds and boots its Debian VM with (debootstrap, qemu),
# and `make lint`'s shellcheck, and gcc for `make test-unit`'s race
# detector (-race needs cgo), and what CRI-O is built (hack/build-crio.sh:
# libseccomp-dev, pkg-config, binutils) and run with (conmon; skopeo
# imports the node's image archives into its storage), and the arm64
# assembler that checks internal/pause's arm64 bytes against their source
# (binutils-aarch64-linux-gnu, ~3 MB), and the tools `make conformance`
# puts in its images (netcat-openbsd's nc, bind9-dnsutils' dig, bash-static).
pkgs=(uidmap slirp4netns passt lxc iproute2 iptables nftables containerd runc crun
      containernetworking-plugins fuse-overlayfs busybox-static
      rootlesskit socat iperf3 dbus-user-session procps psmisc curl util-linux
      debootstrap qemu-system-x86 qemu-utils e2fsprogs shellcheck gcc libc6-dev
      libseccomp-dev pkg-config binutils binutils-aarch64-linux-gnu conmon skopeo
      netcat-openbsd bind9-dnsutils bash-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
