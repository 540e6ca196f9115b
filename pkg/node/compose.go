package node

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/images"
	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/cni"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/containerd"
	"github.com/usernode/usernode/pkg/node/controlplane"
	"github.com/usernode/usernode/pkg/node/coredns"
	"github.com/usernode/usernode/pkg/node/crio"
	"github.com/usernode/usernode/pkg/node/flannel"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/kubeproxy"
	"github.com/usernode/usernode/pkg/node/metricsserver"
	"github.com/usernode/usernode/pkg/node/pki"
)

// Runtimes are the CRI runtimes a node can run. Adding one is a package
// with its component and one line here.
var Runtimes = component.Registry[component.Runtime]{
	containerd.CRI,
	crio.CRI,
}

// CNIs are the pod networks a node can have. Adding one is a package with
// its component and one line here.
var CNIs = component.Registry[component.CNI]{
	cni.Bridge,
	flannel.CNI,
}

// Components are node n's parts: the runtime (the images go into it), the
// control plane and the cluster's DNS on a control-plane node, then the
// kubelet, the CNI (which waits for the pod CIDR the controller-manager
// gives the kubelet's Node), kube-proxy, and metrics-server when the
// control plane has --metrics. This is the order of the plan and of
// `usernode status`; when each step starts is what its After says: the
// runtime and etcd at once, then everything that needs only
// kube-apiserver together once it is ready.
func Components(n *cluster.Node) ([]component.Component, component.Runtime, error) {
	rt, err := Runtimes.Lookup("container runtime", n.CRI)
	if err != nil {
		return nil, rt, err
	}
	network, err := CNIs.Lookup("CNI", n.CNI)
	if err != nil {
		return nil, rt, err
	}
	comps := []component.Component{rt.New()}
	if n.Role == cluster.ControlPlane {
		comps = append(comps, controlplane.Component{}, coredns.Component{})
	}
	comps = append(comps, kubelet.Component{}, network.New(), kubeproxy.Component{})
	// Last: kube-apiserver reaches it through its Service, which
	// kube-proxy programs, and it scrapes the kubelet.
	if n.Role == cluster.ControlPlane {
		if n.Metrics {
			comps = append(comps, metricsserver.Component{})
		} else {
			comps = append(comps, metricsserver.Off{})
		}
	}
	return comps, rt, nil
}

// Tools are what comps need, each once.
func Tools(comps []component.Component) []component.Tool {
	var out []component.Tool
	seen := map[string]bool{}
	for _, c := range comps {
		for _, t := range c.Tools() {
			if !seen[t.Name] {
				seen[t.Name] = true
				out = append(out, t)
			}
		}
	}
	return out
}

// Layout inside the node. /var/lib persists across runs; /etc and /run are
// made afresh by each `up`.
const (
	DataDir   = "/var/lib/usernode"
	PKIDir    = pki.DefaultDir
	ImageDir  = DataDir + "/images"
	ConfigDir = kubeconfig.DefaultDir
	LogDir    = "/var/log/usernode"
)

// BusyboxRef is the small userland image every node has, for tests and
// debugging without a registry.
const BusyboxRef = "docker.io/library/busybox:usernode"

// Build is everything that goes into rendering a node, besides the model.
type Build struct {
	Binaries component.Binaries
	Degraded bool
	// Root prefixes every file written (see component.Env.Root).
	Root string
	// Pause is the static binary that becomes the pause image where
	// internal/pause has no program for this architecture.
	Pause string
	// Log gets the warning when it does, and the components' in-process
	// work's lines (component.Env.Log); nil discards them.
	Log *log.Logger
	// API answers the CNI's question; nil uses kube-apiserver through the
	// admin certificate (inside the node).
	API component.API
}

