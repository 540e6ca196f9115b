package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	me := os.Getuid()
	for _, tc := range []struct {
		name, fixture string
		uid           int
		mode          Mode
		layout        string
		reason, fix   string
	}{
		{"hybrid host like this one", "hybrid", me, Degraded, "hybrid", "not mounted at /sys/fs/cgroup (layout: hybrid)", "systemd.unified_cgroup_hierarchy=1"},
		{"debian 12 with delegation", "debian12", me, Full, "unified", "", ""},
		{"cgroup owned by someone else", "debian12", me + 1, Degraded, "unified", "not delegated", "Delegate=yes"},
		{"cpu not delegated", "nocpu", me, Degraded, "unified", "controllers cpu are not delegated", "Delegate=cpu cpuset io memory pids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := Host{Root: filepath.Join("testdata", tc.fixture), UID: tc.uid}.Detect()
			if info.Mode != tc.mode || info.Layout != tc.layout {
				t.Fatalf("got mode %s layout %s (%s), want %s %s", info.Mode, info.Layout, info.Reason, tc.mode, tc.layout)
			}
			if !strings.Contains(info.Reason, tc.reason) || !strings.Contains(info.Fix, tc.fix) {
				t.Errorf("reason %q fix %q; want them to contain %q and %q", info.Reason, info.Fix, tc.reason, tc.fix)
			}
			if tc.mode == Full && strings.Join(info.Controllers, " ") != "cpuset cpu io memory pids" {
				t.Errorf("controllers = %v", info.Controllers)
			}
		})
	}
}

// Prepare and EvacuateToInit write the cgroupfs interface files; over a
// plain directory tree that shows what they write where.
func TestPrepareWritesInterfaceFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("41\n42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	node, err := Prepare(dir, []string{"cpu", "memory"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control")); string(got) != "+cpu +memory" {
		t.Errorf("subtree_control = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "supervisor", "cgroup.procs")); string(got) != "42" {
		t.Errorf("last pid moved = %q, want 42", got)
	}
	if node != filepath.Join(dir, "node") {
		t.Errorf("node = %s", node)
	}
	if err := os.WriteFile(filepath.Join(node, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := EvacuateToInit(node); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(node, "cgroup.subtree_control")); string(got) != "+cpu +memory +pids" {
		t.Errorf("node subtree_control = %q", got)
	}
}

// RemoveTree removes a cgroup and its children deepest first; on a plain
// directory tree (where rmdir needs empty dirs, as cgroupfs's interface
// files do not count) that shows the order.
func TestRemoveTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	for _, d := range []string{"init", "kubepods/burstable/pod1/ctr", "kubepods/besteffort"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if err := RemoveTree(dir); err != nil {
		t.Errorf("missing dir: %v", err)
	}
	// Prepare clears a stale node tree before making the new one.
	parent := t.TempDir()
	if err := os.WriteFile(filepath.Join(parent, "cgroup.procs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(parent, "node", "kubepods", "besteffort"), 0o755); err != nil {
		t.Fatal(err)
	}
	node, err := Prepare(parent, []string{"memory"})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(node); len(ents) != 0 {
		t.Errorf("stale children in %s: %v", node, ents)
	}
}
