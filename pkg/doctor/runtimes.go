package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/usernode/usernode/internal/version"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/node/component"
)

// RuntimeProbe is what FindRuntime learned about one CRI runtime on this
// host.
type RuntimeProbe struct {
	// Bins are the runtime's tools found, by Tool.Name; Missing the rest.
	Bins    component.Binaries
	Missing []node.Missing
	// Info is what the daemon said it is (Probe), Err why it did not.
	Info component.RuntimeInfo
	Err  error
}

// FindRuntimeWith finds a runtime's tools as `up` does with s (--bin-dir,
// $USERNODE_BIN_DIR, the build cache, PATH, --containerd) and probes its
// daemon: what doctor reports is what `up` would run.
func FindRuntimeWith(s node.Search, getenv func(string) string) func(context.Context, component.Runtime) RuntimeProbe {
	return func(ctx context.Context, rt component.Runtime) RuntimeProbe {
		bins, missing := node.FindTools(rt.New().Tools(), s, getenv)
		p := RuntimeProbe{Bins: bins, Missing: missing}
		if bin := bins[rt.Daemon.Name]; bin != "" {
			p.Info, p.Err = rt.Probe(ctx, bin)
		}
		return p
	}
}

// UseModel makes doctor look for the runtimes where c's node would (its
// binDir and containerd) and judge them against the runtime c names.
func (s *System) UseModel(c *cluster.Config) {
	s.CRI = c.CRI
	s.FindRuntime = FindRuntimeWith(node.SearchFor(cluster.Options{BinDir: c.BinDir, Containerd: c.Containerd}), s.getenv)
}

// RuntimeReport is one registered runtime as doctor found it; binary.cri
// carries one per runtime in --json.
type RuntimeReport struct {
	component.RuntimeInfo
	// Found: its daemon is there.
	Found bool `json:"found"`
	// Modes is RuntimeInfo.Modes, for readers of the JSON.
	Modes string `json:"modes,omitempty"`
	// Configured: the model's cri (config.yaml, --cri) names it.
	Configured bool `json:"configured"`
	// Runs: a node can run with it on this host now (found, answering,
	// new enough, every tool there, and the host's mode one it runs).
	Runs bool `json:"runs"`
	// Tools are its tools found, by name; Missing the others, each with
	// its fix.
	Tools   component.Binaries `json:"tools,omitempty"`
	Missing []string           `json:"missing,omitempty"`
	// Problem is why it cannot run here, with the fix.
	Problem string `json:"problem,omitempty"`

	missing []node.Missing
	// old: the daemon is there but `up` refuses it (too old, or it did
	// not say what it is); the fix is another release.
	old bool
}

// hostDegraded says whether a node here runs in degraded mode, as the
// cgroup checks found, and why.
func (r *run) hostDegraded(ctx context.Context) (bool, string) {
	for _, id := range []string{"cgroup.v2", "cgroup.delegation"} {
		res, ok := r.results[id]
		if !ok {
			for _, c := range catalogue() {
				if c.id == id {
					res = r.runOne(ctx, c)
					r.results[id] = res
				}
			}
		}
		if res.Status == Fail {
			return true, "see " + id
		}
	}
	return false, ""
}

func (r *run) runtimeReport(ctx context.Context, rt component.Runtime, degraded bool) RuntimeReport {
	p := r.sys.FindRuntime(ctx, rt)
	rep := RuntimeReport{RuntimeInfo: p.Info, Configured: rt.Name == r.sys.CRI, Tools: p.Bins, missing: p.Missing}
	rep.Name = rt.Name
	for _, m := range p.Missing {
		if m.Tool.Name == rt.Daemon.Name {
			rep.Problem = fmt.Sprintf("%s not found: %s", rt.Name, fixOf(m))
			continue
		}
		rep.Missing = append(rep.Missing, m.String())
	}
	rep.Found = p.Bins[rt.Daemon.Name] != ""
	if rep.Path == "" {
		rep.Path = p.Bins[rt.Daemon.Name]
	}
	switch {
	case !rep.Found:
		return rep
	case p.Err != nil:
		// Probe refuses a release usernode does not configure (a crio
		// older than it writes for): the fix is a newer one.
		rep.Problem, rep.old = p.Err.Error(), true
		return rep
	}
	rep.Modes = p.Info.Modes()
	mode, runs := "full", p.Info.Full
	if degraded {
		mode, runs = "degraded", p.Info.Degraded
	}
	switch {
	case rt.Daemon.Min != "" && version.Less(p.Info.Version, rt.Daemon.Min):
		rep.old = true
		rep.Problem = fmt.Sprintf("%s %s is older than %s, the oldest usernode configures: %s", rt.Name, p.Info.Version, rt.Daemon.Min, upgrade(rt.Daemon))
	case len(rep.Missing) > 0:
		var names []string
		for _, m := range p.Missing {
			names = append(names, m.Tool.Names[0])
		}
		rep.Problem = fmt.Sprintf("%s found but %s missing: %s", rt.Name, joinAnd(names), fixesOf(p.Missing))
	case !runs:
		// Info.Why (in --json) says why at length; the result's Why
		// carries it, the list stays one line per runtime.
		rep.Problem = fmt.Sprintf("%s %s runs in %s, and this host gives %s mode", rt.Name, p.Info.Version, rep.Modes, mode)
	default:
		rep.Runs = true
	}
	return rep
}

// fixOf is what installs one missing tool.
func fixOf(m node.Missing) string {
	switch {
	case m.Given != "":
		return m.String()
	case m.Tool.Built && m.Tool.Build != "":
		return "run " + m.Tool.Build
	case m.Tool.Built:
		return "run `make k8s`"
	}
	return "apt-get install " + m.Tool.Debian
}

