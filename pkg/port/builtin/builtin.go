// Package builtin is usernode's own port forwarder. It runs in a process
// that is in the host's network namespace but is uid 0 of the user
// namespace owning the node's network namespace (the sandbox agent). It
// listens on the host and creates its dial sockets directly inside the
// node's namespace (pkg/port/internal/nsnet), so a connection costs one
// accept, one socket(2) and one connect, with no round trip through a child
// process. TCP connections are relayed by a few event loops (loop.go),
// one OS thread each, with splice(2) through reusable pipes.
//
// By default the server inside sees connections from 127.0.0.1 (like
// RootlessKit's builtin driver); with Options.KeepSourceIP it sees the
// client's IPv4 address (sourceip.go).
package builtin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/internal/nsnet"
)

// Options tune the forwarder; the zero value is the default.
type Options struct {
	// ChildIP is the address dialled inside the namespace. Default
	// 127.0.0.1: it reaches services bound to loopback as well as those
	// bound to 0.0.0.0.
	ChildIP netip.Addr
	// UDPIdleTimeout ends a UDP flow (one host client address) after this
	// long without traffic. Default 60s.
	UDPIdleTimeout time.Duration
	// DialTimeout bounds connecting inside the namespace. Default 10s.
	DialTimeout time.Duration
	// BusyPoll is how long a relay thread keeps polling, instead of
	// sleeping, after it has moved a small message (see loop). It trades
	// CPU for latency, and gains only where CPUs are to spare: on a
	// quiet 2-vCPU VM it took much of the forwarder's added round trip
	// away, on the same VM loaded by other work it made it slower
	// (docs/benchmarks.md), which is why usernode's own default
	// (pkg/cluster) turns it off. Zero here is DefaultBusyPoll; negative
	// turns it off.
	BusyPoll time.Duration
	// KeepSourceIP makes TCP servers inside see the client's IPv4 address
	// instead of 127.0.0.1 (see sourceip.go). It adds policy routing and
	// an nft table to the node's network namespace; New fails, saying
	// why, if it cannot.
	KeepSourceIP bool
}

// DefaultBusyPoll is long enough to catch the reply of a request served
// from memory inside the node, short enough to cost little when no reply
// comes.
const DefaultBusyPoll = 50 * time.Microsecond

// maxLoops bounds the relay threads; ports are spread over them.
const maxLoops = 4

// Forwarder implements port.Forwarder.
type Forwarder struct {
	ns    *nsnet.NS
	opts  Options
	loops []*loop
	next  int
	// source is set when Options.KeepSourceIP is.
	source *sourceRouting
	mu     sync.Mutex
	ports  map[key]*forward
}

type key struct {
	proto string
	host  netip.AddrPort
}

type forward struct {
	spec  port.Spec
	close func()
	wg    sync.WaitGroup
	udp   *udpForward
}

