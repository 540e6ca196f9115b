// Package none is the network driver without a network: the namespace has
// only lo. For tests and for nodes that need no outside connectivity.
package none

import (
	"context"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/network/internal/nsutil"
)

const Name = "none"

func init() {
	network.Register(network.Driver{Name: Name,
		New: func() (network.Parent, network.Child) { return Parent{}, Child{} }})
}

type Parent struct{}

func (Parent) Start(ctx context.Context, ns network.NS, opts network.Options) (*network.Config, error) {
	return &network.Config{Driver: Name, Interface: "lo"}, nil
}

func (Parent) Close() error { return nil }

type Child struct{}

func (Child) Configure(cfg *network.Config) error { return nsutil.LoUp() }
