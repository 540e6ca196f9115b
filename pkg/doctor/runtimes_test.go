package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/version"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/node/component"
)

// fixtureRuntime finds rt's tools in the fixture tree, its daemon's
// version in h.exec; a release found this way runs in both modes.
func (h host) fixtureRuntime(s *System, rt component.Runtime) RuntimeProbe {
	p := RuntimeProbe{Bins: component.Binaries{}}
	for _, t := range rt.New().Tools() {
		found := ""
		for _, n := range t.Names {
			if path, ok := s.LookPath(n); ok {
				found = path
				break
			}
		}
		if found == "" {
			p.Missing = append(p.Missing, node.Missing{Tool: t})
			continue
		}
		p.Bins[t.Name] = found
	}
	if bin := p.Bins[rt.Daemon.Name]; bin != "" {
		v := version.Find(h.exec[filepath.Base(bin)])
		p.Info = component.RuntimeInfo{Name: rt.Name, Version: v, Path: bin, Full: true, Degraded: true}
	}
	return p
}

// probe is a runtime found at dir, at version v, running in full mode and
// in degraded mode if degraded, less the tools missing.
func probe(t *testing.T, name, dir, v string, degraded bool, missing ...string) RuntimeProbe {
	t.Helper()
	rt, err := node.Runtimes.Lookup("runtime", name)
	if err != nil {
		t.Fatal(err)
	}
	p := RuntimeProbe{Bins: component.Binaries{}}
	for _, tool := range rt.New().Tools() {
		gone := false
		for _, m := range missing {
			gone = gone || m == tool.Name
		}
		if gone {
			p.Missing = append(p.Missing, node.Missing{Tool: tool})
			continue
		}
		p.Bins[tool.Name] = filepath.Join(dir, tool.Names[0])
	}
	p.Info = component.RuntimeInfo{Name: name, Version: v, Path: p.Bins[rt.Daemon.Name], Full: true, Degraded: degraded}
	if !degraded {
		p.Info.Why = "containerd " + v + " cannot run a node without a delegated cgroup v2 tree (degraded mode)"
	}
	return p
}

const crioDir = "/home/alice/.cache/usernode/bin/crio-1.36.3"

func runtimeResult(t *testing.T, h host) Result {
	t.Helper()
	r, ok := Run(context.Background(), h.system(t), "binary.cri").Get("binary.cri")
	if !ok {
		t.Fatal("no binary.cri")
	}
	return r
}

// Both runtimes found, each complete: doctor names each with its version,
// path and modes, and --json carries the list.
func TestRuntimesBothFound(t *testing.T) {
	h := thisVM() // degraded: hybrid cgroups
	h.runtimes = map[string]RuntimeProbe{
		"containerd": probe(t, "containerd", "/usr/bin", "1.6.20", true),
		"crio":       probe(t, "crio", crioDir, "1.36.3", true),
	}
	r := runtimeResult(t, h)
	assertResult(t, r, want{status: Pass, noFix: true,
		found: "containerd [configured] 1.6.20 (/usr/bin/containerd): full and degraded mode\ncrio 1.36.3 (" + crioDir + "/crio): full and degraded mode"})

	rep := Run(context.Background(), h.system(t), "binary.cri")
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Checks []struct {
			ID       string
			Runtimes []struct {
				Name, Version, Path, Modes string
				Full, Degraded, Runs       bool
				Configured                 bool
				Tools                      map[string]string
			}
		}
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	rts := doc.Checks[0].Runtimes
	if len(rts) != 2 || rts[0].Name != "containerd" || !rts[0].Configured || !rts[0].Runs || rts[0].Modes != "full and degraded mode" ||
		rts[1].Name != "crio" || rts[1].Version != "1.36.3" || rts[1].Configured || !rts[1].Runs || rts[1].Tools["pinns"] != crioDir+"/pinns" {
		t.Errorf("--json runtimes: %+v\n%s", rts, js.String())
	}

	// Run as the node would with the other runtime: still a pass.
	h.cri = "crio"
	assertResult(t, runtimeResult(t, h), want{status: Pass, found: "crio [configured] 1.36.3 (" + crioDir + "/crio): full and degraded mode"})
}

