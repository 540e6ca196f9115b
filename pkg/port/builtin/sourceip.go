package builtin

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/port/internal/nsnet"
)

// Keeping the client's address (Options.KeepSourceIP) works like a
// transparent proxy: the socket inside the node is IP_TRANSPARENT and
// bound to the client's address before it connects, so the server sees
// the client. The node must then route the server's replies, addressed to
// a host it does not know, back to that socket instead of out of its
// default route:
//
//   - replies of a server inside the node come from its loopback (the
//     forwarder dials 127.0.0.1): "from 127.0.0.0/8" first tries the main
//     table without its default route (so that kube-proxy's own traffic
//     from 127.0.0.1 to pods still goes to them), then goes to a table
//     whose only route is "local default";
//   - replies that went through a DNAT (a NodePort to a pod) come in on
//     the pod's interface: the forwarder's packets carry sourceMark, nft
//     copies it to the connection and back onto the replies, and
//     "fwmark sourceMark" goes to the same table; the forwarder's own
//     marked packets (iif lo) keep the main table so they still reach
//     the pod.
//
// A client whose address the node itself routes somewhere other than its
// default route (its slirp subnet, the pod CIDR) cannot be kept: replies
// would go there. The forwarder checks (insideNode) and dials from
// 127.0.0.1 for those.
const (
	sourceMark  = 0x1000_0000 // clear of kube-proxy's 0x4000 and 0x8000
	sourceTable = 2033
	// rulePriority is before the main table's 32766.
	rulePriority = 2033
)

// sourceNft is constant: never built from input.
const sourceNft = `table ip usernode_source_ip
delete table ip usernode_source_ip
table ip usernode_source_ip {
	chain out {
		type filter hook output priority mangle; policy accept;
		meta mark & 0x10000000 == 0x10000000 ct mark set ct mark | 0x10000000
	}
	chain in {
		type filter hook prerouting priority mangle; policy accept;
		ct mark & 0x10000000 == 0x10000000 meta mark set meta mark | 0x10000000
	}
}
`

// sourceRouting is the node-side state of KeepSourceIP.
type sourceRouting struct {
	h *netlink.Handle // made inside the node's network namespace

	mu       sync.Mutex
	at       time.Time
	prefixes []netip.Prefix // the node's main-table routes but the default
}

// setupSourceIP installs the routing the node needs (see above) in the
// network namespace at nsPath. Run again it changes nothing.
func setupSourceIP(nsPath string) (*sourceRouting, error) {
	// Without nft only servers inside the node itself (not behind a DNAT)
	// would see the client: refuse rather than half work.
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nft not found (apt install nftables): %w", err)
	}
	sr := &sourceRouting{}
	err = nsnet.Do(nsPath, func() error {
		var err error
		// Its sockets stay in the node's namespace whichever thread
		// uses them later.
		if sr.h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return err
		}
		if err := sr.install(); err != nil {
			return err
		}
		// Started from this thread, nft is in the node's network
		// namespace too.
		cmd := exec.Command(nft, "-f", "-")
		cmd.Stdin = strings.NewReader(sourceNft)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		if sr.h != nil {
			sr.h.Close()
		}
		return nil, err
	}
	return sr, nil
}

func (sr *sourceRouting) install() error {
	h := sr.h
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	if err := h.RouteReplace(&netlink.Route{Table: sourceTable, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
		Dst: all, LinkIndex: lo.Attrs().Index}); err != nil {
		return fmt.Errorf("route table %d: %w", sourceTable, err)
	}
	mask := uint32(sourceMark)
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	own := netlink.NewRule()
	own.Priority, own.Mark, own.Mask, own.IifName, own.Table = rulePriority, sourceMark, &mask, "lo", unix.RT_TABLE_MAIN
	marked := netlink.NewRule()
	marked.Priority, marked.Mark, marked.Mask, marked.Table = rulePriority+1, sourceMark, &mask, sourceTable
	specific := netlink.NewRule()
	specific.Priority, specific.Src, specific.Table, specific.SuppressPrefixlen = rulePriority+2, loopback, unix.RT_TABLE_MAIN, 0
	local := netlink.NewRule()
	local.Priority, local.Src, local.Table = rulePriority+3, loopback, sourceTable
	existing, _ := h.RuleList(unix.AF_INET)
	for _, r := range []*netlink.Rule{own, marked, specific, local} {
		if hasRule(existing, r) {
			continue
		}
		if err := h.RuleAdd(r); err != nil {
			return fmt.Errorf("ip rule (priority %d): %w", r.Priority, err)
		}
	}
	return nil
}

func hasRule(rules []netlink.Rule, r *netlink.Rule) bool {
	for _, e := range rules {
		if e.Priority == r.Priority && e.Table == r.Table {
			return true
		}
	}
	return false
}

// insideNode says whether the node routes ip anywhere but its default
// route. The routes are read again at most once a second: CNI adds the
// pod network after the node starts.
func (sr *sourceRouting) insideNode(ip netip.Addr) bool {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if time.Since(sr.at) > time.Second {
		routes, err := sr.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return true // unknown: do not risk it
		}
		sr.prefixes = sr.prefixes[:0]
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if p, ok := netipPrefix(r.Dst); ok && p.Bits() > 0 {
				sr.prefixes = append(sr.prefixes, p)
			}
		}
		sr.at = time.Now()
	}
	for _, p := range sr.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func (sr *sourceRouting) close() { sr.h.Close() }

// bindSource makes fd, a socket inside the node, connect from client;
// port 0 leaves the port to connect(2).
func bindSource(fd int, client netip.AddrPort) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, sourceMark); err != nil {
		return err
	}
	if client.Port() == 0 {
		// Picked at connect(2), unique per destination, so many TCP
		// connections from one client address do not run out of ports.
		// Without it (kernels before 4.2) bind picks the port, as it
		// did before the option: fewer ports, still correct.
		_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Addr: client.Addr().As4(), Port: int(client.Port())})
}

// keepsSource says whether a client's address can be kept when dialing
// target: IPv4 both, a client that is not loopback (from there the node
// sees 127.0.0.1 anyway) and not inside the node's own networks.
func (f *Forwarder) keepsSource(client netip.Addr, target netip.AddrPort) bool {
	return f.source != nil && client.Is4() && !client.IsLoopback() && target.Addr().Is4() && !f.source.insideNode(client)
}
