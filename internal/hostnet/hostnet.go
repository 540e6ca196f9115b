// Package hostnet answers questions about the host's own network that
// `up`, `join` and doctor ask alike, from the kernel's tables (nothing is
// sent).
package hostnet

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Uplink is where this host's traffic to other hosts leaves: the default
// route's preferred source address (or its device's first IPv4 address),
// the device and its MTU.
type Uplink struct {
	IP  netip.Addr
	Dev string
	MTU int
}

// DefaultRoute is the host's uplink; ok is false when it has no IPv4
// default route with an address.
func DefaultRoute() (Uplink, bool) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return Uplink{}, false
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.To4() != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		up := Uplink{Dev: link.Attrs().Name, MTU: link.Attrs().MTU}
		if ip, ok := netip.AddrFromSlice(r.Src.To4()); ok && r.Src != nil {
			up.IP = ip
			return up, true
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err == nil && len(addrs) > 0 {
			if ip, ok := netip.AddrFromSlice(addrs[0].IP.To4()); ok {
				up.IP = ip
				return up, true
			}
		}
	}
	return Uplink{}, false
}
