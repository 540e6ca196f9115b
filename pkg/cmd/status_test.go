package cmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/sandbox"
)

// status names the runtime the node runs, its version and binary, in
// text and in --json; a node.json from before the probe shows none.
func TestStatusRuntime(t *testing.T) {
	st := &node.Status{
		Sandbox: &sandbox.State{Name: "n", Cgroup: cgroup.Info{Mode: cgroup.Degraded, Reason: "no delegation"}},
		Node:    &supervise.Status{Phase: "ready", Components: []supervise.ComponentStatus{{Name: "crio", PID: 7, State: "ready"}}},
		Runtime: &component.RuntimeInfo{Name: "crio", Version: "1.36.3", Path: "/home/u/.cache/usernode/bin/x/crio", Full: true, Degraded: true},
	}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  runtime: crio 1.36.3 (/home/u/.cache/usernode/bin/x/crio; runs in full and degraded mode)\n") {
		t.Errorf("status text:\n%s", b.String())
	}
	js, err := json.Marshal(statusOutput{Status: st})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Runtime struct{ Name, Version, Path string }
	}
	if err := json.Unmarshal(js, &doc); err != nil || doc.Runtime.Name != "crio" || doc.Runtime.Version != "1.36.3" || doc.Runtime.Path == "" {
		t.Errorf("status --json runtime %+v (%v): %s", doc.Runtime, err, js)
	}

	st.Runtime = nil
	b.Reset()
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "runtime:") {
		t.Errorf("a runtime line with no runtime:\n%s", b.String())
	}
}
