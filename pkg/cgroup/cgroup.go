// Package cgroup finds the cgroup v2 subtree systemd delegated to the user,
// and prepares it for the node: the sandbox's own processes in a leaf, the
// delegated controllers enabled for the pods' cgroups below.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
)

// Mode is how the node can use cgroups.
type Mode string

const (
	// Full means a delegated cgroup v2 subtree: pod limits are enforced.
	Full Mode = "full"
	// Degraded means no writable cgroup v2 tree (hybrid or v1 host, or no
	// delegation). The node runs, but containerd runs with
	// disable_cgroup=true and the kubelet with cgroupsPerQOS=false, so no
	// pod limit is enforced.
	Degraded Mode = "degraded"
)

// Required controllers: without them the kubelet cannot enforce the limits
// a pod spec asks for. cpuset and io are used when present.
var Required = []string{"cpu", "memory", "pids"}

// Info is what Detect found.
type Info struct {
	Mode   Mode   `json:"mode"`
	Reason string `json:"reason,omitempty"`
	Fix    string `json:"fix,omitempty"`
	// Layout is "unified", "hybrid", "legacy" or "none".
	Layout string `json:"layout"`
	// Path is the delegated cgroup (the caller's own), relative to the
	// cgroup2 mount, and Dir is where it is on disk.
	Path        string   `json:"path,omitempty"`
	Dir         string   `json:"dir,omitempty"`
	Controllers []string `json:"controllers,omitempty"`
}

// Host reads the system through a path prefix so tests can use fixtures.
type Host struct {
	Root string // "" for the real system
	UID  int
	PID  string // "self" or a number
}

func (h Host) path(p string) string { return filepath.Join(h.Root, p) }

const delegateFix = "run usernode in a cgroup delegated to you: `usernode install` then `systemctl --user start usernode` (a unit with Delegate=yes), or `systemd-run --user -p Delegate=yes --scope usernode ...`; for cpuset and io also add /etc/systemd/system/user@.service.d/delegate.conf with [Service] Delegate=cpu cpuset io memory pids"

// Layout reports how cgroups are mounted, from mountinfo.
func (h Host) Layout() (string, error) {
	f, err := os.Open(h.path("/proc/" + h.PID + "/mountinfo"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return "", err
	}
	var v2root, v2other, v1 bool
	for _, m := range mounts {
		switch {
		case m.FSType == "cgroup2" && m.Mountpoint == "/sys/fs/cgroup":
			v2root = true
		case m.FSType == "cgroup2":
			v2other = true
		case m.FSType == "cgroup":
			v1 = true
		}
	}
	switch {
	case v2root:
		return "unified", nil
	case v1 && v2other:
		return "hybrid", nil
	case v1:
		return "legacy", nil
	}
	return "none", nil
}

// Detect decides between Full and Degraded for the calling process.
func (h Host) Detect() Info {
	if h.PID == "" {
		h.PID = "self"
	}
	layout, err := h.Layout()
	if err != nil {
		return Info{Mode: Degraded, Layout: "unknown", Reason: fmt.Sprintf("cannot read mountinfo: %v", err)}
	}
	info := Info{Mode: Degraded, Layout: layout}
	if layout != "unified" {
		info.Reason = fmt.Sprintf("cgroup v2 is not mounted at /sys/fs/cgroup (layout: %s)", layout)
		info.Fix = "boot with the unified hierarchy: add systemd.unified_cgroup_hierarchy=1 to the kernel command line (Debian/Ubuntu: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; Fedora/RHEL: grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1) and reboot"
		return info
	}
	b, err := os.ReadFile(h.path("/proc/" + h.PID + "/cgroup"))
	if err != nil {
		info.Reason = fmt.Sprintf("cannot read /proc/%s/cgroup: %v", h.PID, err)
		return info
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			info.Path = p
		}
	}
	if info.Path == "" {
		info.Reason = "no cgroup v2 entry in /proc/self/cgroup"
		return info
	}
	info.Dir = h.path(filepath.Join("/sys/fs/cgroup", info.Path))
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(info.Dir, "cgroup.procs"), &st); err != nil {
		info.Reason = fmt.Sprintf("cannot stat %s: %v", info.Dir, err)
		return info
	}
	if int(st.Uid) != h.UID {
		info.Reason = fmt.Sprintf("the cgroup %s is not delegated to uid %d (owned by uid %d)", info.Path, h.UID, st.Uid)
		info.Fix = delegateFix
		return info
	}
	c, err := os.ReadFile(filepath.Join(info.Dir, "cgroup.controllers"))
	if err != nil {
		info.Reason = fmt.Sprintf("cannot read cgroup.controllers: %v", err)
		return info
	}
	info.Controllers = strings.Fields(string(c))
	var missing []string
	for _, r := range Required {
		if !slices.Contains(info.Controllers, r) {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		info.Reason = fmt.Sprintf("controllers %s are not delegated to %s (have: %s)", strings.Join(missing, ", "), info.Path, strings.Join(info.Controllers, " "))
		info.Fix = "add /etc/systemd/system/user@.service.d/delegate.conf with [Service] Delegate=cpu cpuset io memory pids, then systemctl daemon-reload and log in again"
		return info
	}
	info.Mode = Full
	return info
}

