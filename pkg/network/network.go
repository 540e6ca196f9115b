// Package network gives the node's network namespace a non-loopback
// interface. Each driver (slirp4netns, pasta, lxc-user-nic, none) lives in
// its own subpackage and has two halves, as in RootlessKit: a Parent that
// runs on the host side (in the user's own namespaces) and a Child that runs
// inside the node's user+network namespace as uid 0.
//
// The sandbox calls them in this order:
//  1. the sandbox creates the node's user and network namespaces;
//  2. Parent.Start, on the host side, attaches the interface (starting any
//     helper process as a child of the supervisor);
//  3. the Config it returns is handed (as JSON) into the namespace, where
//     Child.Configure finishes the job (lo up, addresses, routes) and the
//     sandbox writes /etc/resolv.conf from Config.DNS;
//  4. when the Parent is a Waiter and its helper exits while the node
//     runs, Start again on a fresh Parent against the same namespace, and
//     Child.Configure again inside;
//  5. Parent.Close on teardown stops the helpers.
package network

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
)

// NS names the node's namespaces as seen from the host.
type NS struct {
	// PID is a process inside the node's network namespace.
	PID int
	// UserNS is the path of the user namespace that owns NetNS
	// (/proc/PID/ns/user of a process in it).
	UserNS string
	// NetNS is the path of the node's network namespace.
	NetNS string
	// StateDir is a private (0700) directory for the driver's sockets and
	// logs; it is removed on teardown.
	StateDir string
}

// Options are what the user chose.
type Options struct {
	MTU int // 0: the driver's default (65520 for slirp4netns)
	// Subnet is the namespace's network, for drivers that let usernode
	// choose it (Driver.OwnAddress false): the namespace gets its .100,
	// the host is .2 and DNS .3, slirp4netns's layout. Zero: 10.0.2.0/24.
	Subnet netip.Prefix
	// AllowHostLoopback lets the namespace reach the host's 127.0.0.1.
	// Off by default: pods must not reach services bound to the host's
	// loopback.
	AllowHostLoopback bool
}

// Config is what the namespace needs to know once the interface exists.
type Config struct {
	Driver    string            `json:"driver"`
	Interface string            `json:"interface,omitempty"`
	Address   netip.Prefix      `json:"address,omitempty"`
	Gateway   netip.Addr        `json:"gateway,omitempty"`
	DNS       []netip.Addr      `json:"dns,omitempty"`
	MTU       int               `json:"mtu,omitempty"`
	Extra     map[string]string `json:"extra,omitempty"`
}

// Parent is the host-side half of a driver.
type Parent interface {
	// Start attaches the interface to ns and returns when it is usable.
	Start(ctx context.Context, ns NS, opts Options) (*Config, error)
	// Close stops whatever Start started. It is safe to call more than once.
	Close() error
}

// Waiter is implemented by a Parent whose interface lives only as long as
// a helper process: slirp4netns's and pasta's TAP device is gone the
// moment the helper exits (issue 14: after a kill -9 of slirp4netns the
// node had no tap0, its pods no egress, and `status` still said ready;
// seen here for pasta too: no eth0 right after the kill).
// The sandbox waits on it and starts the driver again on a fresh Parent
// against the same namespace.
type Waiter interface {
	// Wait returns a channel that receives how the helper ended, once it
	// has. Close's own stop of the helper is sent too: the caller stops
	// listening before it closes. Nil before a successful Start.
	Wait() <-chan error
}

// Child is the half that runs inside the namespace as uid 0.
type Child interface {
	// Configure brings up lo and whatever Parent.Start left for the
	// namespace's side to do.
	Configure(cfg *Config) error
}

// Driver describes one registered network driver.
type Driver struct {
	Name string
	// Helper is the external binary the driver needs ("" for none) and
	// Package the Debian package that ships it, for error messages.
	Helper, Package string
	// Find locates the helper binary, or says which package to install
	// (nil when there is no helper).
	Find func() (string, error)
	// NeedsTun is set for drivers whose helper opens /dev/net/tun.
	NeedsTun bool
	// HostLoopback is set when Options.AllowHostLoopback is supported.
	HostLoopback bool
	// OwnAddress is set for drivers whose address comes from the host
	// (lxc-user-nic: the bridge's network), which ignore Options.Subnet.
	OwnAddress bool
	// New returns fresh halves; the Parent and the Child may run in
	// different processes, so neither may depend on the other's state.
	New func() (Parent, Child)
}

var drivers = map[string]Driver{}

// Register makes a driver known to New. Subpackages call it from init;
// import pkg/network/drivers to get all of them.
func Register(d Driver) {
	if _, dup := drivers[d.Name]; dup {
		panic("network: driver registered twice: " + d.Name)
	}
	drivers[d.Name] = d
}

// Names lists the registered drivers, sorted.
func Names() []string {
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the registered driver called name.
func Lookup(name string) (Driver, error) {
	d, ok := drivers[name]
	if !ok {
		known := Names()
		if len(known) == 0 {
			return Driver{}, fmt.Errorf("unknown network driver %q: no drivers are registered (import github.com/usernode/usernode/pkg/network/drivers)", name)
		}
		return Driver{}, fmt.Errorf("unknown network driver %q: known drivers are %s", name, strings.Join(known, ", "))
	}
	return d, nil
}

// New returns the two halves of the driver called name.
func New(name string) (Parent, Child, error) {
	d, err := Lookup(name)
	if err != nil {
		return nil, nil, err
	}
	p, c := d.New()
	return p, c, nil
}

// Layout is the addresses of subnet as slirp4netns lays it out (and pasta
// is told to): the namespace at .100, the gateway (the host) at .2, the
// DNS forwarder at .3.
func Layout(subnet netip.Prefix) (addr netip.Prefix, gateway, dns netip.Addr) {
	if !subnet.IsValid() {
		subnet = netip.MustParsePrefix("10.0.2.0/24")
	}
	nth := func(n int) netip.Addr {
		a := subnet.Masked().Addr()
		for range n {
			a = a.Next()
		}
		return a
	}
	return netip.PrefixFrom(nth(100), subnet.Bits()), nth(2), nth(3)
}

// HelperMissingError says that a driver's helper binary is not installed.
type HelperMissingError struct {
	Driver, Binary, Package string
}

func (e *HelperMissingError) Error() string {
	return fmt.Sprintf("network driver %s needs %s, which is not in PATH: install it (Debian/Ubuntu: apt-get install %s) or choose another driver", e.Driver, e.Binary, e.Package)
}

// LookHelper finds a driver's helper binary in PATH, or says which package
// to install.
func LookHelper(driver, binary, pkg string) (string, error) {
	p, err := exec.LookPath(binary)
	if err != nil {
		return "", &HelperMissingError{Driver: driver, Binary: binary, Package: pkg}
	}
	return p, nil
}

// ResolvConf renders /etc/resolv.conf for the namespace. With no DNS
// servers it still writes a valid file (resolvers then fail fast instead of
// querying the host's loopback resolver, which the namespace cannot reach).
func ResolvConf(cfg *Config) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by usernode from the %s network driver\n", cfg.Driver)
	for _, a := range cfg.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if len(cfg.DNS) == 0 {
		b.WriteString("# this driver provides no DNS server\n")
	}
	return []byte(b.String())
}
