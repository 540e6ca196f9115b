package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/network"
	_ "github.com/usernode/usernode/pkg/network/drivers" // registers the drivers doctor lists
	"github.com/usernode/usernode/pkg/node/cni"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/containerd"
	"github.com/usernode/usernode/pkg/node/kubeproxy"

	"github.com/usernode/usernode/internal/version"
)

// tool is a binary doctor looks for, with its package names.
type tool struct {
	name           string
	debian, fedora string
	min            string // oldest supported version, "" for any
}

type toolFound struct {
	tool
	path, version string
	err           error
}

func (f toolFound) String() string {
	v := f.version
	if v == "" {
		v = "version unknown"
		if f.err != nil {
			v = fmt.Sprintf("--version failed: %v", f.err)
		}
	}
	return fmt.Sprintf("%s %s (%s)", f.name, v, f.path)
}

func (r *run) findTool(ctx context.Context, t tool) (toolFound, bool) {
	p, ok := r.sys.LookPath(t.name)
	if !ok {
		return toolFound{tool: t}, false
	}
	f := toolFound{tool: t, path: p}
	out, err := r.sys.Exec(ctx, r.sys.path(p), "--version")
	f.version = version.Find(out)
	if f.version == "" {
		f.err = err
	}
	return f, true
}

// checkAlternatives passes when any of tools is installed, warning when
// the installed one is older than its minimum.
func (r *run) checkAlternatives(ctx context.Context, why string, tools []tool) Result {
	var found, old []string
	for _, t := range tools {
		f, ok := r.findTool(ctx, t)
		if !ok {
			continue
		}
		found = append(found, f.String())
		if t.min != "" && f.version != "" && version.Less(f.version, t.min) {
			old = append(old, fmt.Sprintf("%s %s is older than %s", t.name, f.version, t.min))
		}
	}
	first := tools[0]
	if len(found) == 0 {
		var names []string
		for _, t := range tools {
			names = append(names, t.name)
		}
		return Result{Status: Fail, Found: "none of " + strings.Join(names, ", ") + " found in $PATH or " + strings.Join(searchDirs, ":"),
			Why: why, Fix: &Fix{Debian: "apt-get install -y " + first.debian, Fedora: "dnf install -y " + first.fedora}, Root: true}
	}
	if len(old) > 0 && len(old) == len(found) {
		return Result{Status: Warn, Found: strings.Join(found, ", ") + "; " + strings.Join(old, ", "),
			Why: why + " Older releases lack the rootless settings usernode writes into their configuration.",
			Fix: &Fix{Debian: "apt-get install -y " + first.debian + "\n# or a newer release from the project", Fedora: "dnf install -y " + first.fedora}, Root: true}
	}
	return Result{Status: Pass, Found: strings.Join(found, ", ")}
}

// The lists below come from the registries `up` builds the node from, so
// doctor checks for exactly what the node can run.

// toolAlternatives are t's executables, each with its package: the first
// is t's own; an alternative (crun for runc) ships in a package of its
// own name.
func toolAlternatives(t component.Tool) []tool {
	var out []tool
	for i, n := range t.Names {
		alt := tool{name: n, debian: n, fedora: n, min: t.Min}
		if i == 0 {
			alt.debian, alt.fedora = t.Debian, t.Fedora
		}
		out = append(out, alt)
	}
	return out
}

func checkOCI(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "The CRI runtime starts containers with an OCI runtime.",
		toolAlternatives(containerd.OCIRuntime))
}

// netHelpers are the user-mode network stacks among the network drivers:
// the ones a node can use without anything set up by root. The default
// driver's comes first, as the one to install.
func netHelpers() []tool {
	var tools []tool
	names := append([]string{cluster.DefaultNet}, slices.DeleteFunc(network.Names(), func(n string) bool { return n == cluster.DefaultNet })...)
	for _, n := range names {
		d, err := network.Lookup(n)
		if err != nil || d.Helper == "" || d.OwnAddress {
			continue
		}
		tools = append(tools, tool{name: d.Helper, debian: d.Package, fedora: d.Package})
	}
	return tools
}

func checkNetDriver(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "The node's network namespace reaches the outside through a user-mode network stack.", netHelpers())
}

func checkIPTables(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "kube-proxy (iptables mode) and the CNI portmap plugin program NAT rules inside the node's namespace.",
		toolAlternatives(kubeproxy.IPTables))
}

var cniDirs, cniPlugins = cni.PluginsTool.Dirs, cni.PluginsTool.Names

func checkCNI(_ context.Context, r *run) Result {
	var found, missing []string
	dirs := map[string]bool{}
	for _, p := range cniPlugins {
		if path, ok := r.sys.lookIn(p, cniDirs); ok {
			found = append(found, p)
			dirs[path[:len(path)-len(p)-1]] = true
		} else {
			missing = append(missing, p)
		}
	}
	var in []string
	for _, d := range cniDirs {
		if dirs[d] {
			in = append(in, d)
		}
	}
	if len(missing) > 0 {
		f := "missing " + strings.Join(missing, ", ") + " in " + strings.Join(cniDirs, ", ")
		if len(found) > 0 {
			f += "; found " + strings.Join(found, ", ") + " in " + strings.Join(in, ", ")
		}
		return Result{Status: Fail, Found: f,
			Why: "Pods get their network from CNI plugins run inside the node: bridge and host-local for addresses, loopback for lo, portmap for hostPorts.",
			Fix: &Fix{Debian: "apt-get install -y containernetworking-plugins", Fedora: "dnf install -y containernetworking-plugins"}, Root: true}
	}
	return Result{Status: Pass, Found: strings.Join(found, ", ") + " in " + strings.Join(in, ", ")}
}
