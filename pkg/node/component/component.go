// Package component is the seam the node is built on. A node is a list of
// components (the CRI runtime, the CNI, etcd and the control plane,
// CoreDNS, the kubelet, kube-proxy); each renders its files from the
// cluster model and returns the supervise.Steps that run it. Which
// components a node has follows from its role and from the runtime and
// CNI the model names, looked up in registries of values (Runtime, CNI):
// adding CRI-O or Flannel is a new package plus one line in a registry.
package component

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/usernode/usernode/internal/atomicfile"
	"github.com/usernode/usernode/internal/log"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

// Names of the steps other components wait for (supervise.Step.After).
// A step that names what it waits for, also when that is nothing (an
// empty After), starts as soon as that is ready, beside whatever else is.
const (
	// FieldManager is the server-side apply manager of every object the
	// node applies.
	FieldManager = "usernode"
	// APIServerStep is ready once kube-apiserver's /readyz answers.
	APIServerStep = "kube-apiserver"
	// DNSObjectsStep has applied CoreDNS's Service and RBAC.
	DNSObjectsStep = "coredns-objects"
	// KubeletStep is ready once the kubelet's /healthz answers.
	KubeletStep = "kubelet"
	// CNIStep (every CNI's last) has written the pod network's config for
	// the node's pod CIDR, so the kubelet has registered the Node.
	CNIStep = "cni"
)

// ImportStep is the step that imports env.Images[i] into the runtime.
func ImportStep(i int) string { return fmt.Sprintf("image-import-%d", i) }

// AfterRuntime is what waits for the runtime: its daemon (the step named
// after it) ready and every image imported. Pods wait for the imports: a
// pod sandbox made before the pause image is there would have the runtime
// pull it from a registry, which a node cannot reach.
func (e *Env) AfterRuntime() []string {
	after := []string{e.Runtime.Name}
	for i := range e.Images {
		after = append(after, ImportStep(i))
	}
	return after
}

// OnControlPlane is names on a control-plane node, and nothing (an empty,
// non-nil After) on a worker, whose API server runs on another node.
func (e *Env) OnControlPlane(names ...string) []string {
	if e.Node.Role != cluster.ControlPlane {
		return []string{}
	}
	return names
}

// AfterPodCIDR is what a step that reads the node's pod CIDR waits for
// (the CNI's). On a control plane, kube-apiserver only: the step polls
// until the Node is registered and has its CIDR, and on a warm start,
// where it has one already, writes the CNI config before the kubelet
// first asks the runtime whether the network is ready. The kubelet asks
// every 5 s (its runtime status loop), so a config written just after
// that first question left the Node NotReady 5 s longer (measured: Node
// Ready 5.4 s after the supervisor's last step, warm). On a worker, the
// kubelet: the step reads the API with the kubelet's client certificate,
// which exists once the kubelet has bootstrapped.
func (e *Env) AfterPodCIDR() []string {
	if e.Node.Role == cluster.ControlPlane {
		return []string{APIServerStep}
	}
	return []string{KubeletStep}
}

// Component is one part of the node.
type Component interface {
	// Name is the component's, as `usernode status` shows it.
	Name() string
	// Tools are the programs it runs, found on the host before the node
	// starts (so a missing one fails `up` at once, naming its package).
	Tools() []Tool
	// Steps writes the component's files (under env.Root) and returns
	// what the supervisor runs, each with what it waits for (After; nil
	// is the step before it in the node's plan, the components' order).
	Steps(env *Env) ([]supervise.Step, error)
}

// Env is what every component renders from: the model, and what the node
// found out about itself.
type Env struct {
	Cluster *cluster.Cluster
	Node    *cluster.Node
	// Binaries are the tools' absolute paths, by Tool.Name.
	Binaries Binaries
	// Degraded is set when the node has no delegated cgroup v2 tree.
	Degraded bool
	// Root prefixes every file a component writes: "" inside the node;
	// a directory that is later mounted at / in tests and the benchmark's
	// hard way. Paths inside configs and flags never carry it.
	Root string
	// PKI and Kubeconfigs are where the node's certificates and
	// kubeconfigs are, as the node sees them.
	PKI         *pki.PKI
	Kubeconfigs kubeconfig.Files
	// Runtime is the CRI runtime the node runs (the kubelet dials its
	// Endpoint).
	Runtime Runtime
	// Images are OCI archives every node imports into its runtime (no
	// registry is reachable), as the node sees them.
	Images []string
	// API reads the node's own objects (the CNI waits for its pod CIDR).
	API API
	// Log gets what a component's in-process work has to say while the
	// node runs (the supervisor's log); nil discards it.
	Log *log.Logger
}

