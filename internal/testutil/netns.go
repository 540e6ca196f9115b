package testutil

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot is for the tests that build scaffolding only root can
// (network namespaces standing in for hosts). It fails under CI, where
// root is a given, and skips elsewhere, saying why: it is never silently
// left out.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs root (%s), and CI runs as root", why)
	}
	t.Skipf("needs root: %s (`make test` as root runs it)", why)
}

// Host is one "host" of a multi-host test: a network namespace with one
// interface on the hosts' LAN.
type Host struct {
	Name  string     // the namespace's name under /run/netns
	NetNS string     // its path
	IP    netip.Addr // its address on the LAN
}

// LANPrefix is the hosts' LAN: TEST-NET-2, which nothing on this machine
// uses (it has 192.0.2.2), so no test traffic leaves the namespaces.
var LANPrefix = netip.MustParsePrefix("198.51.100.0/24")

// TwoHosts makes two network namespaces, "hosts" A and B, joined by a
// bridge (in a third namespace) with MTU 1500, at 198.51.100.1 and .2 with
// a default route through .254 (which answers nothing), as two machines on
// one LAN are. Everything is removed when the test ends. Root only.
func TwoHosts(t testing.TB) (a, b *Host) {
	t.Helper()
	RequireRoot(t, "network namespaces for the test's hosts")
	tag := fmt.Sprintf("%x", os.Getpid()&0xffff)
	lan := "un-lan-" + tag
	hosts := []*Host{
		{Name: "un-hostA-" + tag, IP: netip.MustParseAddr("198.51.100.1")},
		{Name: "un-hostB-" + tag, IP: netip.MustParseAddr("198.51.100.2")},
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{hosts[0].Name, hosts[1].Name, lan} {
			_ = exec.Command("ip", "netns", "del", n).Run() // gone already is fine
		}
	})
	ip("netns", "add", lan)
	ip("-n", lan, "link", "set", "lo", "up")
	ip("-n", lan, "link", "add", "br0", "mtu", "1500", "type", "bridge")
	ip("-n", lan, "link", "set", "br0", "up")
	for i, h := range hosts {
		h.NetNS = "/run/netns/" + h.Name
		ip("netns", "add", h.Name)
		ip("-n", h.Name, "link", "set", "lo", "up")
		peer := fmt.Sprintf("port%d", i)
		ip("-n", h.Name, "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", peer, "netns", lan)
		ip("-n", lan, "link", "set", peer, "master", "br0", "up")
		ip("-n", h.Name, "addr", "add", netip.PrefixFrom(h.IP, LANPrefix.Bits()).String(), "dev", "eth0")
		ip("-n", h.Name, "link", "set", "eth0", "up")
		ip("-n", h.Name, "route", "add", "default", "via", "198.51.100.254")
	}
	return hosts[0], hosts[1]
}

// In runs a command as root in h's namespace (a client on that host).
func (h *Host) In(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + h.NetNS, "--", name}, args...)...)
}

// Dial connects from h's namespace, as a client on that host would, from
// the test process itself: the socket is made on a thread moved into the
// namespace, which then goes back (and is retired if it cannot).
func (h *Host) Dial(network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer self.Close()
		ns, err := os.Open(h.NetNS)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		ch <- result{c, err}
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread exits still locked, in the namespace
	}()
	r := <-ch
	return r.c, r.err
}