// The configured crio lacks pinns: the node would not start with it, but
// containerd runs, so a warning that names the program and its build.
func TestRuntimeCRIOMissingPinns(t *testing.T) {
	h := thisVM()
	h.cri = "crio"
	h.runtimes = map[string]RuntimeProbe{
		"containerd": probe(t, "containerd", "/usr/bin", "1.6.20", true),
		"crio":       probe(t, "crio", crioDir, "1.36.3", true, "pinns"),
	}
	r := runtimeResult(t, h)
	assertResult(t, r, want{status: Warn, found: "crio [configured] 1.36.3 (" + crioDir + "/crio): full and degraded mode; crio found but pinns missing: run hack/build-crio.sh",
		debian: "hack/build-crio.sh", fedora: "hack/build-crio.sh"})
	if r.Root {
		t.Error("building CRI-O is the user's fix, not root's")
	}
	if !strings.Contains(r.Why, "`usernode up --cri containerd`") {
		t.Errorf("why does not offer containerd, which runs: %s", r.Why)
	}

	// Without pinns and conmon: the build, and conmon's package as root.
	h.runtimes["crio"] = probe(t, "crio", crioDir, "1.36.3", true, "pinns", "conmon")
	r = runtimeResult(t, h)
	assertResult(t, r, want{status: Warn, found: "crio found but pinns and conmon missing: run hack/build-crio.sh, and apt-get install conmon",
		debian: "apt-get install -y conmon\n# then, as the user, in usernode's source tree: hack/build-crio.sh", fedora: "dnf install -y conmon"})
	if !r.Root {
		t.Error("installing conmon needs root")
	}
}

// containerd 2.x on a host without a delegated cgroup tree: it cannot run
// the node, which fails unless CRI-O is there to run instead.
func TestRuntimeContainerd2Degraded(t *testing.T) {
	h := thisVM()
	h.runtimes = map[string]RuntimeProbe{
		"containerd": probe(t, "containerd", "/opt/containerd-2.1.4/bin", "2.1.4", false),
		"crio":       probe(t, "crio", crioDir, "1.36.3", true),
	}
	r := runtimeResult(t, h)
	assertResult(t, r, want{status: Warn, found: "containerd [configured] 2.1.4 (/opt/containerd-2.1.4/bin/containerd): full mode only; containerd 2.1.4 runs in full mode only, and this host gives degraded mode",
		debian: "# give the node a delegated cgroup v2 tree"})
	if !strings.Contains(r.Why, "degraded mode (see cgroup.v2)") || !strings.Contains(r.Why, "`usernode up --cri crio`") {
		t.Errorf("why does not say why the host is degraded, or what runs instead: %s", r.Why)
	}

	delete(h.runtimes, "crio") // the fixture has no crio
	r = runtimeResult(t, h)
	assertResult(t, r, want{status: Fail, found: "crio not found: run hack/build-crio.sh"})
	if !strings.Contains(r.Why, "No runtime usernode knows runs here") {
		t.Errorf("why: %s", r.Why)
	}

	// The same containerd on a host with delegation runs.
	h = ubuntu2404()
	h.runtimes = map[string]RuntimeProbe{"containerd": probe(t, "containerd", "/opt/containerd-2.1.4/bin", "2.1.4", false)}
	assertResult(t, runtimeResult(t, h), want{status: Pass, found: "containerd [configured] 2.1.4 (/opt/containerd-2.1.4/bin/containerd): full mode only"})
}

