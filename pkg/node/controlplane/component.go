package controlplane

import (
	"context"
	"net/netip"
	"os"
	"time"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
)

// BootstrapPath is where the objects applied once kube-apiserver is ready
// are written.
const BootstrapPath = "/etc/usernode/bootstrap.yaml"

// guardOff deletes the volume guard's bindings: off is no binding, also
// when an earlier run had one.
func guardOff(env *component.Env) supervise.Step {
	argv := []string{env.Bin("kubectl"), "--kubeconfig", env.Kubeconfigs.Admin, "delete", "--ignore-not-found", "validatingadmissionpolicybinding"}
	// After bootstrap-rbac, which applies the guard's other objects.
	return supervise.Step{Name: "volume-guard-off", Oneshot: true, Argv: append(argv, VolumeGuardBindings...), After: []string{"bootstrap-rbac"}}
}

// Component runs etcd and the control plane: kube-apiserver (then the
// bootstrap objects), kube-controller-manager and kube-scheduler.
type Component struct{}

// Name is the component's.
func (Component) Name() string { return "control-plane" }

// Tools are the control plane's binaries, and kubectl: the volume guard's
// off step runs it, and it is the user's client (the bootstrap objects are
// applied in-process, env.API).
func (Component) Tools() []component.Tool {
	var t []component.Tool
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		t = append(t, component.Tool{Name: n, Names: []string{n}, Built: true})
	}
	return t
}

// OptionsFor is the control plane of env's cluster.
func OptionsFor(env *component.Env) Options {
	c := env.Cluster
	kcs := env.Kubeconfigs
	return Options{Version: c.KubernetesVersion, ClusterName: c.Name, NodeName: env.Node.Name, NodeIP: env.Node.IP,
		PKI: env.PKI, Kubeconfigs: &kcs, ServiceCIDR: c.ServiceCIDR, ClusterCIDR: c.PodCIDR,
		NodeCIDRMaskSize: c.NodeCIDRMaskSize, ClusterDomain: c.DNSDomain, AdvertiseIP: advertiseIP(c)}
}

func advertiseIP(c *cluster.Cluster) netip.Addr {
	if c.MultiNode() {
		return c.API.Host
	}
	return netip.Addr{}
}

// Steps writes the bootstrap objects and returns the control plane's
// steps, each ready when its health endpoint answers. etcd waits for
// nothing, so it starts beside the runtime; everything else waits for
// kube-apiserver only, and starts at once when it is ready.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	o := OptionsFor(env)
	etcd, err := EtcdFlags(o)
	if err != nil {
		return nil, err
	}
	api, err := APIServerFlags(o)
	if err != nil {
		return nil, err
	}
	cm, err := ControllerManagerFlags(o)
	if err != nil {
		return nil, err
	}
	sched, err := SchedulerFlags(o)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(env.Path(env.PKI.CA.Cert))
	if err != nil {
		return nil, err
	}
	boot, err := RenderBootstrap(ClusterInfo{Server: env.Cluster.API.URL(), CA: ca, Shared: env.Cluster.Shared()}, env.Cluster.VolumeGuard)
	if err != nil {
		return nil, err
	}
	if err := env.WriteFile(BootstrapPath, boot); err != nil {
		return nil, err
	}
	ps := env.PKI
	steps := []supervise.Step{
		{Name: "etcd", Argv: append([]string{env.Bin("etcd")}, etcd...), After: []string{},
			Ready: &supervise.Probe{URL: EtcdClientURL + "/health", CA: ps.EtcdCA.Cert, Cert: ps.APIServerEtcdClient.Cert, Key: ps.APIServerEtcdClient.Key}},
		// Its first start bootstraps RBAC and the priority classes: 60 s
		// under the VM tier's TCG on an idle host, over 2 minutes on a busy
		// one. `up`'s own --timeout still bounds the whole start.
		{Name: component.APIServerStep, Argv: append([]string{env.Bin("kube-apiserver")}, api...), ReadyTimeout: 4 * time.Minute, After: []string{"etcd"},
			Ready: &supervise.Probe{URL: env.Cluster.NodeAPIServer(env.Node) + APIServerReadyzPath, CA: ps.CA.Cert, Cert: ps.Admin.Cert, Key: ps.Admin.Key}},
		// In-process (env.API): kubectl's apply took 1.0-1.1 s at the end
		// of the start, most of it starting kubectl and its discovery.
		{Name: "bootstrap-rbac", Oneshot: true, After: []string{component.APIServerStep},
			Run: func(ctx context.Context) error { return env.API.Apply(ctx, boot, component.FieldManager) }},
	}
	if env.Cluster.VolumeGuard == "off" {
		steps = append(steps, guardOff(env))
	}
	return append(steps, []supervise.Step{
		{Name: "kube-controller-manager", Argv: append([]string{env.Bin("kube-controller-manager")}, cm...), After: []string{component.APIServerStep},
			Ready: &supervise.Probe{URL: ControllerManagerHealthURL, Insecure: true}},
		{Name: "kube-scheduler", Argv: append([]string{env.Bin("kube-scheduler")}, sched...), After: []string{component.APIServerStep},
			Ready: &supervise.Probe{URL: SchedulerHealthURL, Insecure: true}},
	}...), nil
}
