// Package builtin is usernode's own port forwarder. It runs in a process
// that is in the host's network namespace but is uid 0 of the user
// namespace owning the node's network namespace (the sandbox agent). It
// listens on the host and creates its dial sockets directly inside the
// node's namespace (pkg/port/internal/nsnet), so a connection costs one
// accept, one socket(2) and one connect, with no round trip through a child
// process. TCP bytes move with splice(2) (Go's TCPConn.ReadFrom).
//
// The server inside sees connections from 127.0.0.1 (like RootlessKit's
// builtin driver): the client's address is not preserved.
package builtin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"time"

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
}

// Forwarder implements port.Forwarder.
type Forwarder struct {
	ns    *nsnet.NS
	opts  Options
	mu    sync.Mutex
	ports map[key]*forward
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
	ns, err := nsnet.Open(netnsPath)
	if err != nil {
		return nil, err
	}
	return &Forwarder{ns: ns, opts: opts, ports: map[key]*forward{}}, nil
}

var _ port.Forwarder = (*Forwarder)(nil)

func (f *Forwarder) Add(ctx context.Context, s port.Spec) error {
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
	switch s.Proto {
	case "tcp":
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(k.host))
		if err != nil {
			return listenErr(s, err)
		}
		conns := &connSet{m: map[*net.TCPConn]struct{}{}}
		fw.close = func() { l.Close(); conns.closeAll() }
		fw.wg.Add(1)
		go func() { defer fw.wg.Done(); f.serveTCP(l, target, conns) }()
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(k.host))
		if err != nil {
			return listenErr(s, err)
		}
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
		return fmt.Errorf("host port %s/%s is already in use by another program: pick another host port", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto)
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("host IP %s is not an address of this host: %w", s.HostIP, err)
	}
	return fmt.Errorf("listen on host port %s/%s: %w", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto, err)
}

// Remove stops listening and ends the port's connections and flows.
func (f *Forwarder) Remove(ctx context.Context, s port.Spec) error {
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
		f.ns.Close()
	}
	return nil
}

// connSet tracks a port's live connections so Remove can end them.
type connSet struct {
	mu     sync.Mutex
	m      map[*net.TCPConn]struct{}
	closed bool
}

func (s *connSet) add(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) del(c *net.TCPConn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	m := s.m
	s.m = nil
	s.mu.Unlock()
	for c := range m {
		c.Close()
	}
}

func (f *Forwarder) serveTCP(l *net.TCPListener, target netip.AddrPort, conns *connSet) {
	var delay time.Duration
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		go f.handleTCP(c, target, conns)
	}
}

// handleTCP uses two goroutines per connection, the minimum for blocking
// I/O both ways: this one copies host->child and a second child->host.
func (f *Forwarder) handleTCP(c *net.TCPConn, target netip.AddrPort, conns *connSet) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.DialTimeout)
	d, err := f.ns.DialTCP(ctx, target)
	cancel()
	if err != nil {
		// Reset rather than FIN: the client sees the refusal at once.
		c.SetLinger(0)
		c.Close()
		return
	}
	if !conns.add(c) {
		c.Close()
		d.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		pipe(c, d)
		close(done)
	}()
	pipe(d, c)
	<-done
	conns.del(c)
	c.Close()
	d.Close()
}

// pipe copies src to dst with splice(2), then passes the EOF on.
func pipe(dst, src *net.TCPConn) {
	_, err := dst.ReadFrom(src)
	if err != nil {
		// A reset on one side: reset the other instead of a clean FIN.
		dst.SetLinger(0)
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}
