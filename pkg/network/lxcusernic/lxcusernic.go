// Package lxcusernic is the network driver that moves one end of a veth
// pair into the namespace through LXC's setuid helper lxc-user-nic. The
// other end joins a host bridge (lxcbr0), so traffic takes the kernel's
// own path: the fastest driver, but root must allow the user in
// /etc/lxc/lxc-usernet and create the bridge.
package lxcusernic

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/network/internal/nsutil"
)

const (
	// Name is how users pick this driver (--network lxc-user-nic) and how
	// it is registered with pkg/network.
	Name = "lxc-user-nic"
	// DefaultBridge is the bridge Debian's lxc-net service creates, and so
	// the one root most likely allowed in lxc-usernet.
	DefaultBridge = "lxcbr0"
	ifname        = "eth0"
)

// UsernetPath is where lxc-user-nic reads who may attach to which bridge.
var UsernetPath = "/etc/lxc/lxc-usernet"

// helperPaths: lxc-user-nic lives outside PATH on Debian.
var helperPaths = []string{"/usr/libexec/lxc/lxc-user-nic", "/usr/lib/x86_64-linux-gnu/lxc/lxc-user-nic", "/usr/lib/lxc/lxc-user-nic"}

func init() {
	network.Register(network.Driver{Name: Name, Helper: "lxc-user-nic", Package: "liblxc-common", OwnAddress: true,
		Find: FindHelper,
		New:  func() (network.Parent, network.Child) { return &Parent{Bridge: DefaultBridge}, Child{} }})
}

