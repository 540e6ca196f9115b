package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Health is the namespace's side of the network as measured from inside
// it, at one moment.
type Health struct {
	Interface string `json:"interface"`
	// Present: the interface exists; Up: it is up and has a carrier (a
	// TAP device has one while its helper holds it open).
	Present bool `json:"present"`
	Up      bool `json:"up"`
	// Address: Config.Address is on it. DefaultRoute: the main table's
	// default route goes through it to Config.Gateway.
	Address      bool `json:"address"`
	DefaultRoute bool `json:"defaultRoute"`
	// Probe is what was asked of the far side ("ARP 10.0.2.2"), ProbeOK
	// whether it answered, and RTT how fast.
	Probe   string        `json:"probe,omitempty"`
	ProbeOK bool          `json:"probeOK"`
	RTT     time.Duration `json:"rtt,omitempty"`
	// Problems says in words what is wrong; none means healthy.
	Problems []string `json:"problems,omitempty"`
}

// OK says whether nothing is wrong.
func (h *Health) OK() bool { return len(h.Problems) == 0 }

func (h *Health) problem(format string, a ...any) {
	h.Problems = append(h.Problems, fmt.Sprintf(format, a...))
}

// Measure checks cfg's interface from inside the network namespace the
// calling thread is in: present, up, its address, the default route
// through it, and an ARP request for the gateway. ARP is what every driver
// answers on the far side of the link (slirp4netns's and pasta's user-
// space stack, the bridge's kernel for lxc-user-nic) without depending on
// any service of the host, so an answer proves the helper is alive and
// reading the device. It needs CAP_NET_RAW (the node's root has it).
func Measure(cfg *Config, timeout time.Duration) Health {
	h := Health{Interface: cfg.Interface}
	if cfg.Interface == "" {
		return h
	}
	l, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		h.problem("interface %s is missing: %v", cfg.Interface, err)
		return h
	}
	h.Present = true
	a := l.Attrs()
	h.Up = a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0
	if !h.Up {
		h.problem("interface %s is down (flags %v, oper state %s)", cfg.Interface, a.Flags, a.OperState)
	}
	if cfg.Address.IsValid() {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			h.problem("addresses of %s: %v", cfg.Interface, err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok && ip == cfg.Address.Addr() {
				h.Address = true
			}
		}
		if !h.Address && err == nil {
			h.problem("interface %s does not have %s", cfg.Interface, cfg.Address)
		}
	}
	if cfg.Gateway.IsValid() {
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			h.problem("routes: %v", err)
		}
		for _, r := range routes {
			if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok && gw == cfg.Gateway && r.LinkIndex == a.Index && isDefault(r.Dst) {
				h.DefaultRoute = true
			}
		}
		if !h.DefaultRoute && err == nil {
			h.problem("no default route via %s on %s", cfg.Gateway, cfg.Interface)
		}
		h.Probe = "ARP " + cfg.Gateway.String()
		if h.Up && h.Address {
			h.RTT, err = arpProbe(a.Index, a.HardwareAddr, cfg.Address.Addr(), cfg.Gateway, timeout)
			h.ProbeOK = err == nil
			if err != nil {
				h.problem("the gateway %s did not answer ARP on %s: %v", cfg.Gateway, cfg.Interface, err)
			}
		}
	}
	return h
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpRequest is an Ethernet/IPv4 ARP request (RFC 826) from hw/src for
// target.
func arpRequest(hw net.HardwareAddr, src, target netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], hw)
	s, t := src.As4(), target.As4()
	copy(b[14:18], s[:])
	copy(b[24:28], t[:])
	return b
}

// arpReplyFrom says whether b is an ARP reply whose sender is ip.
func arpReplyFrom(b []byte, ip netip.Addr) bool {
	if len(b) < 28 || binary.BigEndian.Uint16(b[2:]) != unix.ETH_P_IP || b[4] != 6 || b[5] != 4 || binary.BigEndian.Uint16(b[6:]) != 2 {
		return false
	}
	sender, _ := netip.AddrFromSlice(b[14:18])
	return sender == ip
}

// arpProbe asks who has target on the interface, and waits up to timeout
// for the answer; it returns how long that took.
func arpProbe(ifindex int, hw net.HardwareAddr, src, target netip.Addr, timeout time.Duration) (time.Duration, error) {
	if len(hw) != 6 {
		return 0, fmt.Errorf("interface has no Ethernet address (%v)", hw)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return 0, fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}); err != nil {
		return 0, fmt.Errorf("bind packet socket: %w", err)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	bcast := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, arpRequest(hw, src, target), 0, bcast); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, fmt.Errorf("no answer within %s", timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return 0, err
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("receive: %w", err)
		}
		if arpReplyFrom(buf[:n], target) {
			return time.Since(start), nil
		}
	}
}