// Plan writes everything the node needs (the PKI, the kubeconfigs, the
// images, each component's files) under b.Root and returns the
// supervisor's steps: the node as its components compose it. `up` runs
// it inside the node, and the benchmark's hard way and the tests outside.
func Plan(cl *cluster.Cluster, b Build) ([]supervise.Step, error) {
	n := cl.Self()
	comps, rt, err := Components(n)
	if err != nil {
		return nil, err
	}
	env := &component.Env{Cluster: cl, Node: n, Binaries: b.Binaries, Degraded: b.Degraded, Root: b.Root,
		PKI: pki.Paths(PKIDir), Kubeconfigs: kubeconfig.Paths(ConfigDir), Runtime: rt, API: b.API, Log: b.Log}
	for _, d := range []string{ConfigDir, ImageDir, LogDir} {
		if err := os.MkdirAll(env.Path(d), 0o700); err != nil {
			return nil, err
		}
	}
	if n.Role == cluster.Worker {
		err = planWorker(env)
	} else {
		err = planControlPlane(env)
	}
	if err != nil {
		return nil, err
	}
	if !images.SmallPause() {
		b.Log.Warnf("no small pause program for %s: each pod's pause process is usernode's own binary (on amd64 that measured 6.8 MB PSS a pod, the small program 8 kB)", runtime.GOARCH)
	}
	if env.Images, err = writeImages(env, b.Pause); err != nil {
		return nil, err
	}
	var steps []supervise.Step
	for _, c := range comps {
		s, err := c.Steps(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name(), err)
		}
		steps = append(steps, s...)
	}
	// A step with a nil After waits for the step before it in this list:
	// a component that names no dependencies starts as it did when the
	// supervisor ran one step at a time.
	if _, err := supervise.Dependencies(steps); err != nil {
		return nil, err
	}
	tuneGo(steps)
	return steps, nil
}

// planControlPlane makes (or keeps) the cluster's PKI and writes each
// component's kubeconfig from it.
func planControlPlane(env *component.Env) error {
	cl, n := env.Cluster, env.Node
	// The host reaches the API at the cluster's endpoint: when that is not
	// loopback, kube-apiserver's certificate must name it too, and the
	// kubelet's its host IP, where kube-apiserver dials it (ExternalIP).
	var sans []string
	var kubeletIPs []netip.Addr
	if !cl.API.Host.IsLoopback() {
		sans = append(sans, cl.API.Host.String())
	}
	if cl.MultiNode() {
		kubeletIPs = append(kubeletIPs, n.HostIP)
	}
	written, err := pki.Ensure(env.Path(PKIDir), pki.Options{NodeName: n.Name, NodeIP: n.IP,
		ServiceCIDR: cl.ServiceCIDR, ClusterDomain: cl.DNSDomain, ExtraAPIServerSANs: sans, ExtraKubeletIPs: kubeletIPs})
	if err != nil {
		return fmt.Errorf("PKI: %w", err)
	}
	if _, err := kubeconfig.WriteComponents(env.Path(ConfigDir), n.Name, cl.NodeAPIServer(n), written); err != nil {
		return fmt.Errorf("kubeconfigs: %w", err)
	}
	if env.API == nil {
		c, err := newAPIClient(cl.NodeAPIServer(n), written)
		if err != nil {
			return err
		}
		// A single node's share of the pod CIDR is known: the whole
		// first one (what the controller-manager would give it).
		if !cl.MultiNode() {
			c.claim = FirstNodeCIDR(cl)
		}
		env.API = c
	}
	return nil
}

// Worker files: the cluster's CA and the bootstrap kubeconfig, which
// `usernode join` writes, and the kubeconfig the kubelet writes once it is
// bootstrapped. All persist across runs.
const (
	BootstrapKubeconfig     = DataDir + "/bootstrap-kubelet.kubeconfig"
	WorkerKubeletKubeconfig = DataDir + "/kubelet.kubeconfig"
)

