// Package testsuite is the conformance suite every network driver passes:
// from inside the namespace, an address on a non-loopback interface, a
// default route, DNS answered through the driver, TCP to the host's
// non-loopback address, and the host's 127.0.0.1 out of reach unless
// AllowHostLoopback. It runs the driver exactly as usernode does: the
// parent half as the non-root user in the host's namespaces, the child
// half inside a new user+network namespace.
//
// About DNS: the machines this runs on reach no outside network, so the
// suite asks for a name under .invalid and accepts any well-formed answer
// (NXDOMAIN included): an answer proves the query went through the
// driver's DNS address to the host's resolver. When the host's resolver
// itself does not answer, the DNS check is skipped, saying so.
package testsuite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/network"
)

// Run runs the suite against the registered driver called name.
func Run(t *testing.T, name string) {
	d, err := network.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u := testutil.Integration(t)
	if d.Find != nil {
		if _, err := d.Find(); err != nil {
			t.Skipf("driver %s not available on this machine: %v", name, err)
		}
	}
	if name == "lxc-user-nic" {
		setupLXC(t, u)
	}
	h := newHost(t, name)

	t.Run("default", func(t *testing.T) {
		r := h.run(t, u, args{Driver: name})
		h.checkCommon(t, r)
		if !strings.HasPrefix(r.HostLoopback, "error") {
			t.Errorf("host's 127.0.0.1 reached through %v by default (got %q); it must not be", r.Config.Gateway, r.HostLoopback)
		}
	})
	if !d.OwnAddress {
		// The node's subnet comes from the cluster model: the namespace is
		// its .100, the gateway .2, and everything else still works.
		t.Run("subnet", func(t *testing.T) {
			subnet := netip.MustParsePrefix("10.0.9.0/24")
			r := h.run(t, u, args{Driver: name, Subnet: subnet})
			h.checkCommon(t, r)
			if r.Config == nil || r.Config.Address.String() != "10.0.9.100/24" || r.Config.Gateway.String() != "10.0.9.2" {
				t.Errorf("with subnet %s the driver gave %+v", subnet, r.Config)
			}
		})
	}
	if d.Helper != "" && d.NeedsTun {
		// The helper's TAP device dies with it: a fresh Parent started
		// against the same namespace, and Configure run again inside,
		// give the namespace all of its network back (what the sandbox
		// does when the helper exits).
		t.Run("restart", func(t *testing.T) {
			r := h.run(t, u, args{Driver: name, Restart: true})
			h.checkCommon(t, r)
			if !strings.Contains(r.Waited, "killed") {
				t.Errorf("the driver's Waiter after a kill -9 of %s said %q", d.Helper, r.Waited)
			}
			if r.AfterRestart == nil {
				t.Fatal("no second round after the restart")
			}
			h.checkCommon(t, *r.AfterRestart)
		})
	}
	if d.HostLoopback {
		t.Run("allow-host-loopback", func(t *testing.T) {
			r := h.run(t, u, args{Driver: name, Allow: true})
			h.checkCommon(t, r)
			if r.HostLoopback != h.loopToken {
				t.Errorf("AllowHostLoopback: host's 127.0.0.1 not reachable via %v: %q", r.Config.Gateway, r.HostLoopback)
			}
		})
	}
	if d.Find != nil {
		t.Run("helper-missing", func(t *testing.T) {
			r := h.run(t, u, args{Driver: name, NoPath: true})
			want := fmt.Sprintf("apt-get install %s", d.Package)
			if !strings.Contains(r.StartErr, d.Helper) || !strings.Contains(r.StartErr, want) {
				t.Errorf("with no %s in PATH, Start said %q; want the binary and %q named", d.Helper, r.StartErr, want)
			}
			checkClean(t, r)
		})
	}
	if d.NeedsTun {
		t.Run("tun-unusable", func(t *testing.T) {
			// A root-owned 0600 file behaves as a 0600 /dev/net/tun does
			// for the user: open(2) gives EACCES.
			dir := u.TempDir(t)
			block := filepath.Join(dir, "tun")
			if err := os.WriteFile(block, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() != 0 {
				t.Skip("needs root to make a file the test user cannot open")
			}
			r := h.run(t, u, args{Driver: name, TunBlock: block})
			if !strings.Contains(r.StartErr, "/dev/net/tun") || !strings.Contains(r.StartErr, "chmod 0666") {
				t.Errorf("with /dev/net/tun unusable, Start said %q; want /dev/net/tun and the fix named", r.StartErr)
			}
			checkClean(t, r)
		})
	}
}

func checkClean(t *testing.T, r Result) {
	t.Helper()
	if len(r.Leftover) > 0 {
		t.Errorf("processes left after a failed Start and Close: %v", r.Leftover)
	}
}

type host struct {
	addr      string // ip:port on the non-loopback address
	tcpToken  string
	loopPort  int
	loopToken string
	dnsOK     bool
	dnsWhy    string
	bin       string
}

func (h *host) checkCommon(t *testing.T, r Result) {
	t.Helper()
	if r.StartErr != "" || r.ConfigureErr != "" {
		t.Fatalf("Start: %s; Configure: %s", r.StartErr, r.ConfigureErr)
	}
	cfg := r.Config
	if r.Interface == "" || !strings.Contains(r.Interface, cfg.Address.String()) {
		t.Errorf("no non-loopback interface with %v inside: %q", cfg.Address, r.Interface)
	}
	if r.DefaultRoute != "via "+cfg.Gateway.String() {
		t.Errorf("default route: %q, want via %v", r.DefaultRoute, cfg.Gateway)
	}
	if h.dnsOK {
		if !strings.HasPrefix(r.DNS, "rcode") {
			t.Errorf("DNS query to %v: %s", cfg.DNS, r.DNS)
		}
	} else {
		t.Log("DNS check skipped: " + h.dnsWhy)
	}
	if r.HostTCP != h.tcpToken {
		t.Errorf("TCP to the host's %s: %q", h.addr, r.HostTCP)
	}
	if r.OwnLoopback != "own" {
		t.Errorf("namespace's own loopback: %q", r.OwnLoopback)
	}
	checkClean(t, r)
}

func (h *host) run(t *testing.T, u *testutil.User, a args) Result {
	t.Helper()
	a.HostTCP, a.LoopPort, a.HostDNSOK = h.addr, h.loopPort, h.dnsOK
	a.StateDir = u.TempDir(t)
	js, _ := json.Marshal(a)
	env := u.NewEnv(t)
	env.Extra = []string{modeEnv + "=parent", argsEnv + "=" + string(js)}
	res := env.Run(t, 60*time.Second, h.bin)
	var r Result
	if err := json.Unmarshal([]byte(res.Stdout), &r); err != nil {
		t.Fatalf("helper: %v\n%s", err, res)
	}
	if res.Stderr != "" {
		t.Logf("helper stderr: %s", res.Stderr)
	}
	return r
}

func newHost(t *testing.T, name string) *host {
	h := &host{bin: testutil.SelfCopy(t), tcpToken: "hello-from-host", loopToken: "hello-from-host-loopback"}
	h.addr = serve(t, net.JoinHostPort(testutil.HostIPv4(t).String(), "0"), h.tcpToken)
	_, p, _ := net.SplitHostPort(serve(t, "127.0.0.1:0", h.loopToken))
	if _, err := fmt.Sscan(p, &h.loopPort); err != nil {
		t.Fatal(err)
	}
	ns, why := hostNameserver(), "the host's own resolver does not answer"
	if name == "lxc-user-nic" {
		// This driver's DNS is lxc-net's dnsmasq on the bridge address.
		ns, why = "10.0.3.1", "nothing answers DNS on lxcbr0's address (lxc-net's dnsmasq is not running)"
	}
	if ns != "" {
		h.dnsOK = strings.HasPrefix(dnsQuery(net.JoinHostPort(ns, "53")), "rcode")
	}
	h.dnsWhy = why
	return h
}

func serve(t *testing.T, addr, token string) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(token + "\n")) // the reader checks the token
			c.Close()
		}
	}()
	return l.Addr().String()
}