// API is what components ask kube-apiserver.
type API interface {
	// PodCIDR waits for the controller-manager to give the node its share
	// of the pod CIDR.
	PodCIDR(ctx context.Context, node string) (netip.Prefix, error)
	// AnnotateNode waits for the node to register, then annotates it.
	AnnotateNode(ctx context.Context, node string, ann map[string]string) error
	// Apply is `kubectl apply --server-side --force-conflicts` of a
	// multi-document manifest, as fieldManager.
	Apply(ctx context.Context, manifest []byte, fieldManager string) error
}

// Path is where a component writes a file the node sees at inside.
func (e *Env) Path(inside string) string { return filepath.Join(e.Root, inside) }

// WriteFile writes a file the node sees at inside, private to the node's
// user, and makes its directory.
func (e *Env) WriteFile(inside string, b []byte) error {
	p := e.Path(inside)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(p, b, 0o600)
}

// Daemon is the step of a component that is one long-running process with
// one config file (the kubelet, kube-proxy): render writes the file to
// configPath, and the process runs with flags.
func (e *Env) Daemon(name, configPath string, render func() ([]byte, error), flags func() ([]string, error), ready *supervise.Probe, after []string) ([]supervise.Step, error) {
	cfg, err := render()
	if err != nil {
		return nil, err
	}
	f, err := flags()
	if err != nil {
		return nil, err
	}
	if err := e.WriteFile(configPath, cfg); err != nil {
		return nil, err
	}
	return []supervise.Step{{Name: name, Argv: append([]string{e.Bin(name)}, f...), Ready: ready, After: after}}, nil
}

// Bin is a tool's path; Tools made sure it is there.
func (e *Env) Bin(name string) string { return e.Binaries[name] }

// Tool is a program a component needs.
type Tool struct {
	// Name is how components ask for it (Env.Bin).
	Name string
	// Names are the executables that do, in order of preference (runc,
	// then crun).
	Names []string
	// Built tools come from --bin-dir or the `make k8s` cache before
	// PATH (Kubernetes, etcd, CoreDNS); the others from the system.
	Built bool
	// Build is the script that builds a Built tool on its own
	// (hack/build-crio.sh), for the fix `up` and doctor name when it is
	// missing; "" for `make k8s`.
	Build string
	// Dir tools are a directory holding Names (the CNI plugins); the
	// directories are searched in Dirs.
	Dir  bool
	Dirs []string
	// Beside names the tool this one ships with (ctr with containerd):
	// it is looked for in that one's directory first, so a containerd
	// named with --containerd gets its own ctr and shim.
	Beside string
	// Debian and Fedora are the packages that ship it, for the fixes
	// `up` and doctor print.
	Debian, Fedora string
	// Min is the oldest version usernode configures ("" for any).
	Min string
}

// Binaries are tools' absolute paths by name.
type Binaries map[string]string

// Runtime is a CRI runtime usernode can run.
type Runtime struct {
	Name string
	// Daemon is the runtime's own program, which doctor looks for.
	Daemon Tool
	// Endpoint is its CRI socket, as the kubelet inside the node dials it.
	Endpoint string
	// Probe asks the daemon at bin what it is: its version, and the modes
	// that release runs in. `up` refuses a mode it cannot run before
	// anything starts; doctor and `usernode status` show it.
	Probe func(ctx context.Context, bin string) (RuntimeInfo, error)
	// New returns the component that configures and runs it.
	New func() Component
}

// RuntimeInfo is what a runtime's binary is and can do.
type RuntimeInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Path    string `json:"path,omitempty"`
	// Full: runs with a delegated cgroup v2 tree (limits enforced).
	// Degraded: runs without one (limits dropped).
	Full     bool `json:"full"`
	Degraded bool `json:"degraded"`
	// Why says why a mode is missing, and the fix.
	Why string `json:"why,omitempty"`
}

// Modes is what doctor prints: "full and degraded", "full only".
func (i RuntimeInfo) Modes() string {
	switch {
	case i.Full && i.Degraded:
		return "full and degraded mode"
	case i.Full:
		return "full mode only"
	case i.Degraded:
		return "degraded mode only"
	}
	return "no mode"
}

// CNI is a pod network usernode can set up.
type CNI struct {
	Name string
	New  func() Component
}

// Registry is a list of named values: the runtimes or the CNIs.
type Registry[T interface{ name() string }] []T

func (r Runtime) name() string { return r.Name }
func (c CNI) name() string     { return c.Name }

// Names lists the registered names, sorted.
func (r Registry[T]) Names() []string {
	var out []string
	for _, v := range r {
		out = append(out, v.name())
	}
	sort.Strings(out)
	return out
}

// Lookup finds name, or says which names there are.
func (r Registry[T]) Lookup(kind, name string) (T, error) {
	for _, v := range r {
		if v.name() == name {
			return v, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("unknown %s %q: known are %s", kind, name, strings.Join(r.Names(), ", "))
}
