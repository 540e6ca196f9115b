package sandbox

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
)

// PortDriver is the port forwarder. Its halves run in different processes:
// the agent builds the forwarder (with dial sockets made in the node's
// network namespace) and serves the port API on the supervisor's socket;
// the supervisor adds the initial ports through Client.
type PortDriver struct {
	NewForwarder func(netnsPath string, o PortOptions) (port.Forwarder, error)
	Serve        func(l net.Listener, f port.Forwarder) error
	Client       func(socket string) PortClient
}

// PortClient talks to a running sandbox's forwarder.
type PortClient interface {
	Add(ctx context.Context, s port.Spec) error
}

// Entries are the drivers of the processes that Run starts by re-executing
// the program (the agent and init). A function cannot cross an exec, so
// each process gets them from its own main, through RegisterEntries.
type Entries struct {
	// Network resolves the driver named by Config.Net, for its child half
	// (network.Lookup does). Nil knows only "none".
	Network func(name string) (network.Driver, error)
	// Ports builds and serves the forwarder in the agent; Run's Opt.Ports
	// must be the same driver. Nil: the program forwards no ports.
	Ports *PortDriver
}

// registered is what this program's main gave RegisterEntries. The
// supervisor only checks it: a program that never registered would start
// its own main again as the agent.
var registered *Entries

// RegisterEntries registers the sandbox's agent and init with
// internal/reexec, with their drivers. Call it once from main, before
// reexec.Init, in every program that calls Run (test binaries included).
func RegisterEntries(e Entries) {
	reexec.Register(agentEntry, func() { agentMain(e) })
	reexec.Register(initEntry, func() { initMain(e) })
	registered = &e
}

// childOf is the namespace-side half of the driver called name.
func (e Entries) childOf(name string) (network.Child, error) {
	if e.Network == nil {
		if name == noNetName {
			return noNet{}, nil
		}
		return nil, fmt.Errorf("network driver %q: this program registered no network drivers (sandbox.RegisterEntries)", name)
	}
	d, err := e.Network(name)
	if err != nil {
		return nil, err
	}
	_, c := d.New()
	return c, nil
}

// parentOf is the host-side half of d, which must be the driver the
// config names: init looks its half up by that name.
func parentOf(d network.Driver, name string) (network.Parent, error) {
	switch {
	case d.New == nil && name == noNetName:
		return noNet{}, nil
	case d.New == nil:
		return nil, fmt.Errorf("network driver %q: none given to the sandbox (sandbox.Opt.Network)", name)
	case d.Name != name:
		return nil, fmt.Errorf("network driver %q given for a sandbox configured with %q", d.Name, name)
	}
	p, _ := d.New()
	return p, nil
}

// noNet is "none" for programs that bring no network drivers, so the
// sandbox runs without pkg/network's registry.
type noNet struct{}

const noNetName = "none"

func (noNet) Start(context.Context, network.NS, network.Options) (*network.Config, error) {
	return &network.Config{Driver: noNetName}, nil
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