// New returns a forwarder into the network namespace at netnsPath.
func New(netnsPath string, opts Options) (*Forwarder, error) {
	if !opts.ChildIP.IsValid() {
		opts.ChildIP = netip.MustParseAddr("127.0.0.1")
	}
	if opts.UDPIdleTimeout == 0 {
		opts.UDPIdleTimeout = 60 * time.Second
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.BusyPoll == 0 {
		opts.BusyPoll = DefaultBusyPoll
	} else if opts.BusyPoll < 0 {
		opts.BusyPoll = 0
	}
	var source *sourceRouting
	if opts.KeepSourceIP {
		var err error
		if source, err = setupSourceIP(netnsPath); err != nil {
			return nil, fmt.Errorf("port forwarder: keeping the client's source IP: %w", err)
		}
	}
	ns, err := nsnet.Open(netnsPath)
	if err != nil {
		if source != nil {
			source.close()
		}
		return nil, err
	}
	f := &Forwarder{ns: ns, opts: opts, ports: map[key]*forward{}, source: source}
	for range min(runtime.GOMAXPROCS(0), maxLoops) {
		l, err := newLoop(opts.BusyPoll)
		if err != nil {
			_ = f.Close() // the loop's error is the one worth reporting
			return nil, fmt.Errorf("port forwarder: %w", err)
		}
		f.loops = append(f.loops, l)
	}
	return f, nil
}

var _ port.Forwarder = (*Forwarder)(nil)

// Add starts forwarding s: it binds the host port at once, so a port in
// use fails here, not on the first connection. A TCP port goes to one of
// the loops in turn; a UDP port gets a goroutine reading the host socket.
// Nothing here blocks, so the context is not used.
func (f *Forwarder) Add(_ context.Context, s port.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	k := key{s.Proto, netip.AddrPortFrom(s.HostIP, s.HostPort)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ports == nil {
		return errors.New("port forwarder is closed")
	}
	if old, ok := f.ports[k]; ok {
		return fmt.Errorf("host port %s/%s is already forwarded (to child port %d): remove it first", k.host, s.Proto, old.spec.ChildPort)
	}
	fw := &forward{spec: s}
	target := netip.AddrPortFrom(f.opts.ChildIP, s.ChildPort)
	if s.ChildIP.IsValid() {
		target = netip.AddrPortFrom(s.ChildIP, s.ChildPort)
	}
	switch s.Proto {
	case "tcp":
		fd, err := listenTCP(k.host)
		if err != nil {
			return listenErr(s, err)
		}
		l := f.loops[f.next%len(f.loops)]
		f.next++
		p := &tcpPort{f: f, l: l, fd: fd, target: target, conns: map[*conn]struct{}{}, loopback: k.host.Addr().IsLoopback()}
		tuneListener(fd, p.loopback)
		p.sa, p.fam = nsnet.Sockaddr(target)
		l.do(func() { err = l.add(fd, unix.EPOLLIN, p) })
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("port forwarder: %w", err)
		}
		fw.close = func() { l.do(p.close) }
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(k.host))
		if err != nil {
			return listenErr(s, err)
		}
		setUDPBuffers(c)
		u := &udpForward{f: f, l: c, target: target, flows: map[netip.AddrPort]*udpFlow{}}
		fw.close, fw.udp = u.close, u
		fw.wg.Add(1)
		go func() { defer fw.wg.Done(); u.serve() }()
	}
	f.ports[k] = fw
	return nil
}

func listenErr(s port.Spec, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return port.InUse(fmt.Sprintf("host port %s/%s is already in use by another program: pick another host port", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto))
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("host IP %s is not an address of this host: %w", s.HostIP, err)
	}
	return fmt.Errorf("listen on host port %s/%s: %w", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto, err)
}

// Remove stops listening and ends the port's connections and flows.
func (f *Forwarder) Remove(_ context.Context, s port.Spec) error {
	k := key{s.Proto, netip.AddrPortFrom(s.HostIP, s.HostPort)}
	f.mu.Lock()
	fw, ok := f.ports[k]
	delete(f.ports, k)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("host port %s/%s is not forwarded", k.host, s.Proto)
	}
	fw.close()
	fw.wg.Wait()
	return nil
}

// List returns the forwarded ports, sorted by host port, protocol and host
// IP so that callers (the port API, `usernode port ls`) print a stable
// order.
func (f *Forwarder) List() []port.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]port.Spec, 0, len(f.ports))
	for _, fw := range f.ports {
		out = append(out, fw.spec)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.HostPort != b.HostPort {
			return a.HostPort < b.HostPort
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.HostIP.Less(b.HostIP)
	})
	return out
}

// Close stops every port, ending its connections and flows, and then the
// loops. The Forwarder refuses Add afterwards.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	ports := f.ports
	f.ports = nil
	f.mu.Unlock()
	for _, fw := range ports {
		fw.close()
		fw.wg.Wait()
	}
	if ports != nil {
		for _, l := range f.loops {
			l.close()
		}
		f.ns.Close()
		if f.source != nil {
			f.source.close()
		}
	}
	return nil
}
