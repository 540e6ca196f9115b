package cmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/sandbox"
)

// status shows the network as measured, in text and in --json: a node
// whose helper was given up on is not shown healthy.
func TestStatusNetwork(t *testing.T) {
	st := &node.Status{
		Sandbox: &sandbox.State{Name: "n"},
		Node:    &supervise.Status{Phase: "ready"},
		Network: &sandbox.NetStatus{Driver: "slirp4netns", Interface: "tap0", Address: "10.0.2.100/24", Helper: "slirp4netns", Restarts: 6,
			GaveUp:   "slirp4netns exited 5 times in a row within 1m0s of its start",
			Problems: []string{"the supervisor gave up restarting slirp4netns: ...", "interface tap0 is missing: Link not found"}},
	}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  network: slirp4netns tap0 10.0.2.100/24: UNHEALTHY (slirp4netns not running, restarts 6)\n    the supervisor gave up") {
		t.Errorf("status text:\n%s", b.String())
	}
	js, err := json.Marshal(statusOutput{Status: st})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Network struct {
			Healthy  *bool
			Restarts int
			GaveUp   string
		}
	}
	if err := json.Unmarshal(js, &doc); err != nil || doc.Network.Healthy == nil || *doc.Network.Healthy || doc.Network.Restarts != 6 || doc.Network.GaveUp == "" {
		t.Errorf("status --json network %+v (%v): %s", doc.Network, err, js)
	}
}
