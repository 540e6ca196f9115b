// Package nsnet creates sockets inside another network namespace from a
// process that stays in its own: one OS thread is moved into the target
// namespace for good and makes sockets on request; a socket keeps the
// namespace it was created in, so it is then used from any thread.
package nsnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// NS makes sockets in one network namespace.
type NS struct {
	req  chan sockReq
	quit chan struct{}
	// spare holds TCP/IPv4 sockets made ahead of time: waking the
	// namespace's thread costs more than a connection's other syscalls on
	// a VM, so it refills the pool in batches, off the connection's path.
	spare  chan int
	refill chan struct{}
}

const spareSockets = 32

type sockReq struct {
	family, typ int
	resp        chan sockResp
}

type sockResp struct {
	fd  int
	err error
}

// Open starts the namespace's socket thread. The caller needs
// CAP_SYS_ADMIN in the user namespace owning the target namespace and in
// its own (setns(2)); a uid 0 of that user namespace has both.
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	n := &NS{req: make(chan sockReq), quit: make(chan struct{}),
		spare: make(chan int, spareSockets), refill: make(chan struct{}, 1)}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, Go ends the thread
		// instead of reusing one that sits in the wrong namespace.
		runtime.LockOSThread()
		err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		_ = f.Close() // opened read-only: nothing to lose
		if err != nil {
			started <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		n.fill()
		started <- nil
		for {
			select {
			case <-n.refill:
				n.fill()
			case r := <-n.req:
				fd, err := unix.Socket(r.family, r.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				r.resp <- sockResp{fd, err}
			case <-n.quit:
				for {
					select {
					case fd := <-n.spare:
						unix.Close(fd)
					default:
						return
					}
				}
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return n, nil
}

// fill tops up the spare pool; it runs on the namespace's thread.
func (n *NS) fill() {
	for len(n.spare) < cap(n.spare) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return
		}
		n.spare <- fd
	}
}

// Close stops the socket thread; sockets already made keep working.
func (n *NS) Close() { close(n.quit) }

var errClosed = errors.New("network namespace closed")

// Socket returns a new non-blocking socket made inside the namespace; the
// caller owns it.
func (n *NS) Socket(family, typ int) (int, error) {
	if family == unix.AF_INET && typ == unix.SOCK_STREAM {
		select {
		case fd := <-n.spare:
			if len(n.spare) < cap(n.spare)/2 {
				select {
				case n.refill <- struct{}{}:
				default:
				}
			}
			return fd, nil
		default:
		}
	}
	r := sockReq{family, typ, make(chan sockResp, 1)}
	select {
	case n.req <- r:
	case <-n.quit:
		return -1, errClosed
	}
	s := <-r.resp
	return s.fd, s.err
}

// Sockaddr is ap as a socket address, with its address family.
func Sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6
}

// DialUDP makes a UDP socket in the namespace connected to addr.
// before, if not nil, runs on the socket before it connects (to bind it).
func (n *NS) DialUDP(addr netip.AddrPort, before func(fd int) error) (*net.UDPConn, error) {
	sa, fam := Sockaddr(addr)
	fd, err := n.Socket(fam, unix.SOCK_DGRAM)
	if err != nil {
		return nil, err
	}
	if before != nil {
		if err := before(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: os.NewSyscallError("connect", err)}
	}
	f := os.NewFile(uintptr(fd), "udp")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// Listen makes a listening socket in the namespace (for tests and tools:
// the forwarder itself only dials). It takes net.Listen's arguments but
// always listens on TCP, the only stream protocol forwarded.
func (n *NS) Listen(_, addr string) (net.Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	sa, fam := Sockaddr(ap)
	fd, err := n.Socket(fam, unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	// Best effort: without it an address in TIME_WAIT may not bind, and
	// Bind says so.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	return net.FileListener(f)
}

// ListenUDP binds a UDP socket in the namespace.
func (n *NS) ListenUDP(addr string) (*net.UDPConn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	sa, fam := Sockaddr(ap)
	fd, err := n.Socket(fam, unix.SOCK_DGRAM)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "udp")
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// Do runs fn on an OS thread moved into the network namespace at path,
// for code that makes its own sockets there (netlink handles) or starts
// processes there. The thread is thrown away afterwards: a process in a
// user namespace may enter a namespace it owns but not go back to the
// host's. A thread's end fires the parent-death signal of the children it
// started, so a caller that starts children with one must start them from
// a thread it keeps locked.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: Go ends the thread when this goroutine returns.
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("open network namespace: %w", err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		_ = f.Close() // opened read-only: nothing to lose
		if err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
