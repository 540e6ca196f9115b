// Package port forwards ports from the host into the node's network
// namespace. Drivers live in subpackages (builtin); one conformance suite
// (testsuite) runs against each.
package port

import (
	"context"
	"errors"
	"net/netip"
)

// Spec is one forwarded port: HostIP:HostPort on the host to ChildPort
// inside the node's network namespace.
type Spec struct {
	Proto     string     `json:"proto"` // "tcp" or "udp"
	HostIP    netip.Addr `json:"hostIP"`
	HostPort  uint16     `json:"hostPort"`
	ChildPort uint16     `json:"childPort"`
	// ChildIP, when set, is the address dialled in the namespace instead
	// of the forwarder's default (127.0.0.1): a pod's IP for a hostPort,
	// a Service's ClusterIP for a LoadBalancer port.
	ChildIP netip.Addr `json:"childIP,omitzero"`
}

// Forwarder adds and removes forwarded ports at run time.
type Forwarder interface {
	Add(ctx context.Context, s Spec) error
	Remove(ctx context.Context, s Spec) error
	List() []Spec
	Close() error
}

// ErrInUse is what Add's error matches (errors.Is) when another socket
// holds the host port: the one failure a caller may wait out, since
// another usernode's check probes a port by binding it for a moment.
var ErrInUse = errors.New("host port already in use")

// InUse is an Add error that says msg and matches ErrInUse.
func InUse(msg string) error { return inUseError(msg) }

type inUseError string

func (e inUseError) Error() string        { return string(e) }
func (e inUseError) Is(target error) bool { return target == ErrInUse }
