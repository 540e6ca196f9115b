package testutil

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
)

// FreePort is a port on 127.0.0.1 that nothing held a moment ago, for proto
// "tcp" or "udp". The kernel picks it, so parallel tests do not collide;
// another process may still take it before the test binds it.
func FreePort(t testing.TB, proto string) uint16 {
	t.Helper()
	switch proto {
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return uint16(l.Addr().(*net.TCPAddr).Port)
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return uint16(c.LocalAddr().(*net.UDPAddr).Port)
	}
	t.Fatalf("FreePort: protocol %q, want tcp or udp", proto)
	return 0
}

// HostIPv4 is the host's IPv4 address on the interface of its default
// route: the address a node reaches the host at, and a client address that
// is not loopback. Without a default route it is the address of another
// interface that is up and has a carrier; lxcbr0, which the lxc-user-nic
// suite creates, has none. A host with no such address fails the test: the
// checks that need one would prove nothing on loopback.
func HostIPv4(t testing.TB) netip.Addr {
	t.Helper()
	// Connecting a UDP socket sends nothing; it only has the kernel pick
	// the route and the source address. 198.51.100.1 is TEST-NET-2, which
	// no host routes but by default.
	if c, err := net.Dial("udp4", "198.51.100.1:9"); err == nil {
		a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
		if a.Is4() && !a.IsLoopback() && !a.IsUnspecified() {
			return a
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 || i.Flags&net.FlagRunning == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
					return ip.Unmap()
				}
			}
		}
	}
	t.Fatal("the host has no IPv4 address but loopback (no default route, no other interface up): this test needs one")
	return netip.Addr{}
}

// K8sBin is the directory of the Kubernetes binaries (kubelet, kubectl,
// kube-apiserver, ..., etcd, coredns) that `make test` builds and names in
// USERNODE_K8S_BIN. Without it the test is skipped and says how to get
// them, except in CI (CI=true), where it fails: a CI run that skips the
// node's tests proves nothing about the node.
func K8sBin(t testing.TB) string {
	t.Helper()
	dir, skip, fatal := k8sBin(testing.Short(), os.Getenv)
	switch {
	case fatal != "":
		t.Fatal(fatal)
	case skip != "":
		t.Skip(skip)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("USERNODE_K8S_BIN=%s is not a directory (%v): %s", dir, err, k8sFix)
	}
	return dir
}

const k8sFix = "run `make test`, which builds them and sets it, or `make k8s K8S_OUTDIR=DIR` and set USERNODE_K8S_BIN=DIR"

// k8sBin is K8sBin's decision: the directory, or why the test skips or
// fails.
func k8sBin(short bool, getenv func(string) string) (dir, skip, fatal string) {
	if short {
		return "", "runs the Kubernetes binaries: run without -short (make test)", ""
	}
	dir = getenv("USERNODE_K8S_BIN")
	if dir != "" {
		return dir, "", ""
	}
	if ci, _ := strconv.ParseBool(getenv("CI")); ci {
		return "", "", "CI is set but USERNODE_K8S_BIN is not, so the tests that run the Kubernetes binaries would be skipped: " + k8sFix
	}
	return "", "needs the Kubernetes binaries in USERNODE_K8S_BIN: " + k8sFix, ""
}
