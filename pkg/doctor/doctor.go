// Package doctor checks whether a host can run a rootless usernode node and
// says, for every gap, why it matters and how to close it.
//
// Statuses:
//   - FAIL: usernode cannot run here, or cannot run in full mode (pod
//     resource limits enforced through a delegated cgroup v2 tree). A FAIL
//     that only costs full mode is marked so, and the summary's mode is then
//     "degraded": the node still runs, with cgroups disabled and no limits.
//   - WARN: the node runs, but something is fragile, insecure or missing for
//     some workloads (multi-node VXLAN, low ports, a short-lived session).
//   - PASS: as wanted.
//   - SKIP: the check does not apply here (a sysctl this kernel lacks, a
//     check that depends on a failed one).
//   - INFO: nothing to fix; doctor explains a setting people ask about.
package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/node/containerd"
)

// Status is a check's verdict.
type Status string

// The statuses, in the words the table prints. Only Fail counts against
// the node (it makes the summary's mode degraded or blocked, and the CLI
// exit 1); Warn is worth reading but the node runs; Skip is a check that
// does not apply on this host (the setting does not exist, or a check it
// depends on failed); Info reports without judging.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
	Info Status = "INFO"
)

// Fix is what an administrator runs, per distribution family. Lines are
// shell commands; lines starting with '#' are guidance, not commands.
type Fix struct {
	Debian string `json:"debian"`
	Fedora string `json:"fedora"`
}

func same(s string) *Fix { return &Fix{Debian: s, Fedora: s} }

// For returns the fix for a distribution family ("debian", "fedora");
// any other family gets Debian's, the one most hosts are close to.
func (f *Fix) For(family string) string {
	if family == "fedora" {
		return f.Fedora
	}
	return f.Debian
}

// Result is one check's finding.
type Result struct {
	ID       string `json:"id"`
	Category string `json:"category"`
	Title    string `json:"title"`
	Status   Status `json:"status"`
	Found    string `json:"found"`
	Why      string `json:"why,omitempty"`
	Fix      *Fix   `json:"fix,omitempty"`
	// Root is true when the fix needs root (and so goes into --fix's
	// script); false fixes are for the user's own shell.
	Root bool `json:"root"`
	// DegradedOnly marks a FAIL that leaves the node runnable in degraded
	// mode.
	DegradedOnly bool `json:"degraded_only,omitempty"`
	// Runtimes are binary.cri's findings, one per registered runtime.
	Runtimes []RuntimeReport `json:"runtimes,omitempty"`
}

// check is one entry of the catalogue. Checks run in order, and later ones
// may read earlier results (delegation needs the cgroup layout).
type check struct {
	id, category, title string
	run                 func(ctx context.Context, r *run) Result
}

// run carries state shared between the checks of one doctor invocation.
type run struct {
	sys     *System
	results map[string]Result
	cache   map[string]any
}

func (r *run) memo(key string, f func() any) any {
	if v, ok := r.cache[key]; ok {
		return v
	}
	v := f()
	r.cache[key] = v
	return v
}

// catalogue lists every check in report order; the namespace trials are
// last because they are the only ones with side effects on the kernel.
func catalogue() []check {
	return []check{
		{"cgroup.v2", "cgroup", "cgroup v2 at /sys/fs/cgroup", checkCgroupV2},
		{"cgroup.delegation", "cgroup", "cgroup controllers delegated to the user", checkDelegation},
		{"systemd.runtime-dir", "systemd", "XDG_RUNTIME_DIR", checkRuntimeDir},
		{"systemd.user-manager", "systemd", "systemd user manager", checkUserManager},
		{"systemd.linger", "systemd", "lingering (session survives logout)", checkLinger},
		{"systemd.dbus", "systemd", "D-Bus user session bus", checkDBus},
		{"subid.subuid", "subid", "/etc/subuid range", func(_ context.Context, r *run) Result { return checkSubID(r, "subuid") }},
		{"subid.subgid", "subid", "/etc/subgid range", func(_ context.Context, r *run) Result { return checkSubID(r, "subgid") }},
		{"subid.helpers", "subid", "newuidmap and newgidmap", checkIDMapHelpers},
		{"sysctl.unprivileged_userns_clone", "sysctl", "kernel.unprivileged_userns_clone", checkUsernsClone},
		{"sysctl.max_user_namespaces", "sysctl", "user.max_user_namespaces", checkMaxUserNS},
		{"sysctl.apparmor_restrict_unprivileged_userns", "sysctl", "kernel.apparmor_restrict_unprivileged_userns", checkAppArmorUserns},
		{"sysctl.ip_unprivileged_port_start", "sysctl", "net.ipv4.ip_unprivileged_port_start", checkPortStart},
		{"sysctl.ip_forward", "sysctl", "net.ipv4.ip_forward", checkIPForward},
		{"kernel.userns", "kernel", "user namespaces", checkUserNS},
		{"kernel.overlay", "kernel", "overlayfs in a user namespace", checkOverlay},
		{"kernel.tun", "kernel", "/dev/net/tun", checkTun},
		{"kernel.modules", "kernel", "bridge, veth, vxlan, iptables nat, br_netfilter", checkModules},
		{"binary.cri", "binaries", "CRI runtime (" + strings.Join(node.Runtimes.Names(), " or ") + ")", checkCRI},
		{"binary.oci", "binaries", "OCI runtime (" + strings.Join(containerd.OCIRuntime.Names, " or ") + ")", checkOCI},
		{"binary.network", "binaries", "network driver (" + helperNames() + ")", checkNetDriver},
		{"binary.cni", "binaries", "CNI plugins", checkCNI},
		{"binary.iptables", "binaries", "iptables", checkIPTables},
		{"multinode.host-ip", "multinode", "the host IP other hosts reach", checkHostIP},
		{"multinode.ports", "multinode", "multi-node ports free on the host IP", checkMultiNodePorts},
		{"trial.namespaces", "trial", "user+network namespace trial", checkTrial},
		{"trial.vxlan", "trial", "VXLAN and rp_filter in a user+network namespace (multi-node)", checkVXLANTrial},
	}
}