func hostNameserver() string {
	b, _ := os.ReadFile("/etc/resolv.conf")
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			return f[1]
		}
	}
	return ""
}

// setupLXC gives the test user a bridge and a line in lxc-usernet, as
// root; a regular user must have had root do it.
func setupLXC(t *testing.T, u *testutil.User) {
	const bridge = "lxcbr0"
	line := u.Name + " veth " + bridge + " 10"
	have, _ := os.ReadFile("/etc/lxc/lxc-usernet")
	_, brErr := net.InterfaceByName(bridge)
	ok := brErr == nil && bytes.Contains(have, []byte(line))
	if ok {
		return
	}
	if os.Geteuid() != 0 {
		t.Skipf("lxc-user-nic needs bridge %s and the line %q in /etc/lxc/lxc-usernet; as root: ip link add %s type bridge; ip addr add 10.0.3.1/24 dev %s; ip link set %s up; echo %q >> /etc/lxc/lxc-usernet", bridge, line, bridge, bridge, bridge, line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if brErr != nil {
		for _, c := range [][]string{{"link", "add", bridge, "type", "bridge"}, {"addr", "add", "10.0.3.1/24", "dev", bridge}, {"link", "set", bridge, "up"}} {
			if out, err := exec.CommandContext(ctx, "ip", c...).CombinedOutput(); err != nil {
				t.Fatalf("set up %s: ip %v: %v: %s", bridge, c, err, out)
			}
		}
	}
	if !bytes.Contains(have, []byte(line)) {
		if err := os.MkdirAll("/etc/lxc", 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile("/etc/lxc/lxc-usernet", os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintln(f, line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("allow the test user in /etc/lxc/lxc-usernet: %v", err)
		}
	}
}
