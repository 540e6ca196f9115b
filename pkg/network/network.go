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
//  4. Parent.Close on teardown stops the helpers.
package network

import (
	"context"
	"net/netip"
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

// Child is the half that runs inside the namespace as uid 0.
type Child interface {
	// Configure brings up lo and whatever Parent.Start left for the
	// namespace's side to do.
	Configure(cfg *Config) error
}
