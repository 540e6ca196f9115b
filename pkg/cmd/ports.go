package cmd

import (
	"fmt"

	"github.com/usernode/usernode/pkg/port"
)

// parsePorts is replaced once the port package parses specs.
func parsePorts(specs []string) ([]port.Spec, error) {
	if len(specs) > 0 {
		return nil, fmt.Errorf("-p: port forwarding is not available in this build")
	}
	return nil, nil
}

func netDriverNames() string { return "none" }
