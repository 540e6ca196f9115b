package cmd

import (
	"fmt"
	"strings"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/network/drivers"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/sandbox"
)

func init() {
	// The sandbox knows only "none" on its own; the CLI brings every driver.
	sandbox.NetworkDriver = network.New
}

func parsePorts(specs []string) ([]port.Spec, error) {
	var out []port.Spec
	for _, s := range specs {
		p, err := port.ParseSpec(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) > 0 && sandbox.Ports == nil {
		return nil, fmt.Errorf("-p: port forwarding is not available in this build")
	}
	return out, nil
}

func netDriverNames() string {
	return strings.Join(network.Names(), ", ") + " (default " + drivers.Default + ")"
}
