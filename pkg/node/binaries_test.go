package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
)

// A containerd named with --containerd brings its own ctr and shim from
// its directory, ahead of the system's; a tool with no such file there is
// still found in PATH; a named path that is not a program is refused by
// name.
func TestFindBinariesBeside(t *testing.T) {
	// Not under /tmp, which the sandbox replaces (and FindBinaries refuses).
	built, err := os.MkdirTemp(".", "bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(built) })
	if built, err = filepath.Abs(built); err != nil {
		t.Fatal(err)
	}
	sys := t.TempDir()
	for _, p := range []string{filepath.Join(sys, "ctr"), filepath.Join(sys, "runc"), filepath.Join(built, "containerd"), filepath.Join(built, "ctr")} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", sys)
	tools := []component.Tool{
		{Name: "containerd", Names: []string{"containerd"}},
		{Name: "ctr", Names: []string{"ctr"}, Beside: "containerd"},
		{Name: "oci-runtime", Names: []string{"runc"}, Beside: "containerd"},
	}
	getenv := func(string) string { return "" }
	b, err := FindBinaries(tools, SearchFor(cluster.Options{Containerd: filepath.Join(built, "containerd")}), getenv)
	if err != nil {
		t.Fatal(err)
	}
	want := component.Binaries{"containerd": filepath.Join(built, "containerd"), "ctr": filepath.Join(built, "ctr"), "oci-runtime": filepath.Join(sys, "runc")}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("%s = %q, want %q", k, b[k], v)
		}
	}
	_, err = FindBinaries(tools, SearchFor(cluster.Options{Containerd: built}), getenv)
	if err == nil || !strings.Contains(err.Error(), built) || !strings.Contains(err.Error(), "not an executable file") {
		t.Errorf("a directory as --containerd: %v", err)
	}
	if !strings.HasPrefix(sys, "/tmp/") {
		return // TMPDIR is elsewhere: nothing under /tmp to refuse
	}
	tmp := filepath.Join(sys, "containerd")
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = FindBinaries(tools, SearchFor(cluster.Options{Containerd: tmp}), getenv)
	if err == nil || !strings.Contains(err.Error(), "sandbox replaces") {
		t.Errorf("--containerd under /tmp: %v", err)
	}
}
