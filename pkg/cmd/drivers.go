package cmd

import (
	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/port/builtin"
	"github.com/usernode/usernode/pkg/sandbox"
)

// SandboxEntries are the drivers of this build for the sandbox's agent and
// init: every registered network driver and the built-in port forwarder.
// main registers them (sandbox.RegisterEntries); the commands that start a
// sandbox give Run the same ones (sandboxOpt).
func SandboxEntries() sandbox.Entries {
	return sandbox.Entries{Network: network.Lookup, Ports: portDriver()}
}

func portDriver() *sandbox.PortDriver {
	return &sandbox.PortDriver{
		NewForwarder: func(netns string, o sandbox.PortOptions) (port.Forwarder, error) {
			return builtin.New(netns, builtin.Options{BusyPoll: o.BusyPoll, KeepSourceIP: o.KeepSourceIP})
		},
		Serve:  api.Serve,
		Client: func(sock string) sandbox.PortClient { return api.NewClient(sock) },
	}
}

// sandboxOpt is what a command runs a sandbox with: the network driver
// named net, the port forwarder, and l for its progress lines.
func sandboxOpt(net string, l *log.Logger) (sandbox.Opt, error) {
	d, err := network.Lookup(net)
	if err != nil {
		return sandbox.Opt{}, err
	}
	return sandbox.Opt{Network: d, Ports: portDriver(), Log: l}, nil
}
