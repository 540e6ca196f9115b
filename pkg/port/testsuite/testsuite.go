// Package testsuite is the conformance suite for port drivers. A driver's
// test calls Run with a Factory; the suite runs where the sandbox agent
// runs the forwarder: as uid 0 of a new user namespace that is still in the
// host's network namespace, forwarding into a network namespace owned by
// that user namespace. When `go test` runs as root, the test binary first
// drops to the non-root test user (internal/testutil).
package testsuite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/port/internal/nsnet"
)

// Factory makes a forwarder into the network namespace at netnsPath.
// udpIdle is the UDP flow idle timeout the suite wants (short, to test it).
type Factory func(netnsPath string, udpIdle time.Duration) (port.Forwarder, error)

// Caps says what a driver claims beyond the basics.
type Caps struct {
	// PreservesSourceIP: the server inside sees the client's address.
	// Without it the suite checks the documented 127.0.0.1.
	PreservesSourceIP bool
}

const stageEnv = "USERNODE_PORTTEST_STAGE"

// Main handles the suite's re-executions; call it from TestMain.
func Main(run func() int) {
	switch os.Getenv(stageEnv) {
	case "":
		os.Exit(run())
	case "user":
		// As the test user in the host's namespaces: enter a new user
		// namespace (mapping only ourselves to 0), staying in the host's
		// network namespace, like the sandbox agent.
		c := exec.Command("/proc/self/exe", os.Args[1:]...)
		c.Env = append(os.Environ(), stageEnv+"=agent")
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		c.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
			Pdeathsig:   syscall.SIGKILL,
		}
		if err := c.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "agent":
		os.Exit(run())
	case "holder":
		// The node's network namespace: lo up, then wait to be killed.
		if lo, err := netlink.LinkByName("lo"); err == nil {
			// Best effort: a test that needs lo fails on its own.
			_ = netlink.LinkSetUp(lo)
		}
		// The parent waits for this line and fails if it does not come.
		_, _ = os.Stdout.Write([]byte("ready\n"))
		// Returns when the test closes stdin or goes away.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(2)
}

// Run runs the suite against the forwarders newF makes. The driver's name
// is for the reader of the call; the suite tells its runs apart by the
// test's name, which it re-runs as the unprivileged test user.
func Run(t *testing.T, _ string, caps Caps, newF Factory) {
	if os.Getenv(stageEnv) != "agent" {
		outer(t)
		return
	}
	s := newSuite(t, newF)
	t.Run("tcp-sha256-100MB", s.tcpIntegrity)
	t.Run("udp-sha256-100MB", s.udpIntegrity)
	t.Run("tcp-1000-concurrent", s.tcpConcurrent)
	t.Run("tcp-10000-short-fds", s.tcpShortFDs)
	t.Run("udp-flows-idle", s.udpIdle)
	t.Run("remove-closes-listener", s.remove)
	t.Run("port-in-use", s.inUse)
	t.Run("source-ip", func(t *testing.T) { s.sourceIP(t, caps) })
	t.Run("api", s.api)
}

func outer(t *testing.T) {
	u := testutil.Integration(t)
	bin := testutil.SelfCopy(t)
	env := u.NewEnv(t)
	env.Extra = []string{stageEnv + "=user"}
	r := env.Run(t, 10*time.Minute, bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	t.Log(r.Stdout + r.Stderr)
	if r.Code != 0 {
		t.Fatalf("the suite failed as user %s (exit %d, %v); output above", u.Name, r.Code, r.Err)
	}
}

type suite struct {
	netns string
	ns    *nsnet.NS // for the test's servers inside
	newF  Factory
}

func newSuite(t *testing.T, newF Factory) *suite {
	s := &suite{netns: holder(t), newF: newF}
	var err error
	if s.ns, err = nsnet.Open(s.netns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.ns.Close)
	return s
}

// holder starts a process in a new network namespace (lo up) that lives
// as long as the test, and returns the namespace's path.
func holder(t *testing.T) string {
	// The holder dies with the thread that starts it (Pdeathsig): keep the
	// test's thread from being handed to a goroutine that ends it
	// (nsnet.Do's).
	runtime.LockOSThread()
	h := exec.Command("/proc/self/exe")
	h.Env = append(os.Environ(), stageEnv+"=holder")
	h.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	in, _ := h.StdinPipe()
	out, _ := h.StdoutPipe()
	if err := h.Start(); err != nil {
		t.Fatalf("network namespace: %v", err)
	}
	// Teardown: the holder is killed, so Wait's error is that signal.
	t.Cleanup(func() { _ = in.Close(); _ = h.Process.Kill(); _ = h.Wait() })
	b := make([]byte, 6)
	if _, err := io.ReadFull(out, b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/proc/%d/ns/net", h.Process.Pid)
}

func (s *suite) forwarder(t *testing.T, idle time.Duration) port.Forwarder {
	f, err := s.newF(s.netns, idle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close the forwarder: %v", err)
		}
	})
	return f
}

