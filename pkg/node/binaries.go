// Package node brings up a Kubernetes node inside the sandbox: the host
// side (Up) resolves the cluster model, finds the binaries its components
// need, starts the sandbox and waits for the node; the node side (the
// usernode-node entry point, pid 2 of the node) renders every component
// (Plan) and supervises them.
package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/usernode/usernode/internal/version"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
)

// CacheDirs are where `make k8s` (hack/build-k8s.sh) leaves its builds.
func CacheDirs(getenv func(string) string) []string {
	base := getenv("USERNODE_CACHE")
	if base == "" {
		c := getenv("XDG_CACHE_HOME")
		if c == "" && getenv("HOME") != "" {
			c = filepath.Join(getenv("HOME"), ".cache")
		}
		if c != "" {
			base = filepath.Join(c, "usernode")
		}
	}
	if base == "" {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(base, "bin", "*"))
	// Newest first: a later build of the same version wins.
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := os.Stat(dirs[i])
		b, _ := os.Stat(dirs[j])
		return a != nil && b != nil && a.ModTime().After(b.ModTime())
	})
	return dirs
}

// hiddenInside are host paths the sandbox replaces with its own.
var hiddenInside = []string{"/tmp/", "/run/", "/var/lib/", "/var/log/"}

// Search is where FindBinaries looks, besides PATH and the build cache.
type Search struct {
	BinDir string
	// Paths name tools' binaries outright, by Tool.Name (--containerd).
	Paths map[string]string
}

// SearchFor is the search o asks for.
func SearchFor(o cluster.Options) Search {
	s := Search{BinDir: o.BinDir, Paths: map[string]string{}}
	if o.Containerd != "" {
		s.Paths["containerd"] = o.Containerd
	}
	return s
}

// FindBinaries finds every tool: one named outright in s.Paths as it is;
// the built ones (Kubernetes, etcd, CoreDNS, CRI-O) in s.BinDir,
// $USERNODE_BIN_DIR, the build cache, then PATH; the system's (containerd,
// runc or crun, iptables, the CNI plugins) in PATH and the sbin dirs; a
// tool that goes with another (ctr and the shim with containerd) beside
// that one first. Everything missing is named at once, with what
// installs it.
func FindBinaries(tools []component.Tool, s Search, getenv func(string) string) (component.Binaries, error) {
	b, placed, missing := findTools(tools, s, getenv)
	var built, sys []string
	// Built tools that say how they are built (CRI-O's) get that fix;
	// the rest come from `make k8s`.
	builds := map[string][]string{}
	var buildOrder []string
	for _, m := range missing {
		switch {
		case m.Given != "":
			sys = append(sys, m.String())
		case m.Tool.Built && m.Tool.Build != "":
			if builds[m.Tool.Build] == nil {
				buildOrder = append(buildOrder, m.Tool.Build)
			}
			builds[m.Tool.Build] = append(builds[m.Tool.Build], m.Tool.Names[0])
		case m.Tool.Built:
			built = append(built, m.Tool.Names[0])
		default:
			sys = append(sys, m.String())
		}
	}
	where := "not found in --bin-dir, $USERNODE_BIN_DIR, the build cache (" + filepath.Join("$XDG_CACHE_HOME", "usernode", "bin") + ") or PATH"
	if len(built) > 0 {
		for _, script := range buildOrder {
			built = append(built, builds[script]...)
		}
		return nil, fmt.Errorf("%s %s: run `make k8s` to build Kubernetes, etcd, CoreDNS, Flannel and CRI-O from the Go module proxy, or pass --bin-dir", strings.Join(built, ", "), where)
	}
	if len(buildOrder) > 0 {
		var names, fixes []string
		for _, script := range buildOrder {
			names = append(names, builds[script]...)
			fixes = append(fixes, script)
		}
		if len(buildOrder) > 1 {
			fixes = fixes[:0]
			for _, script := range buildOrder {
				fixes = append(fixes, script+" for "+strings.Join(builds[script], ", "))
			}
		}
		return nil, fmt.Errorf("%s %s: run %s (`make k8s` runs it too), or pass --bin-dir with the directory that holds %s", strings.Join(names, ", "), where, strings.Join(fixes, ", "), plural(len(names), "it", "them"))
	}
	if len(sys) > 0 {
		return nil, fmt.Errorf("missing: %s", strings.Join(sys, "; "))
	}
	for _, t := range tools {
		for _, h := range hiddenInside {
			if (t.Built || placed[t.Name]) && strings.HasPrefix(b[t.Name], h) {
				return nil, fmt.Errorf("%s is under %s, which the node's sandbox replaces with its own: put the binaries elsewhere (e.g. ~/.cache/usernode/bin) and pass --bin-dir", b[t.Name], h)
			}
		}
	}
	return b, nil
}