// fixesOf is what installs all of ms: one apt-get line, and each build.
func fixesOf(ms []node.Missing) string {
	var pkgs, other []string
	for _, m := range ms {
		if !m.Tool.Built && m.Given == "" {
			if !slices.Contains(pkgs, m.Tool.Debian) {
				pkgs = append(pkgs, m.Tool.Debian)
			}
			continue
		}
		if f := fixOf(m); !slices.Contains(other, f) {
			other = append(other, f)
		}
	}
	if len(pkgs) > 0 {
		other = append(other, "apt-get install "+strings.Join(pkgs, " "))
	}
	return strings.Join(other, ", and ")
}

func upgrade(t component.Tool) string {
	if t.Built && t.Build != "" {
		return "run " + t.Build
	}
	if t.Built {
		return "run `make k8s`"
	}
	return "install a newer " + t.Debian
}

func (rep RuntimeReport) line() string {
	name := rep.Name
	if rep.Configured {
		name += " [configured]"
	}
	if !rep.Found {
		return name + " " + strings.TrimPrefix(rep.Problem, rep.Name+" ")
	}
	v := rep.Version
	if v == "" {
		v = "version unknown"
	}
	s := fmt.Sprintf("%s %s (%s)", name, v, rep.Path)
	if rep.Modes != "" {
		s += ": " + rep.Modes
	}
	if rep.Problem != "" {
		s += "; " + rep.Problem
	}
	return s
}

// runtimeFix is the Fix for a runtime's gaps: packages as root, builds as
// the user (a comment in --fix's script, which runs as root).
func runtimeFix(rep RuntimeReport, rt component.Runtime) (*Fix, bool) {
	ms := rep.missing
	if rep.old {
		ms = []node.Missing{{Tool: rt.Daemon}}
	}
	var deb, fed, user []string
	for _, m := range ms {
		switch {
		case m.Given != "":
			user = append(user, "# "+m.String())
		case m.Tool.Built:
			f := "make k8s"
			if m.Tool.Build != "" {
				f = m.Tool.Build
			}
			if !slices.Contains(user, f) {
				user = append(user, f)
			}
		default:
			if !slices.Contains(deb, m.Tool.Debian) {
				deb, fed = append(deb, m.Tool.Debian), append(fed, m.Tool.Fedora)
			}
		}
	}
	if len(deb) == 0 && len(user) == 0 {
		return nil, false
	}
	if len(deb) == 0 {
		return same(strings.Join(user, "\n")), false
	}
	f := &Fix{Debian: "apt-get install -y " + strings.Join(deb, " "), Fedora: "dnf install -y " + strings.Join(fed, " ")}
	if len(user) > 0 {
		asUser := "\n# then, as the user, in usernode's source tree: " + strings.Join(user, "; ")
		f.Debian += asUser
		f.Fedora += asUser
	}
	return f, true
}

// checkCRI reports every registered runtime the way `up` would find it:
// its version, the modes it runs, its tools. It fails when none can run
// a node on this host, and warns when the one the model names cannot.
func checkCRI(ctx context.Context, r *run) Result {
	if r.sys.FindRuntime == nil {
		return Result{Status: Skip, Found: "no runtime lookup was given to doctor"}
	}
	degraded, reason := r.hostDegraded(ctx)
	mode := "full"
	if degraded {
		mode = "degraded"
	}
	var reps []RuntimeReport
	var lines, runs []string
	configured := -1
	for i, rt := range node.Runtimes {
		rep := r.runtimeReport(ctx, rt, degraded)
		reps = append(reps, rep)
		lines = append(lines, rep.line())
		if rep.Runs {
			runs = append(runs, rt.Name)
		}
		if rep.Configured {
			configured = i
		}
	}
	res := Result{Found: strings.Join(lines, "\n"), Runtimes: reps}
	why := "The kubelet runs pods through a CRI runtime; usernode configures " + strings.Join(node.Runtimes.Names(), " or ") +
		" for rootless mode, and this host gives " + mode + " mode"
	if degraded {
		why += " (" + reason + ")"
	}
	why += "."
	switch {
	case configured < 0:
		res.Status, res.Why = Warn, fmt.Sprintf("%s The model's cri %q is none of them: `up` refuses it.", why, r.sys.CRI)
		res.Fix = same("# set cri: in config.yaml (or --cri) to one of " + strings.Join(node.Runtimes.Names(), ", "))
		if len(runs) == 0 {
			res.Status = Fail
		}
		return res
	case reps[configured].Runs:
		res.Status = Pass
		return res
	}
	rt, rep := node.Runtimes[configured], reps[configured]
	res.Status = Warn
	if len(runs) == 0 {
		res.Status = Fail
	}
	problem := rep.Problem
	if problem == "" {
		problem = rt.Name + " cannot run here"
	}
	if rep.Found && !rep.old && len(rep.missing) == 0 && rep.Why != "" {
		problem += ": " + rep.Why
	}
	res.Why = why + " " + problem
	if len(runs) > 0 {
		res.Why += fmt.Sprintf(". %s runs here: `usernode up --cri %s`, or `cri: %s` in config.yaml.", joinAnd(runs), runs[0], runs[0])
	} else {
		res.Why += ". No runtime usernode knows runs here."
	}
	res.Fix, res.Root = runtimeFix(rep, rt)
	if res.Fix == nil && rep.Found && !rep.Runs && degraded {
		res.Fix = same("# give the node a delegated cgroup v2 tree (see the cgroup checks' fixes), or run a runtime that runs in degraded mode:\n# CRI-O (hack/build-crio.sh, then usernode up --cri crio) or containerd 1.6/1.7 (usernode up --containerd PATH)")
	}
	return res
}
