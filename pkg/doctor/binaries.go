package doctor

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// tool is a binary doctor looks for, with its package names.
type tool struct {
	name           string
	debian, fedora string
	min            string // oldest supported version, "" for any
}

var versionRE = regexp.MustCompile(`\bv?(\d+)\.(\d+)(?:\.(\d+))?`)

// parseVersion finds the version in a --version output: on the first line
// ("containerd github.com/containerd/containerd 1.6.20~ds1 ..." → 1.6.20)
// or a "Version:" line (CRI-O). Other lines are licence text whose numbers
// ("GPL 3.0") are not versions.
func parseVersion(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m []string
	for i, l := range lines {
		if i == 0 || strings.HasPrefix(strings.ToLower(strings.TrimSpace(l)), "version") {
			if m = versionRE.FindStringSubmatch(l); m != nil {
				break
			}
		}
	}
	if m == nil {
		return ""
	}
	v := m[1] + "." + m[2]
	if m[3] != "" {
		v += "." + m[3]
	}
	return v
}

// versionLess compares dotted numeric versions.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
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
	f.version = parseVersion(out)
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
		if t.min != "" && f.version != "" && versionLess(f.version, t.min) {
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

func checkCRI(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "The kubelet runs pods through a CRI runtime; usernode configures containerd (>= 1.4) or CRI-O (>= 1.22) for rootless mode.",
		[]tool{{"containerd", "containerd", "containerd", "1.4"}, {"crio", "cri-o", "cri-o", "1.22"}})
}

func checkOCI(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "The CRI runtime starts containers with an OCI runtime.",
		[]tool{{"runc", "runc", "runc", ""}, {"crun", "crun", "crun", ""}})
}

func checkNetDriver(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "The node's network namespace reaches the outside through a user-mode network stack.",
		[]tool{{"slirp4netns", "slirp4netns", "slirp4netns", ""}, {"pasta", "passt", "passt", ""}})
}

func checkIPTables(ctx context.Context, r *run) Result {
	return r.checkAlternatives(ctx, "kube-proxy (iptables mode) and the CNI portmap plugin program NAT rules inside the node's namespace.",
		[]tool{{"iptables", "iptables", "iptables-nft", ""}})
}

var cniDirs = []string{"/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"}
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

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
