// Package port forwards ports from the host into the node's network
// namespace. Drivers live in subpackages (builtin); one conformance suite
// (testsuite) runs against each.
package port

import (
	"context"
	"net/netip"
)

// Spec is one forwarded port: HostIP:HostPort on the host to ChildPort
// inside the node's network namespace.
type Spec struct {
	Proto     string     `json:"proto"` // "tcp" or "udp"
	HostIP    netip.Addr `json:"hostIP"`
	HostPort  uint16     `json:"hostPort"`
	ChildPort uint16     `json:"childPort"`
}

// Forwarder adds and removes forwarded ports at run time.
type Forwarder interface {
	Add(ctx context.Context, s Spec) error
	Remove(ctx context.Context, s Spec) error
	List() []Spec
	Close() error
}