// Missing is a tool FindTools did not find.
type Missing struct {
	Tool component.Tool
	// Given is the path s.Paths named, which is no executable file.
	Given string
}

// String names the tool and its fix.
func (m Missing) String() string {
	switch {
	case m.Given != "":
		return fmt.Sprintf("%s (given as %s, which is not an executable file: fix the path)", m.Given, m.Tool.Name)
	case m.Tool.Built && m.Tool.Build != "":
		return fmt.Sprintf("%s (build it with %s, or pass --bin-dir)", m.Tool.Names[0], m.Tool.Build)
	case m.Tool.Built:
		return fmt.Sprintf("%s (run `make k8s`, or pass --bin-dir)", m.Tool.Names[0])
	}
	return fmt.Sprintf("%s (Debian/Ubuntu: apt-get install %s)", strings.Join(m.Tool.Names, " or "), m.Tool.Debian)
}

// FindTools is FindBinaries' search without its verdict: what it found,
// and each tool it did not. Doctor reports a runtime's tools one by one
// with it, the way `up` would find them.
func FindTools(tools []component.Tool, s Search, getenv func(string) string) (component.Binaries, []Missing) {
	b, _, missing := findTools(tools, s, getenv)
	return b, missing
}

func findTools(tools []component.Tool, s Search, getenv func(string) string) (component.Binaries, map[string]bool, []Missing) {
	var dirs []string
	if s.BinDir != "" {
		dirs = append(dirs, s.BinDir)
	}
	if d := getenv("USERNODE_BIN_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, CacheDirs(getenv)...)
	b := component.Binaries{}
	// placed are the tools found outside the system's dirs, which must not
	// be where the sandbox mounts its own dirs.
	placed := map[string]bool{}
	var missing []Missing
	for _, t := range tools {
		if p, ok := s.Paths[t.Name]; ok {
			if !isExecutable(p) {
				missing = append(missing, Missing{Tool: t, Given: p})
				continue
			}
			b[t.Name], placed[t.Name] = p, true
			continue
		}
		var p string
		if b[t.Beside] != "" {
			p = findIn(t.Names, filepath.Dir(b[t.Beside]))
			placed[t.Name] = p != "" && placed[t.Beside]
		}
		switch {
		case p != "":
		case t.Dir:
			p = findDir(t)
		case t.Built:
			p = findBuilt(t.Names[0], dirs)
		default:
			p = findSystem(t.Names)
		}
		if p == "" {
			missing = append(missing, Missing{Tool: t})
			continue
		}
		b[t.Name] = p
	}
	return b, placed, missing
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// findIn is the first of names in dir.
func findIn(names []string, dir string) string {
	for _, n := range names {
		if p := filepath.Join(dir, n); isExecutable(p) {
			return p
		}
	}
	return ""
}

func findBuilt(name string, dirs []string) string {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		p, _ = filepath.Abs(p)
		return p
	}
	return ""
}

// findSystem looks in PATH and then the sbin dirs, which are often missing
// from a regular user's PATH on Debian, where runc and iptables live.
func findSystem(names []string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(d, n)); err == nil {
				return filepath.Join(d, n)
			}
		}
	}
	return ""
}

// findDir is the first of t.Dirs that holds every one of t.Names.
func findDir(t component.Tool) string {
	for _, d := range t.Dirs {
		all := true
		for _, n := range t.Names {
			if _, err := os.Stat(filepath.Join(d, n)); err != nil {
				all = false
				break
			}
		}
		if all {
			return d
		}
	}
	return ""
}

var errNoVersion = errors.New("no version in output")

// BinaryVersion runs a Kubernetes binary's `--version` and returns the
// vX.Y.Z it prints.
func BinaryVersion(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", bin, err, strings.TrimSpace(string(out)))
	}
	if v := version.Find(string(out)); v != "" {
		return "v" + v, nil
	}
	return "", fmt.Errorf("%s --version: %w: %q", bin, errNoVersion, out)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
