package sandbox

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
)

// NetworkDriver resolves a network driver by name. The CLI points it at
// the registry of all drivers; the sandbox alone knows only "none".
var NetworkDriver = func(name string) (network.Parent, network.Child, error) {
	if name == "none" {
		return noNet{}, noNet{}, nil
	}
	return nil, nil, fmt.Errorf("unknown network driver %q (known: none)", name)
}

// Ports, when set, makes the agent forward ports: NewForwarder builds a
// forwarder whose dial sockets are made in the node's network namespace,
// and Serve answers the port API on the supervisor's socket.
var Ports *PortDriver

// PortDriver is the port forwarder plugged into the agent.
type PortDriver struct {
	NewForwarder func(netnsPath string, o PortOptions) (port.Forwarder, error)
	Serve        func(l net.Listener, f port.Forwarder) error
	Client       func(socket string) PortClient
}

// PortClient talks to a running sandbox's forwarder.
type PortClient interface {
	Add(ctx context.Context, s port.Spec) error
}

type noNet struct{}

func (noNet) Start(context.Context, network.NS, network.Options) (*network.Config, error) {
	return &network.Config{Driver: "none"}, nil
}
func (noNet) Close() error                    { return nil }
func (noNet) Configure(*network.Config) error { return LoopbackUp() }

// LoopbackUp brings lo up in the current network namespace.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}