// planWorker points the worker's components at what `join` left: the
// kubelet bootstraps with the token, and kube-proxy and usernode's own
// requests use the kubelet's client certificate once it has one.
func planWorker(env *component.Env) error {
	cl, n := env.Cluster, env.Node
	ca := env.PKI.CA.Cert
	if _, err := os.Stat(env.Path(ca)); err != nil {
		return fmt.Errorf("this worker has not joined a cluster (%v): run the `usernode join` command that `usernode token create` prints on the control plane", err)
	}
	env.Kubeconfigs.Bootstrap = BootstrapKubeconfig
	env.Kubeconfigs.Kubelet = WorkerKubeletKubeconfig
	kp := kubeconfig.NewFiles(kubeconfig.ContextName(n.Name), cl.NodeAPIServer(n), ca, kubelet.ClientCertCurrent, kubelet.ClientCertCurrent)
	if err := kubeconfig.Write(env.Path(env.Kubeconfigs.KubeProxy), kp); err != nil {
		return err
	}
	if env.API == nil {
		c, err := newAPIClientFiles(cl.NodeAPIServer(n), env.Path(ca), env.Path(kubelet.ClientCertCurrent), env.Path(kubelet.ClientCertCurrent))
		if err != nil {
			return err
		}
		env.API = c
	}
	return nil
}

// writeImages makes the images every node needs (no registry is
// reachable) as OCI archives and returns their paths inside the node.
func writeImages(env *component.Env, pause string) ([]string, error) {
	var out []string
	for _, mk := range []func() (images.Image, error){
		func() (images.Image, error) { return images.Pause(pause) },
		func() (images.Image, error) { return images.Busybox(BusyboxRef) },
	} {
		img, err := mk()
		if err != nil {
			return nil, err
		}
		inside := filepath.Join(ImageDir, strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".tar")
		f, err := os.Create(env.Path(inside))
		if err != nil {
			return nil, err
		}
		err = images.WriteArchive(f, img)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		out = append(out, inside)
	}
	return out, nil
}

// PodCIDR waits until the node's spec.podCIDR is set. With c.claim (a
// single node), it sets it itself once the Node is registered without
// one, instead of waiting for the controller-manager's node-ipam
// controller: that one starts only once the controller-manager has built
// every controller, which on a cold start was the longest wait before the
// node could be Ready (3.8 s of 8.0, docs/benchmarks.md). The controller
// then finds the CIDR set and counts it as taken; had it set one first,
// the patch fails (spec.podCIDR cannot change) and the loop reads its.
func (c *apiClient) PodCIDR(ctx context.Context, node string) (netip.Prefix, error) {
	var last error
	for {
		var n struct {
			Spec struct {
				PodCIDR string `json:"podCIDR"`
			} `json:"spec"`
		}
		if last = c.get(ctx, "/api/v1/nodes/"+node, &n); last == nil && n.Spec.PodCIDR != "" {
			return netip.ParsePrefix(n.Spec.PodCIDR)
		}
		if last == nil && c.claim.IsValid() {
			cidr := c.claim.String()
			patch := map[string]any{"spec": map[string]any{"podCIDR": cidr, "podCIDRs": []string{cidr}}}
			if last = c.send(ctx, http.MethodPatch, "/api/v1/nodes/"+node, patch, nil); last == nil {
				continue // read back what the API now holds
			}
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FixedPodCIDR answers with the first node share of the cluster's pod
// CIDR, which is what the controller-manager gives the first node: for
// renders made before any cluster runs (the benchmark's hard way, tests).
type FixedPodCIDR netip.Prefix

// PodCIDR is the fixed answer.
func (f FixedPodCIDR) PodCIDR(context.Context, string) (netip.Prefix, error) {
	return netip.Prefix(f), nil
}

// AnnotateNode fails: a render made before any cluster runs has no Node
// to annotate, and such renders are single-node.
func (f FixedPodCIDR) AnnotateNode(_ context.Context, node string, _ map[string]string) error {
	return fmt.Errorf("node %s: no cluster runs behind a fixed render", node)
}

// Apply applies nothing: a render made before any cluster runs leaves
// its manifests (bootstrap.yaml, coredns.yaml) to whoever runs it, as the
// benchmark's hard way does with kubectl.
func (f FixedPodCIDR) Apply(context.Context, []byte, string) error { return nil }

// FirstNodeCIDR is the share of the pod CIDR the first node gets.
func FirstNodeCIDR(cl *cluster.Cluster) netip.Prefix {
	return netip.PrefixFrom(cl.PodCIDR.Addr(), cl.NodeCIDRMaskSize)
}
