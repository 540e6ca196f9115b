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
	// Not under /tmp, which the sandbox replaces (and FindBinaries
	// refuses), nor beside the checkout, which CI may clone under /tmp.
	built, err := os.MkdirTemp("/var/tmp", "usernode-binaries-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(built) })
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

// A CRI-O bin dir without pinns: `up` names pinns and the script that
// builds it; FindTools reports it alone, for doctor.
func TestFindBinariesBuildScript(t *testing.T) {
	dir, err := os.MkdirTemp(".", "bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if dir, err = filepath.Abs(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crio"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	tools := []component.Tool{
		{Name: "crio", Names: []string{"crio"}, Built: true, Build: "hack/build-crio.sh"},
		{Name: "pinns", Names: []string{"pinns"}, Built: true, Build: "hack/build-crio.sh"},
	}
	getenv := func(string) string { return "" }
	_, err = FindBinaries(tools, Search{BinDir: dir}, getenv)
	if err == nil || !strings.HasPrefix(err.Error(), "pinns not found in --bin-dir") || !strings.Contains(err.Error(), "run hack/build-crio.sh") {
		t.Errorf("pinns missing: %v", err)
	}
	b, missing := FindTools(tools, Search{BinDir: dir}, getenv)
	if b["crio"] != filepath.Join(dir, "crio") || len(missing) != 1 || missing[0].Tool.Name != "pinns" {
		t.Errorf("FindTools: %v, missing %+v", b, missing)
	}
	// With Kubernetes missing too, `make k8s` builds all of them.
	_, err = FindBinaries(append(tools, component.Tool{Name: "kubelet", Names: []string{"kubelet"}, Built: true}), Search{BinDir: dir}, getenv)
	if err == nil || !strings.HasPrefix(err.Error(), "kubelet, pinns not found") || !strings.Contains(err.Error(), "make k8s") {
		t.Errorf("kubelet and pinns missing: %v", err)
	}
}
