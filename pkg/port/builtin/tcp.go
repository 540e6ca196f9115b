package builtin

import (
	"errors"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/port/internal/nsnet"
)

// tcpPort is one forwarded TCP port: a listener on the host and the
// connections accepted from it, all owned by one loop.
type tcpPort struct {
	f      *Forwarder
	l      *loop
	fd     int
	target netip.AddrPort
	// sa and fam are target's, made once.
	sa     unix.Sockaddr
	fam    int
	conns  map[*conn]struct{}
	paused bool
	// loopback: the listener is on a loopback address, so every client
	// is this machine and none has an address worth keeping.
	loopback bool
}

// listenTCP makes the host listener by hand rather than with net.Listen:
// the loop needs the raw non-blocking fd, and a net.Listener would own it.
func listenTCP(ap netip.AddrPort) (int, error) {
	sa, fam := nsnet.Sockaddr(ap)
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	// Best effort: without it a port re-added while old connections are in
	// TIME_WAIT may not bind, and Bind says so.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// event accepts what is pending. The listener is level-triggered, so a
// backlog longer than one batch brings the loop back.
func (p *tcpPort) event(_ int32, _ uint32) {
	for range 64 {
		fd, err := accept(p.fd)
		switch err {
		case nil:
			p.open(fd)
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// Out of fds: stop accepting for a moment instead of spinning
			// on a listener that stays readable.
			p.pause(50 * time.Millisecond)
			return
		default:
			return
		}
	}
}

// accept is accept4(2) without the peer's address: unix.Accept4 returns
// it as a new Sockaddr, one allocation per connection that nothing here
// reads (peer asks for it where it matters). The forwarder allocates
// nothing per connection in its steady state, so the agent's heap stays
// at its start's size and the garbage collector seldom runs: measured
// with connection loops (c=8, ~12k connections/s), the agent's RSS grew
// by 2.4 MB of heap and ~2 MB of the binary's pages (mostly the
// collector's) before.
func accept(fd int) (int, error) {
	nfd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(nfd), nil
}

func (p *tcpPort) pause(d time.Duration) {
	if p.paused {
		return
	}
	p.paused = true
	p.l.forget(p.fd)
	time.AfterFunc(d, func() {
		p.l.post(func() {
			if p.paused && p.conns != nil {
				p.paused = false
				// The listener was registered before; adding it back
				// fails only if the kernel is out of memory, and then
				// the port stays paused, as before this error was named.
				_ = p.l.add(p.fd, unix.EPOLLIN, p)
			}
		})
	})
}

// close ends the port: the listener first, then every connection.
func (p *tcpPort) close() {
	p.l.forget(p.fd)
	unix.Close(p.fd)
	for c := range p.conns {
		c.abort()
	}
	p.conns = nil
}

// open starts relaying an accepted client to a new connection inside the
// namespace.
func (p *tcpPort) open(cfd int) {
	// TCP_NODELAY, and on a loopback port the congestion control and send
	// buffer below, came from the listener (tuneListener).
	var client netip.Addr
	if !p.loopback {
		var local bool
		if client, local = peer(cfd); local {
			unpace(cfd)
			boundSendBuffer(cfd)
		}
	}
	p.dial(cfd, client)
}

// tuneListener sets on the listener what every accepted socket should
// have, as the kernel copies it to them: TCP_NODELAY always, and on a
// loopback port, where every client is this machine, the unpaced
// congestion control and the bounded send buffer. Three syscalls fewer
// per connection than setting them on each.
func tuneListener(fd int, loopback bool) {
	// TCP_NODELAY is latency tuning; a socket without it still relays.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if loopback {
		unpace(fd)
		boundSendBuffer(fd)
	}
}

