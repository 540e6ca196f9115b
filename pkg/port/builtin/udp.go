package builtin

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// UDP has no connections, so each host client address gets a flow: a
// socket inside the namespace connected to the target, whose replies go
// back to that client. A flow ends after UDPIdleTimeout without traffic.
type udpForward struct {
	f      *Forwarder
	l      *net.UDPConn
	target netip.AddrPort
	mu     sync.Mutex
	flows  map[netip.AddrPort]*udpFlow
	wg     sync.WaitGroup
}

type udpFlow struct {
	c    *net.UDPConn
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

const maxDatagram = 65535

// udpSocketBuffer is asked for on each UDP socket, both ways. The
// default (208 KiB) holds ~140 full-size datagrams: VXLAN between hosts,
// a burst of a TCP stream in pods, overflowed it and lost 6-14% of its
// datagrams at host B's socket (bench/multinode), all of them TCP
// retransmits; cross-host throughput was 1% of the bound. The kernel caps
// it at net.core.rmem_max/wmem_max.
const udpSocketBuffer = 4 << 20

func setUDPBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(udpSocketBuffer) // capped, never refused
	_ = c.SetWriteBuffer(udpSocketBuffer)
}

func (u *udpForward) serve() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := u.l.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				u.wg.Wait()
				return
			}
			continue
		}
		fl := u.flow(from)
		if fl == nil {
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		// UDP: a datagram the namespace side cannot take is dropped, as a
		// network would; the flow stays for the next one.
		_, _ = fl.c.Write(buf[:n])
	}
}

func (u *udpForward) flow(from netip.AddrPort) *udpFlow {
	u.mu.Lock()
	defer u.mu.Unlock()
	if fl, ok := u.flows[from]; ok {
		return fl
	}
	if u.flows == nil {
		return nil
	}
	var bind func(int) error
	if src := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); u.f.keepsSource(src.Addr(), u.target) {
		bind = func(fd int) error { return bindSource(fd, src) }
	}
	c, err := u.f.ns.DialUDP(u.target, bind)
	if err != nil {
		return nil
	}
	setUDPBuffers(c)
	fl := &udpFlow{c: c}
	fl.last.Store(time.Now().UnixNano())
	u.flows[from] = fl
	u.wg.Add(1)
	go u.replies(from, fl)
	return fl
}

func (u *udpForward) replies(client netip.AddrPort, fl *udpFlow) {
	defer u.wg.Done()
	defer func() {
		u.mu.Lock()
		if u.flows != nil && u.flows[client] == fl {
			delete(u.flows, client)
		}
		u.mu.Unlock()
		fl.c.Close()
	}()
	idle := u.f.opts.UDPIdleTimeout
	buf := make([]byte, maxDatagram)
	for {
		fl.c.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(idle))
		n, err := fl.c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, fl.last.Load())) >= idle {
					return
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP port unreachable from a not-yet-listening server
		}
		fl.last.Store(time.Now().UnixNano())
		if _, err := u.l.WriteToUDPAddrPort(buf[:n], client); errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

func (u *udpForward) close() {
	u.l.Close()
	u.mu.Lock()
	flows := u.flows
	u.flows = nil
	u.mu.Unlock()
	for _, fl := range flows {
		fl.c.Close()
	}
}

// Flows is the number of live UDP flows, for tests.
func (f *Forwarder) Flows() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fw := range f.ports {
		if fw.udp != nil {
			fw.udp.mu.Lock()
			n += len(fw.udp.flows)
			fw.udp.mu.Unlock()
		}
	}
	return n
}
