package doctor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroupLayout is what /proc/self/mountinfo says about the cgroup mounts.
// It comes from the mount table, not statfs, so a fixture can describe any
// host.
type cgroupLayout struct {
	kind  string // "unified", "hybrid", "legacy", "elsewhere", "none", "unreadable"
	v2At  string // mount point of cgroup2, if any
	v1    []string
	err   error
	pid1  string
	v2Ctl []string
}

func (r *run) cgroups() cgroupLayout {
	return r.memo("cgroups", func() any { return readCgroupLayout(r.sys) }).(cgroupLayout)
}

func readCgroupLayout(s *System) cgroupLayout {
	var l cgroupLayout
	l.pid1, _ = s.readTrim("/proc/1/comm")
	b, err := s.readFile("/proc/self/mountinfo")
	if err != nil {
		l.kind, l.err = "unreadable", err
		return l
	}
	mounts, err := mountinfo.GetMountsFromReader(bytes.NewReader(b), nil)
	if err != nil {
		l.kind, l.err = "unreadable", err
		return l
	}
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			// The first cgroup2 mount wins, unless a later one sits at the
			// canonical place.
			if l.v2At == "" || m.Mountpoint == cgroupRoot {
				l.v2At = m.Mountpoint
			}
		case "cgroup":
			for _, o := range strings.Split(m.VFSOptions, ",") {
				if !v1Controllers[o] && !strings.HasPrefix(o, "name=") {
					continue
				}
				if !slices.Contains(l.v1, o) {
					l.v1 = append(l.v1, o)
				}
			}
		}
	}
	switch {
	case l.v2At == cgroupRoot:
		l.kind = "unified"
	case l.v2At != "" && len(l.v1) > 0:
		l.kind = "hybrid"
	case len(l.v1) > 0:
		l.kind = "legacy"
	case l.v2At != "":
		l.kind = "elsewhere"
	default:
		l.kind = "none"
	}
	if l.v2At != "" {
		if c, err := s.readTrim(path.Join(l.v2At, "cgroup.controllers")); err == nil {
			l.v2Ctl = strings.Fields(c)
		}
	}
	return l
}

var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true, "freezer": true,
	"net_cls": true, "net_prio": true, "blkio": true, "perf_event": true, "hugetlb": true, "pids": true,
	"rdma": true, "misc": true,
}

const degradedNote = "Without it usernode still runs in degraded mode: containerd and the kubelet are started with cgroups disabled, so pods run but their CPU, memory and pids limits are not enforced."

func cgroupV2Fix(pid1 string) *Fix {
	const arg = "systemd.unified_cgroup_hierarchy=1"
	if pid1 != "" && pid1 != "systemd" {
		// The kernel argument is read by systemd; with another init, the
		// grub commands would change nothing (and stop --fix's script on a
		// host without grub), so this fix is guidance only.
		return same("# PID 1 here is " + pid1 + ", not systemd, which reads " + arg + ":\n" +
			"# make this host's init mount only cgroup2 at /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)\n" +
			"# instead of the v1 hierarchies, or boot it with systemd and " + arg + ".")
	}
	return &Fix{
		Debian: "grep -q '" + arg + "' /etc/default/grub || sed -i 's/^GRUB_CMDLINE_LINUX=\"/&" + arg + " /' /etc/default/grub\n" +
			"update-grub\n# then reboot",
		Fedora: "grubby --update-kernel=ALL --args=" + arg + "\n# then reboot",
	}
}

func checkCgroupV2(_ context.Context, r *run) Result {
	l := r.cgroups()
	why := "usernode enforces pod CPU, memory and pids limits in a cgroup v2 subtree that systemd delegates to the user; cgroup v1 cannot be delegated to an unprivileged user and KEP-2033 supports only v2. " + degradedNote
	res := Result{Why: why, Fix: cgroupV2Fix(l.pid1), Root: true, DegradedOnly: true, Status: Fail}
	v1 := strings.Join(l.v1, ",")
	switch l.kind {
	case "unified":
		return Result{Status: Pass, Found: fmt.Sprintf("cgroup2 mounted at %s (controllers: %s)", cgroupRoot, orNone(l.v2Ctl))}
	case "hybrid":
		res.Found = fmt.Sprintf("hybrid hierarchy: cgroup v1 controllers (%s) under %s/*, cgroup2 at %s (controllers: %s)", v1, cgroupRoot, l.v2At, orNone(l.v2Ctl))
	case "legacy":
		res.Found = fmt.Sprintf("cgroup v1 only (%s); no cgroup2 mount", v1)
	case "elsewhere":
		res.Found = fmt.Sprintf("cgroup2 mounted at %s, not %s", l.v2At, cgroupRoot)
	case "none":
		res.Found = "no cgroup filesystem is mounted"
	default:
		res.Found = fmt.Sprintf("cannot read the mount table: %v", l.err)
	}
	if l.pid1 != "" && l.pid1 != "systemd" {
		res.Found += "; PID 1 is " + l.pid1 + ", not systemd"
	}
	return res
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, " ")
}