// tcpServer serves handle for each connection inside the namespace.
func (s *suite) tcpServer(t *testing.T, handle func(net.Conn)) uint16 {
	return serveTCP(t, s.ns, "127.0.0.1:0", handle)
}

// serveTCP serves handle for each connection on addr inside ns.
func serveTCP(t *testing.T, ns *nsnet.NS, addr string, handle func(net.Conn)) uint16 {
	l, err := ns.Listen("tcp", addr)
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
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// echo returns what c sends until c closes; the client checks what came
// back, so a failed copy shows there.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

func (s *suite) add(t *testing.T, f port.Forwarder, proto string, child uint16) port.Spec {
	sp := port.Spec{Proto: proto, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: testutil.FreePort(t, proto), ChildPort: child}
	if err := f.Add(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	return sp
}

func hostAddr(sp port.Spec) string { return netip.AddrPortFrom(sp.HostIP, sp.HostPort).String() }

func fdCount() int {
	e, _ := os.ReadDir("/proc/self/fd")
	return len(e)
}

const total = 100 << 20

func (s *suite) tcpIntegrity(t *testing.T) {
	f := s.forwarder(t, 0)
	sp := s.add(t, f, "tcp", s.tcpServer(t, echo))
	c, err := net.Dial("tcp", hostAddr(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent, got := sha256.New(), sha256.New()
	errc := make(chan error, 1)
	go func() {
		r := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 1<<16)
		for n := 0; n < total; n += len(buf) {
			for i := 0; i < len(buf); i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
			}
			sent.Write(buf)
			if _, err := c.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != total || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("TCP echo through the forwarder: %d of %d bytes back, sha256 %x, sent %x", n, total, got.Sum(nil), sent.Sum(nil))
	}
}

func (s *suite) udpEcho(t *testing.T) uint16 {
	return s.udpServer(t, func(b []byte, _ netip.AddrPort) []byte { return b })
}

// udpServer answers each datagram with what reply makes of it.
func (s *suite) udpServer(t *testing.T, reply func(b []byte, from netip.AddrPort) []byte) uint16 {
	c, err := s.ns.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			// A lost reply is a lost datagram: the client resends.
			_, _ = c.WriteToUDPAddrPort(reply(buf[:n], from), from)
		}
	}()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// udpIntegrity sends 100 MB in lock-step, resending on loss (UDP may drop;
// what must hold is that every datagram that arrives arrives intact).
func (s *suite) udpIntegrity(t *testing.T) {
	f := s.forwarder(t, 0)
	sp := s.add(t, f, "udp", s.udpEcho(t))
	c, err := net.Dial("udp", hostAddr(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 60000
	r := rand.New(rand.NewPCG(3, 4))
	sent, got := sha256.New(), sha256.New()
	buf, in := make([]byte, size), make([]byte, 65535)
	for seq := uint64(0); seq*(size-8) < total; seq++ {
		binary.LittleEndian.PutUint64(buf, seq)
		for i := 8; i+8 <= size; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
		}
		sent.Write(buf[8:])
		for try := 0; ; try++ {
			if try == 20 {
				t.Fatalf("datagram %d: no echo after 20 tries", seq)
			}
			_, _ = c.Write(buf) // a failed send is a loss: the next try resends
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(in)
			if err != nil {
				continue
			}
			if n >= 8 && binary.LittleEndian.Uint64(in) == seq {
				if n != size {
					t.Fatalf("datagram %d: %d bytes back, sent %d", seq, n, size)
				}
				got.Write(in[8:n])
				break
			}
		}
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("UDP echo through the forwarder: sha256 %x, sent %x", got.Sum(nil), sent.Sum(nil))
	}
}

func (s *suite) tcpConcurrent(t *testing.T) {
	f := s.forwarder(t, 0)
	sp := s.add(t, f, "tcp", s.tcpServer(t, echo))
	const n = 1000
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", hostAddr(sp))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("hello %d\n", i)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				errs <- fmt.Errorf("connection %d: %v", i, err)
				return
			}
			b := make([]byte, len(msg))
			if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
				errs <- fmt.Errorf("connection %d: %q, %v", i, b, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (s *suite) tcpShortFDs(t *testing.T) {
	f := s.forwarder(t, 0)
	sp := s.add(t, f, "tcp", s.tcpServer(t, func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			_, _ = c.Write(b) // the client checks the byte came back
		}
	}))
	before := fdCount()
	for i := 0; i < 10000; i++ {
		c, err := net.Dial("tcp", hostAddr(sp))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = fdCount(); after <= before {
			return
		}
	}
	t.Fatalf("open fds: %d before 10000 short connections, %d after", before, after)
}

func (s *suite) udpIdle(t *testing.T) {
	f := s.forwarder(t, 300*time.Millisecond)
	sp := s.add(t, f, "udp", s.udpEcho(t))
	before := fdCount()
	var clients []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("udp", hostAddr(sp))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := fmt.Sprintf("client %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 100)
		n, err := c.Read(b)
		if err != nil || string(b[:n]) != msg {
			t.Fatalf("client %d: got %q, %v: each client must get its own replies", i, b[:n], err)
		}
		clients = append(clients, c)
	}
	if mid := fdCount(); mid < before+20 {
		t.Logf("fds: %d before, %d with 20 flows", before, mid)
	}
	for _, c := range clients {
		c.Close()
	}
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if after = fdCount(); after <= before {
			return
		}
	}
	t.Fatalf("UDP flows not ended after the idle timeout: %d fds before, %d after", before, after)
}

func (s *suite) remove(t *testing.T) {
	f := s.forwarder(t, 0)
	child := s.tcpServer(t, echo)
	tcp := s.add(t, f, "tcp", child)
	udp := s.add(t, f, "udp", s.udpEcho(t))
	if len(f.List()) != 2 {
		t.Fatalf("List: %v", f.List())
	}
	held, err := net.Dial("tcp", hostAddr(tcp))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, sp := range []port.Spec{tcp, udp} {
		if err := f.Remove(context.Background(), sp); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.List()) != 0 {
		t.Errorf("List after Remove: %v", f.List())
	}
	if c, err := net.Dial("tcp", hostAddr(tcp)); err == nil {
		c.Close()
		t.Errorf("host port %s still accepts after Remove", hostAddr(tcp))
	}
	// The port is free again: binding it proves the listener is closed.
	for _, sp := range []port.Spec{tcp, udp} {
		var err error
		if sp.Proto == "tcp" {
			var l net.Listener
			if l, err = net.Listen("tcp", hostAddr(sp)); err == nil {
				l.Close()
			}
		} else {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", hostAddr(sp)); err == nil {
				c.Close()
			}
		}
		if err != nil {
			t.Errorf("%s: host port not released by Remove: %v", sp, err)
		}
	}
	held.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil {
		t.Errorf("a connection of a removed port stays open")
	}
	if err := f.Remove(context.Background(), tcp); err == nil || !strings.Contains(err.Error(), "not forwarded") {
		t.Errorf("removing twice: %v", err)
	}
	if err := f.Add(context.Background(), tcp); err != nil {
		t.Errorf("adding back after Remove: %v", err)
	}
}

