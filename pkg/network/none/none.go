// Package none is the network driver without a network: the namespace has
// only lo. For tests and for nodes that need no outside connectivity.
package none

import (
	"context"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/network/internal/nsutil"
)

// Name is how users pick this driver (--network none) and how it is
// registered with pkg/network.
const Name = "none"

func init() {
	network.Register(network.Driver{Name: Name,
		New: func() (network.Parent, network.Child) { return Parent{}, Child{} }})
}

// Parent has nothing to attach on the host side: no helper, no interface.
type Parent struct{}

// Start returns a Config that names lo as the namespace's interface, so
// that the rest of the node (the kubelet's node IP, the sandbox's checks)
// sees a driver like any other.
func (Parent) Start(context.Context, network.NS, network.Options) (*network.Config, error) {
	return &network.Config{Driver: Name, Interface: "lo"}, nil
}

// Close has nothing to stop.
func (Parent) Close() error { return nil }

// Child brings up lo, the namespace's only interface.
type Child struct{}

// Configure brings up lo; the Config has nothing else to apply.
func (Child) Configure(*network.Config) error { return nsutil.LoUp() }