// dial connects a new socket inside the namespace for the accepted cfd
// and starts relaying; client is the client's address, unset on a
// loopback port (there it is never kept).
func (p *tcpPort) dial(cfd int, client netip.Addr) {
	ufd, err := p.f.ns.Socket(p.fam, unix.SOCK_STREAM)
	if err != nil {
		reset(cfd)
		return
	}
	_ = unix.SetsockoptInt(ufd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if p.target.Addr().IsLoopback() {
		unpace(ufd)
	}
	if p.f.keepsSource(client, p.target) {
		if err := bindSource(ufd, netip.AddrPortFrom(client, 0)); err != nil {
			reset(cfd)
			unix.Close(ufd)
			return
		}
	}
	c := p.l.newConn()
	c.p, c.fds = p, [2]int{cfd, ufd}
	c.d[0] = dir{src: cfd, dst: ufd}
	c.d[1] = dir{src: ufd, dst: cfd}
	switch err := unix.Connect(ufd, p.sa); err {
	case nil:
	case unix.EINPROGRESS:
		c.connecting = true
		c.deadline = time.Now().Add(p.f.opts.DialTimeout)
		// The timer stays with the conn from one use to the next (see
		// accept for why nothing here allocates).
		if c.timer == nil {
			c.timer = time.AfterFunc(p.f.opts.DialTimeout, c.dialExpired)
		} else {
			c.timer.Reset(p.f.opts.DialTimeout)
		}
	default:
		// Reset rather than FIN: the client sees the refusal at once.
		reset(cfd)
		unix.Close(ufd)
		return
	}
	const edge = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	if err := p.l.add(cfd, edge, c); err != nil {
		reset(cfd)
		unix.Close(ufd)
		return
	}
	if err := p.l.add(ufd, edge, c); err != nil {
		p.l.forget(cfd)
		reset(cfd)
		unix.Close(ufd)
		return
	}
	p.conns[c] = struct{}{}
}

// unpace gives a socket whose both ends are on this machine a congestion
// control that does not pace. Where the system default is BBR (Debian's
// cloud kernels, this VM) every segment is paced by a timer, for a network
// that is not there: measured, iperf3 through the forwarder goes from
// ~15 to ~21 Gbit/s with reno on its local sockets. reno is always
// allowed to unprivileged users; if it were refused the default stays.
func unpace(fd int) {
	// By hand: unix.SetsockoptString copies the name to the heap on
	// every call (see accept for why that matters).
	_, _, _ = unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION,
		uintptr(unsafe.Pointer(&reno[0])), uintptr(len(reno)), 0)
}

var reno = [...]byte{'r', 'e', 'n', 'o'}

// boundSendBuffer fixes the send buffer of a socket towards a client on
// this machine at the most an unprivileged process may ask for
// (net.core.wmem_max, 2 x 208 KiB by default), still far more than a
// loopback round trip needs. Autotuned, it grew to 4 MiB: unpaced, the
// forwarder then sent bursts that a client reading several sockets from
// one thread dropped (ss: receive-window limited 90 % of the time, drops
// on the client's sockets), and reno backed off; iperf3 -P4 ns->host went
// from ~15 to ~21 Gbit/s with the bound, -P1 lost a few percent.
func boundSendBuffer(fd int) {
	// Clamped to wmem_max, never refused for the size; if it fails the
	// socket keeps autotuning.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
}

// peer is the client's address of an accepted socket, and whether the
// client is this machine: a loopback address, or its own address.
func peer(fd int) (netip.Addr, bool) {
	p, err1 := unix.Getpeername(fd)
	s, err2 := unix.Getsockname(fd)
	if err1 != nil || err2 != nil {
		return netip.Addr{}, false
	}
	pa, sa := sockaddrAddr(p), sockaddrAddr(s)
	return pa, pa.IsValid() && (pa.IsLoopback() || pa == sa)
}