// Controllers usernode needs for pod limits, and those it uses when present.
var (
	requiredControllers = []string{"cpu", "memory", "pids"}
	wantedControllers   = []string{"cpuset", "io"}
)

var delegateFix = same("mkdir -p /etc/systemd/system/user@.service.d\n" +
	"cat > /etc/systemd/system/user@.service.d/delegate.conf <<'EOF'\n[Service]\nDelegate=cpu cpuset io memory pids\nEOF\n" +
	"systemctl daemon-reload\n# then log the user out and in again (or: systemctl restart user@UID.service)")

func checkDelegation(_ context.Context, r *run) Result {
	l := r.cgroups()
	if l.kind != "unified" {
		return Result{Status: Skip, Found: "needs cgroup v2 at /sys/fs/cgroup (see cgroup.v2); degraded mode does not use cgroups"}
	}
	s := r.sys
	uid := strconv.Itoa(s.UID)
	why := "The kubelet and containerd create pod cgroups below the user's delegated subtree; a controller that is not delegated cannot be limited there (cpu, memory, pids are needed for pod limits; cpuset and io for cpuset and blkio settings)."
	fix := &Fix{Debian: strings.ReplaceAll(delegateFix.Debian, "UID", uid), Fedora: strings.ReplaceAll(delegateFix.Fedora, "UID", uid)}

	own := cgroupSelf(s)
	// The delegation root is the topmost cgroup on our own path that the
	// user owns: systemd chowns the delegated subtree to the user.
	var root string
	if own != "" {
		p := path.Join(cgroupRoot, own)
		for ; p != cgroupRoot && p != "/"; p = path.Dir(p) {
			if fi, err := s.Stat(p); err == nil && fi.Mode.IsDir() && fi.UID == s.UID {
				root = p
			}
		}
	}
	where := ""
	if root == "" {
		// Shells from su or ssh live in a session scope, which is not
		// delegated; usernode starts itself under the user manager, so
		// report what the manager has.
		p := fmt.Sprintf("%s/user.slice/user-%s.slice/user@%s.service", cgroupRoot, uid, uid)
		if fi, err := s.Stat(p); err == nil && fi.Mode.IsDir() && fi.UID == s.UID {
			root = p
			if own != "" {
				where = fmt.Sprintf(" (this process is in %s, outside it; usernode starts itself under the user manager)", own)
			}
		}
	}
	if root == "" {
		return Result{Status: Fail, DegradedOnly: true, Why: why + " " + degradedNote,
			Found: fmt.Sprintf("no cgroup owned by uid %s: this process is in %q and user@%s.service has no delegated cgroup (is the user manager running? see systemd.user-manager)", uid, own, uid),
			Fix:   &Fix{Debian: "loginctl enable-linger " + shellQuote(s.User) + "\n" + fix.Debian, Fedora: "loginctl enable-linger " + shellQuote(s.User) + "\n" + fix.Fedora}, Root: true}
	}
	c, err := s.readTrim(path.Join(root, "cgroup.controllers"))
	if err != nil {
		return Result{Status: Fail, DegradedOnly: true, Why: why, Found: fmt.Sprintf("cannot read %s/cgroup.controllers: %v", root, err), Fix: fix, Root: true}
	}
	have := strings.Fields(c)
	var missReq, missWant []string
	for _, x := range requiredControllers {
		if !slices.Contains(have, x) {
			missReq = append(missReq, x)
		}
	}
	for _, x := range wantedControllers {
		if !slices.Contains(have, x) {
			missWant = append(missWant, x)
		}
	}
	found := fmt.Sprintf("%s delegates: %s%s", root, orNone(have), where)
	switch {
	case len(missReq) > 0:
		return Result{Status: Fail, DegradedOnly: true, Why: why + " " + degradedNote, Found: found + "; missing " + joinAnd(missReq), Fix: fix, Root: true}
	case len(missWant) > 0:
		return Result{Status: Warn, Why: why, Found: found + "; missing " + joinAnd(missWant), Fix: fix, Root: true}
	}
	return Result{Status: Pass, Found: found}
}

// cgroupSelf is this process's cgroup v2 path, from the "0::" line.
func cgroupSelf(s *System) string {
	b, err := s.readFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	return ""
}