// A crio usernode does not configure (Probe refuses it): the configured
// runtime cannot run, and the fix is the build.
func TestRuntimeCRIOTooOld(t *testing.T) {
	h := thisVM()
	h.cri = "crio"
	old := probe(t, "crio", crioDir, "1.35.0", true)
	old.Info, old.Err = component.RuntimeInfo{}, errors.New(crioDir+"/crio is CRI-O 1.35.0; usernode configures 1.36 or newer: build it with hack/build-crio.sh")
	h.runtimes = map[string]RuntimeProbe{"crio": old}
	assertResult(t, runtimeResult(t, h), want{status: Warn, found: "crio [configured] version unknown (" + crioDir + "/crio); " + crioDir + "/crio is CRI-O 1.35.0",
		debian: "hack/build-crio.sh"})
}

// No runtime at all: a failure whose fix installs the configured one.
func TestRuntimesNoneFound(t *testing.T) {
	h := host{tree: t.TempDir(), uid: 1000, user: "alice", noTrie: true}
	r := runtimeResult(t, h)
	assertResult(t, r, want{status: Fail, found: "containerd [configured] not found: apt-get install containerd\ncrio not found: run hack/build-crio.sh",
		debian: "apt-get install -y containerd runc", fedora: "dnf install -y containerd runc"})
	if len(r.Runtimes) != 2 || r.Runtimes[0].Found || r.Runtimes[1].Found {
		t.Errorf("runtimes: %+v", r.Runtimes)
	}

	h.cri = "nosuch"
	assertResult(t, runtimeResult(t, h), want{status: Fail, found: "containerd not found", debian: "# set cri: in config.yaml (or --cri) to one of containerd, crio"})
}

// FindRuntimeWith is `up`'s search and the runtime's own Probe: a
// containerd named outright brings its ctr and shim; crio comes from the
// bin dir, and a release too old is reported with Probe's error.
func TestFindRuntimeWith(t *testing.T) {
	dir := t.TempDir()
	sys, ctrd, bin := filepath.Join(dir, "sys"), filepath.Join(dir, "containerd2"), filepath.Join(dir, "bin")
	script := map[string]string{
		filepath.Join(sys, "runc"):                     "echo runc version 1.1.5",
		filepath.Join(ctrd, "containerd"):              "echo containerd github.com/containerd/containerd/v2 v2.1.4 abc",
		filepath.Join(ctrd, "ctr"):                     "exit 0",
		filepath.Join(ctrd, "containerd-shim-runc-v2"): "exit 0",
		filepath.Join(bin, "crio"):                     "echo crio version 1.35.0",
	}
	for p, body := range script {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", sys)
	s := &System{Env: func(string) string { return "" }}
	s.UseModel(&cluster.Config{CRI: "containerd", BinDir: bin, Containerd: filepath.Join(ctrd, "containerd")})
	find := s.FindRuntime

	rt, _ := node.Runtimes.Lookup("runtime", "containerd")
	p := find(context.Background(), rt)
	if p.Err != nil || len(p.Missing) != 0 || p.Bins["ctr"] != filepath.Join(ctrd, "ctr") || p.Bins["oci-runtime"] != filepath.Join(sys, "runc") {
		t.Errorf("containerd: %+v", p)
	}
	if p.Info.Version != "v2.1.4" || !p.Info.Full || p.Info.Degraded || p.Info.Why == "" {
		t.Errorf("containerd 2.1.4 info: %+v", p.Info)
	}

	rt, _ = node.Runtimes.Lookup("runtime", "crio")
	p = find(context.Background(), rt)
	var missing []string
	for _, m := range p.Missing {
		missing = append(missing, m.Tool.Name)
	}
	if p.Bins["crio"] != filepath.Join(bin, "crio") || strings.Join(missing, " ") != "pinns conmon skopeo" {
		t.Errorf("crio: found %v, missing %v", p.Bins, missing)
	}
	if p.Err == nil || !strings.Contains(p.Err.Error(), "1.35.0") || !strings.Contains(p.Err.Error(), "hack/build-crio.sh") {
		t.Errorf("crio 1.35: %v", p.Err)
	}
}