func sockaddrAddr(sa unix.Sockaddr) netip.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// reset closes fd with an RST instead of a FIN.
func reset(fd int) {
	// If SO_LINGER cannot be set the close is a FIN instead: the
	// connection still ends.
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// conn is one forwarded connection: fds[0] the host client, fds[1] the
// socket inside the namespace; d[0] moves client->namespace, d[1] back.
type conn struct {
	p          *tcpPort
	fds        [2]int
	d          [2]dir
	connecting bool
	closed     bool
	// l is the loop that owns the conn, for good: a conn is reused
	// (loop.newConn), always on its loop.
	l *loop
	// timer ends a dial that takes longer than the deadline; it may fire
	// late, for an earlier use of the conn, hence the deadline check.
	timer    *time.Timer
	deadline time.Time
}

// dialExpired runs on the timer's goroutine: the check is the loop's.
func (c *conn) dialExpired() { c.l.post(c.checkDial) }

func (c *conn) checkDial() {
	if c.connecting && !c.closed && !time.Now().Before(c.deadline) {
		c.abort()
	}
}

// dir is one direction: bytes go src -> pipe -> dst, n of them still in
// the pipe. Only an empty pipe is filled again, so EAGAIN from the read
// side always means the socket is drained.
type dir struct {
	src, dst int
	pipe     pipe
	hasPipe  bool
	n        int
	eof      bool
	done     bool
}

func (c *conn) event(fd int32, ev uint32) {
	if c.closed {
		return
	}
	if c.connecting {
		if fd != int32(c.fds[1]) {
			return // client bytes wait in its socket until the dial is done
		}
		// A failed dial reports EPOLLERR (SO_ERROR says which error,
		// which changes nothing here: the client gets a reset); a done
		// one EPOLLOUT. One syscall fewer per connection than asking
		// SO_ERROR every time.
		if ev&unix.EPOLLERR != 0 {
			c.abort()
			return
		}
		if ev&unix.EPOLLOUT == 0 {
			return
		}
		c.connecting = false
		c.timer.Stop()
	} else if ev&unix.EPOLLERR != 0 {
		c.abort()
		return
	}
	c.pump()
}

func (c *conn) pump() {
	for i := range c.d {
		if c.d[i].done {
			continue
		}
		if err := c.d[i].pump(c.p.l); err != nil {
			c.abort()
			return
		}
	}
	if c.d[0].done && c.d[1].done {
		c.finish(false)
	}
}

const spliceFlags = unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE

// pump moves what can move without blocking. It returns when the source
// is drained or the destination is full (an edge on either brings it
// back), or with the error that ends the connection.
func (d *dir) pump(l *loop) error {
	for {
		if d.n > 0 {
			n, err := unix.Splice(d.pipe.r, nil, d.dst, nil, d.n, spliceFlags)
			switch {
			case n > 0:
				d.n -= int(n)
				l.moved += int(n)
				continue
			case err == unix.EAGAIN:
				return nil
			case err == unix.EINTR:
				continue
			case err == nil:
				return errors.New("splice wrote nothing")
			}
			return err
		}
		if d.eof {
			// Passes the FIN on. It fails only if the peer is gone
			// (ENOTCONN), which the other direction reports.
			_ = unix.Shutdown(d.dst, unix.SHUT_WR)
			d.done = true
			return nil
		}
		if !d.hasPipe {
			p, err := l.getPipe()
			if err != nil {
				return err
			}
			d.pipe, d.hasPipe = p, true
		}
		n, err := unix.Splice(d.src, nil, d.pipe.w, nil, pipeSize, spliceFlags)
		switch {
		case n > 0:
			d.n = int(n)
		case err == nil:
			d.eof = true
		case err == unix.EAGAIN:
			return nil
		case err == unix.EINTR:
		default:
			return err
		}
	}
}

// abort ends the connection with a reset on both sides: one side failing
// is passed on as a failure, not as a clean end of stream.
func (c *conn) abort() { c.finish(true) }

func (c *conn) finish(rst bool) {
	if c.closed {
		return
	}
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	l := c.p.l
	for _, fd := range c.fds {
		// Closing the fd takes it out of the epoll set (nothing else
		// holds it): no EPOLL_CTL_DEL, two syscalls fewer per connection.
		delete(l.handlers, int32(fd))
		if rst {
			reset(fd)
		} else {
			unix.Close(fd)
		}
	}
	for i := range c.d {
		if c.d[i].hasPipe {
			l.putPipe(c.d[i].pipe, c.d[i].n == 0)
		}
	}
	if c.p.conns != nil {
		delete(c.p.conns, c)
	}
	l.freeConn(c)
}