// FindHelper locates lxc-user-nic: in PATH, then where distributions put it.
func FindHelper() (string, error) {
	if p, err := exec.LookPath("lxc-user-nic"); err == nil {
		return p, nil
	}
	// The fixed locations count only while PATH is the usual one, so that
	// a test (or a user) can hide the helper by emptying PATH.
	if os.Getenv("PATH") != "" {
		for _, p := range helperPaths {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", &network.HelperMissingError{Driver: Name, Binary: "lxc-user-nic", Package: "liblxc-common"}
}

// Parent attaches the namespace to a host bridge through lxc-user-nic and
// remembers the host end so that Close can delete it.
type Parent struct {
	// Bridge is the host bridge the veth's host end joins.
	Bridge string

	bin, lxcPath, netns, hostIf string
}

// Start checks up front what lxc-user-nic would refuse late (the helper,
// the lxc-usernet entry, the bridge and its address), picks a free
// address on the bridge's subnet, and has lxc-user-nic create the veth
// pair with eth0 in ns. The namespace side is configured by Child.
func (p *Parent) Start(ctx context.Context, ns network.NS, opts network.Options) (*network.Config, error) {
	bin, err := FindHelper()
	if err != nil {
		return nil, err
	}
	if opts.AllowHostLoopback {
		return nil, fmt.Errorf("network driver %s cannot reach the host's loopback (a veth is routed by the kernel, which drops 127.0.0.0/8 from other interfaces): use slirp4netns or pasta", Name)
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	if err := Allowed(UsernetPath, u, p.Bridge); err != nil {
		return nil, err
	}
	br, err := netlink.LinkByName(p.Bridge)
	if err != nil {
		return nil, fmt.Errorf("network driver %s: bridge %s: %w: root creates it (the lxc-net service does, or `ip link add %s type bridge` plus an address)", Name, p.Bridge, err, p.Bridge)
	}
	brAddr, err := bridgeAddr(br)
	if err != nil {
		return nil, err
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = br.Attrs().MTU
	}
	addr, err := pickAddr(br, brAddr)
	if err != nil {
		return nil, err
	}
	p.bin, p.lxcPath, p.netns = bin, ns.StateDir, ns.NetNS
	out, err := exec.CommandContext(ctx, bin, "create", ns.StateDir, "usernode", strconv.Itoa(ns.PID), "veth", p.Bridge, ifname).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("network driver %s: lxc-user-nic create: %v: %s", Name, err, strings.TrimSpace(string(out)))
	}
	// "eth0:<ifindex in ns>:<host veth>:<host ifindex>"
	f := strings.Split(strings.TrimSpace(lastLine(string(out))), ":")
	if len(f) >= 3 {
		p.hostIf = f[2]
	}
	return &network.Config{Driver: Name, Interface: ifname, Address: addr, Gateway: brAddr.Addr(),
		// lxc-net runs dnsmasq on the bridge address; without it there is
		// no DNS server for this driver.
		DNS: []netip.Addr{brAddr.Addr()}, MTU: mtu,
		Extra: map[string]string{"bridge": p.Bridge, "hostInterface": p.hostIf}}, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Close deletes the host end. The kernel also removes the pair when the
// namespace dies, so a failure here leaves nothing behind.
func (p *Parent) Close() error {
	if p.hostIf == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = exec.CommandContext(ctx, p.bin, "delete", p.lxcPath, "usernode", p.netns, "veth", p.Bridge, p.hostIf).Run()
	p.hostIf = ""
	return nil
}

func bridgeAddr(br netlink.Link) (netip.Prefix, error) {
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		if ok && ones <= 30 {
			return netip.PrefixFrom(ip, ones), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("network driver %s: bridge %s has no IPv4 address to route through", Name, br.Attrs().Name)
}

// pickAddr takes a random address in the upper half of the bridge's
// subnet (lxc-net's dnsmasq leases from the bottom) that the host has not
// seen as a neighbour.
func pickAddr(br netlink.Link, brAddr netip.Prefix) (netip.Prefix, error) {
	pfx := brAddr.Masked()
	hostBits := 32 - pfx.Bits()
	used := map[netip.Addr]bool{brAddr.Addr(): true}
	if neigh, err := netlink.NeighList(br.Attrs().Index, netlink.FAMILY_V4); err == nil {
		for _, n := range neigh {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok {
				used[ip] = true
			}
		}
	}
	base := binary.BigEndian.Uint32(pfx.Addr().AsSlice())
	size := uint32(1) << hostBits
	half := size / 2
	for range 64 {
		var b [4]byte
		rand.Read(b[:])
		off := half + binary.BigEndian.Uint32(b[:])%(half-1)
		if off == 0 || off == size-1 {
			continue
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], base+off)
		a := netip.AddrFrom4(ip)
		if !used[a] {
			return netip.PrefixFrom(a, pfx.Bits()), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("network driver %s: no free address in %s", Name, pfx)
}

// Allowed reports whether the usernet file lets u attach veths to bridge,
// the way lxc-user-nic reads it ("user|@group veth bridge count").
func Allowed(path string, u *user.User, bridge string) error {
	groups := map[string]bool{}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if gr, err := user.LookupGroupId(g); err == nil {
				groups[gr.Name] = true
			}
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network driver %s: %w: as root add the line `%s veth %s 10` to %s", Name, err, u.Username, bridge, path)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Fields(s.Text())
		if len(fl) < 4 || strings.HasPrefix(fl[0], "#") || fl[1] != "veth" || fl[2] != bridge {
			continue
		}
		if n, err := strconv.Atoi(fl[3]); err != nil || n < 1 {
			continue
		}
		if fl[0] == u.Username || (strings.HasPrefix(fl[0], "@") && groups[fl[0][1:]]) {
			return nil
		}
	}
	return fmt.Errorf("network driver %s: %s does not allow user %s to attach veth devices to %s: as root add the line `%s veth %s 10`", Name, path, u.Username, bridge, u.Username, bridge)
}

// Child configures eth0 inside the namespace: lxc-user-nic only moves the
// device in.
type Child struct{}

// Configure brings up lo, then gives eth0 the address, MTU and default
// route through the bridge that Parent.Start chose.
func (Child) Configure(cfg *network.Config) error {
	if err := nsutil.LoUp(); err != nil {
		return err
	}
	if err := nsutil.ConfigureStatic(cfg.Interface, cfg.Address, cfg.Gateway, cfg.MTU); err != nil {
		return fmt.Errorf("network driver %s: %w", Name, err)
	}
	return nil
}
