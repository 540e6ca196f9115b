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

// FindBinaries finds every tool: the built ones (Kubernetes, etcd,
// CoreDNS) in binDir, $USERNODE_BIN_DIR, the build cache, then PATH; the
// system's (containerd, runc or crun, iptables, the CNI plugins) in PATH
// and the sbin dirs. Everything missing is named at once, with what
// installs it.
func FindBinaries(tools []component.Tool, binDir string, getenv func(string) string) (component.Binaries, error) {
	var dirs []string
	if binDir != "" {
		dirs = append(dirs, binDir)
	}
	if d := getenv("USERNODE_BIN_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, CacheDirs(getenv)...)
	b := component.Binaries{}
	var missingBuilt, missing []string
	for _, t := range tools {
		var p string
		switch {
		case t.Dir:
			p = findDir(t)
		case t.Built:
			p = findBuilt(t.Names[0], dirs)
		default:
			p = findSystem(t.Names)
		}
		switch {
		case p != "":
			b[t.Name] = p
		case t.Built:
			missingBuilt = append(missingBuilt, t.Names[0])
		default:
			missing = append(missing, fmt.Sprintf("%s (Debian/Ubuntu: apt-get install %s)", strings.Join(t.Names, " or "), t.Debian))
		}
	}
	if len(missingBuilt) > 0 {
		return nil, fmt.Errorf("%s not found in --bin-dir, $USERNODE_BIN_DIR, the build cache (%s) or PATH: run `make k8s` to build Kubernetes, etcd, CoreDNS, Flannel and CRI-O from the Go module proxy, or pass --bin-dir", strings.Join(missingBuilt, ", "), filepath.Join("$XDG_CACHE_HOME", "usernode", "bin"))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing: %s", strings.Join(missing, "; "))
	}
	for _, t := range tools {
		for _, h := range hiddenInside {
			if t.Built && strings.HasPrefix(b[t.Name], h) {
				return nil, fmt.Errorf("%s is under %s, which the node's sandbox replaces with its own: put the binaries elsewhere (e.g. ~/.cache/usernode/bin) and pass --bin-dir", b[t.Name], h)
			}
		}
	}
	return b, nil
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