func (s *suite) inUse(t *testing.T) {
	f := s.forwarder(t, 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hp := uint16(l.Addr().(*net.TCPAddr).Port)
	sp := port.Spec{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hp, ChildPort: 80}
	err = f.Add(context.Background(), sp)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(hp)) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("adding a host port in use: %v; want the port and 'in use' named", err)
	}
	if !errors.Is(err, port.ErrInUse) {
		t.Errorf("adding a host port in use: %v does not match port.ErrInUse (a node's start waits only that out)", err)
	}
	if len(f.List()) != 0 {
		t.Errorf("a failed Add left %v", f.List())
	}
	sp2 := s.add(t, f, "tcp", 80)
	if err := f.Add(context.Background(), sp2); err == nil || !strings.Contains(err.Error(), "already forwarded") {
		t.Errorf("adding the same port twice: %v", err)
	}
}

// sourceIP: what the server inside sees as the client's address, for a
// client on the host's own non-loopback address (from 127.0.0.1 "kept" and
// "not kept" would look the same). The client reads the server's answer,
// so the replies' way back is checked too.
func (s *suite) sourceIP(t *testing.T, caps Caps) {
	hip := testutil.HostIPv4(t)
	f := s.forwarder(t, 0)
	seen := make(chan string, 1)
	answer := func(c net.Conn) {
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		_, _ = c.Write([]byte("ok")) // the client checks it got "ok"
	}
	want := "127.0.0.1"
	if caps.PreservesSourceIP {
		want = hip.String()
	}
	check := func(what string, client netip.Addr, child uint16, want string) {
		t.Helper()
		sp := port.Spec{Proto: "tcp", HostIP: client, HostPort: testutil.FreePort(t, "tcp"), ChildPort: child}
		if err := f.Add(context.Background(), sp); err != nil {
			t.Fatal(err)
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: client.AsSlice()}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", hostAddr(sp))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if string(b) != "ok" {
			t.Fatalf("%s: the client got %q, %v: the server's replies did not come back", what, b, err)
		}
		if got := <-seen; got != want {
			t.Fatalf("%s: the server inside saw the client as %s, want %s", what, got, want)
		}
	}
	check("server in the namespace", hip, s.tcpServer(t, answer), want)
	if caps.PreservesSourceIP {
		pod := s.podBehindDNAT(t, answer)
		check("server behind a DNAT, like a NodePort's pod", hip, pod, want)
		// From the host's loopback nothing is kept: the forwarder dials
		// from 127.0.0.1, which the node masquerades like kube-proxy does;
		// the policy routing must leave that path alone.
		check("server behind a DNAT, client on 127.0.0.1", netip.MustParseAddr("127.0.0.1"), pod, "10.77.0.1")
	}
	// UDP: the server answers each datagram with the address it came from.
	child := s.udpServer(t, func(_ []byte, from netip.AddrPort) []byte { return []byte(from.Addr().Unmap().String()) })
	sp := port.Spec{Proto: "udp", HostIP: hip, HostPort: testutil.FreePort(t, "udp"), ChildPort: child}
	if err := f.Add(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: hip.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(hip, sp.HostPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("UDP: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("UDP: no answer through the forwarder: %v", err)
	}
	if got := string(b[:n]); got != want {
		t.Fatalf("UDP: the server inside saw the client as %s, want %s", got, want)
	}
}

func linkUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a, _ := netlink.ParseAddr(cidr)
	if err := netlink.AddrAdd(l, a); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// podBehindDNAT makes what kube-proxy makes for a NodePort: a "pod"
// network namespace on a veth, a server in it, and a DNAT in the node's
// namespace from a port on 127.0.0.1 to the pod. It returns that port.
func (s *suite) podBehindDNAT(t *testing.T, handle func(net.Conn)) uint16 {
	podNS := holder(t)
	// The veth is made from inside the node's namespace and its peer moved
	// to the pod's; each side is then set up from inside its own.
	err := nsnet.Do(s.netns, func() error {
		pod, err := os.Open(podNS)
		if err != nil {
			return err
		}
		defer pod.Close()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pod0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		return linkUp("pod0", "10.77.0.1/24")
	})
	if err == nil {
		err = nsnet.Do(podNS, func() error {
			if err := linkUp("eth0", "10.77.0.2/24"); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("10.77.0.1")})
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	pns, err := nsnet.Open(podNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pns.Close)
	podPort := serveTCP(t, pns, "10.77.0.2:0", handle)

	nodePort := testutil.FreePort(t, "tcp")
	// Like kube-proxy: DNAT in output, and traffic from 127.0.0.1
	// masqueraded (with route_localnet so that it may leave lo at all).
	rules := fmt.Sprintf("table ip nodeport {\n chain out { type nat hook output priority -100; tcp dport %d dnat to 10.77.0.2:%d; }\n"+
		" chain post { type nat hook postrouting priority 100; oifname \"pod0\" ip saddr 127.0.0.0/8 masquerade; }\n}\n", nodePort, podPort)
	err = nsnet.Do(s.netns, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/route_localnet", []byte("1"), 0); err != nil {
			return err
		}
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("nft DNAT in the node's namespace: %v", err)
	}
	return nodePort
}

func (s *suite) api(t *testing.T) {
	f := s.forwarder(t, 0)
	sock := filepath.Join(t.TempDir(), "port.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- api.Serve(l, f) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	cl := api.NewClient(sock)
	ctx := context.Background()
	child := s.tcpServer(t, echo)
	sp := port.Spec{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: testutil.FreePort(t, "tcp"), ChildPort: child}
	if err := cl.Add(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := cl.Add(ctx, sp); err == nil || !strings.Contains(err.Error(), "already forwarded") {
		t.Errorf("second Add through the API: %v", err)
	}
	got, err := cl.List(ctx)
	if err != nil || len(got) != 1 || got[0] != sp {
		t.Fatalf("List through the API: %v, %v", got, err)
	}
	c, err := net.Dial("tcp", hostAddr(sp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Errorf("forwarding a port added through the API: %v", err)
	}
	c.Close()
	if err := cl.Remove(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if got, _ := cl.List(ctx); len(got) != 0 {
		t.Errorf("List after Remove: %v", got)
	}
}
