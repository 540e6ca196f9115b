// Package node brings up a single-node Kubernetes cluster inside the
// sandbox: the host side (Up) finds the binaries, starts the sandbox and
// waits for the node; the node side (the usernode-node entry point, pid 2
// of the node) writes the PKI, the configs and the images, then supervises
// containerd, etcd, the control plane, CoreDNS, the kubelet and kube-proxy.
package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Binaries are the programs the node runs, by absolute host path.
type Binaries struct {
	Kubelet           string `json:"kubelet"`
	APIServer         string `json:"kubeApiserver"`
	ControllerManager string `json:"kubeControllerManager"`
	Scheduler         string `json:"kubeScheduler"`
	KubeProxy         string `json:"kubeProxy"`
	Etcd              string `json:"etcd"`
	Kubectl           string `json:"kubectl"`
	Coredns           string `json:"coredns"`
	Containerd        string `json:"containerd"`
	Ctr               string `json:"ctr"`
	OCIRuntime        string `json:"ociRuntime"`
	Iptables          string `json:"iptables"`
	CNIDir            string `json:"cniDir"`
}

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

// FindBinaries looks for the Kubernetes binaries in binDir, then the build
// cache, then PATH; for containerd, runc/crun, iptables and the CNI plugins
// in PATH and the usual places.
func FindBinaries(binDir string, getenv func(string) string) (*Binaries, error) {
	var dirs []string
	if binDir != "" {
		dirs = append(dirs, binDir)
	}
	if d := getenv("USERNODE_BIN_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, CacheDirs(getenv)...)
	b := &Binaries{}
	var missing []string
	k8s := func(dst *string, name string) {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
				*dst = p
				return
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			*dst, _ = filepath.Abs(p)
			return
		}
		missing = append(missing, name)
	}
	k8s(&b.Kubelet, "kubelet")
	k8s(&b.APIServer, "kube-apiserver")
	k8s(&b.ControllerManager, "kube-controller-manager")
	k8s(&b.Scheduler, "kube-scheduler")
	k8s(&b.KubeProxy, "kube-proxy")
	k8s(&b.Etcd, "etcd")
	k8s(&b.Kubectl, "kubectl")
	k8s(&b.Coredns, "coredns")
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s not found in --bin-dir, $USERNODE_BIN_DIR, the build cache (%s) or PATH: run `make k8s` to build Kubernetes, etcd and CoreDNS from the Go module proxy, or pass --bin-dir", strings.Join(missing, ", "), filepath.Join("$XDG_CACHE_HOME", "usernode", "bin"))
	}
	sys := func(dst *string, pkg string, names ...string) {
		for _, n := range names {
			// sbin dirs are often missing from a regular user's PATH on
			// Debian, where runc and iptables live.
			for _, p := range []string{n, "/usr/sbin/" + n, "/sbin/" + n} {
				if strings.Contains(p, "/") && p != n {
					if _, err := os.Stat(p); err != nil {
						continue
					}
				} else if lp, err := exec.LookPath(p); err == nil {
					p = lp
				} else {
					continue
				}
				*dst = p
				return
			}
		}
		missing = append(missing, fmt.Sprintf("%s (Debian/Ubuntu: apt-get install %s)", strings.Join(names, " or "), pkg))
	}
	sys(&b.Containerd, "containerd", "containerd")
	sys(&b.Ctr, "containerd", "ctr")
	sys(&b.OCIRuntime, "runc", "runc", "crun")
	sys(&b.Iptables, "iptables", "iptables")
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			b.CNIDir = d
			break
		}
	}
	if b.CNIDir == "" {
		missing = append(missing, "the CNI plugins bridge, host-local, loopback, portmap (Debian/Ubuntu: apt-get install containernetworking-plugins)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing: %s", strings.Join(missing, "; "))
	}
	for _, p := range []string{b.Kubelet, b.APIServer, b.ControllerManager, b.Scheduler, b.KubeProxy, b.Etcd, b.Kubectl, b.Coredns} {
		for _, h := range hiddenInside {
			if strings.HasPrefix(p, h) {
				return nil, fmt.Errorf("%s is under %s, which the node's sandbox replaces with its own: put the binaries elsewhere (e.g. ~/.cache/usernode/bin) and pass --bin-dir", p, h)
			}
		}
	}
	return b, nil
}

var errNoVersion = errors.New("no version in output")

// binaryVersion runs `bin --version` and returns the vX.Y.Z it prints.
func binaryVersion(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", bin, err, strings.TrimSpace(string(out)))
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "v1.") {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s --version: %w: %q", bin, errNoVersion, out)
}

func execCommand(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