func helperNames() string {
	var names []string
	for _, t := range netHelpers() {
		names = append(names, t.name)
	}
	return strings.Join(names, " or ")
}

// IDs lists the check IDs in report order.
func IDs() []string {
	var ids []string
	for _, c := range catalogue() {
		ids = append(ids, c.id)
	}
	return ids
}

// Report is a whole doctor run.
type Report struct {
	User    ReportUser `json:"user"`
	Checks  []Result   `json:"checks"`
	Summary Summary    `json:"summary"`
	family  string
}

// ReportUser is the account the checks ran as: the checks answer for
// that user (its subordinate IDs, its systemd user manager), so a report
// read elsewhere says whose it was.
type ReportUser struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
}

// Summary counts statuses. Mode is "full" with no FAIL, "degraded" when
// every FAIL only costs resource limits, and "blocked" otherwise.
type Summary struct {
	Pass int    `json:"pass"`
	Warn int    `json:"warn"`
	Fail int    `json:"fail"`
	Skip int    `json:"skip"`
	Info int    `json:"info"`
	Mode string `json:"mode"`
	// OS is the distribution family whose fixes --fix prints: "debian",
	// "fedora" or "" when unknown.
	OS string `json:"os"`
}

// Run runs the checks, or only those whose IDs are given.
func Run(ctx context.Context, sys *System, only ...string) Report {
	r := &run{sys: sys, results: map[string]Result{}, cache: map[string]any{}}
	rep := Report{User: ReportUser{sys.User, sys.UID}, family: sys.osFamily()}
	want := map[string]bool{}
	for _, id := range only {
		want[id] = true
	}
	for _, c := range catalogue() {
		if len(want) > 0 && !want[c.id] {
			continue
		}
		res := r.runOne(ctx, c)
		r.results[c.id] = res
		rep.Checks = append(rep.Checks, res)
	}
	rep.Summary = summarize(rep.Checks)
	rep.Summary.OS = rep.family
	return rep
}

// runOne turns a panicking check into a FAIL naming it: one unexpected
// file layout must not hide every other finding.
func (r *run) runOne(ctx context.Context, c check) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = Result{Status: Fail, Found: fmt.Sprintf("doctor's check crashed: %v (please report this)", p)}
		}
		res.ID, res.Category, res.Title = c.id, c.category, c.title
		if res.Fix == nil {
			res.Root = false
		}
	}()
	return c.run(ctx, r)
}

func summarize(rs []Result) Summary {
	var s Summary
	blocked := false
	for _, r := range rs {
		switch r.Status {
		case Pass:
			s.Pass++
		case Warn:
			s.Warn++
		case Fail:
			s.Fail++
			if !r.DegradedOnly {
				blocked = true
			}
		case Skip:
			s.Skip++
		case Info:
			s.Info++
		}
	}
	switch {
	case blocked:
		s.Mode = "blocked"
	case s.Fail > 0:
		s.Mode = "degraded"
	default:
		s.Mode = "full"
	}
	return s
}

// Failed reports whether any check failed; the CLI exits 1 then.
func (rep Report) Failed() bool { return rep.Summary.Fail > 0 }

// Get returns the result with the given ID.
func (rep Report) Get(id string) (Result, bool) {
	for _, r := range rep.Checks {
		if r.ID == id {
			return r, true
		}
	}
	return Result{}, false
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func joinAnd(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}