// Prepare readies a delegated cgroup for the node: it moves every process
// of dir into dir/supervisor (cgroup v2 forbids processes in a cgroup whose
// controllers are enabled for children), enables the delegated controllers,
// and creates dir/node, the root of the node's cgroup namespace. It returns
// the node cgroup's directory; the node's init calls EvacuateToInit there.
func Prepare(dir string, controllers []string) (string, error) {
	sup := filepath.Join(dir, "supervisor")
	if err := os.MkdirAll(sup, 0o755); err != nil {
		return "", err
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return "", err
	}
	for _, pid := range strings.Fields(string(procs)) {
		if err := os.WriteFile(filepath.Join(sup, "cgroup.procs"), []byte(pid), 0); err != nil {
			return "", fmt.Errorf("moving pid %s to %s: %w", pid, sup, err)
		}
	}
	if err := Enable(dir, controllers); err != nil {
		return "", err
	}
	node := filepath.Join(dir, "node")
	// A node that ended without its cgroup being removed (a scope rather
	// than a unit, which systemd trims, or a killed supervisor) leaves
	// dir/node with controllers enabled in its subtree_control: the new
	// init could not be started into it (EBUSY, no internal processes).
	// Empty cgroups are removed; live processes mean an old node runs.
	if err := RemoveTree(node); err != nil {
		return "", fmt.Errorf("a previous node's cgroup is still in use: %w; stop its processes (`cat %s/cgroup.procs` in each child) first", err, node)
	}
	if err := os.Mkdir(node, 0o755); err != nil {
		return "", err
	}
	return node, nil
}

// RemoveTree removes the cgroup dir and every cgroup below it, deepest
// first. A cgroup whose processes have just been killed can stay busy for
// a moment, so EBUSY is retried briefly. A missing dir is no error.
func RemoveTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := RemoveTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for i := 0; ; i++ {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, syscall.ENOENT):
			return nil
		case errors.Is(err, syscall.EBUSY) && i < 50:
			time.Sleep(20 * time.Millisecond)
		default:
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
	}
}

// EvacuateToInit runs inside the node's cgroup namespace: it moves the
// caller into root/init and enables, for root's children, every controller
// root has, so the kubelet and runc can create limited pod cgroups.
func EvacuateToInit(root string) error {
	init := filepath.Join(root, "init")
	if err := os.MkdirAll(init, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(init, "cgroup.procs"), []byte("0"), 0); err != nil {
		return fmt.Errorf("moving the node's init to %s: %w", init, err)
	}
	c, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	return Enable(root, strings.Fields(string(c)))
}

// Enable turns on controllers for dir's children.
func Enable(dir string, controllers []string) error {
	var b strings.Builder
	for _, c := range controllers {
		b.WriteString(" +" + c)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.TrimSpace(b.String())), 0); err != nil {
		return fmt.Errorf("enabling %v in %s: %w", controllers, dir, err)
	}
	return nil
}
