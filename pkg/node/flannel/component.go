package flannel

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/cni"
	"github.com/usernode/usernode/pkg/node/component"
)

// CNI registers Flannel as a pod network.
var CNI = component.CNI{Name: "flannel", New: func() component.Component { return Component{} }}

// Tool is flanneld, built like Kubernetes (hack/build-flannel.sh).
var Tool = component.Tool{Name: "flanneld", Names: []string{"flanneld"}, Built: true}

// Component runs flanneld and writes the CNI config for its lease.
type Component struct{}

// Name is the supervisor's name for it.
func (Component) Name() string { return "flannel" }

// Tools are flanneld, the CNI plugins the bridge network uses and
// iptables, which flanneld runs for its masquerade and forward rules.
func (Component) Tools() []component.Tool {
	return []component.Tool{Tool, cni.PluginsTool,
		{Name: "iptables", Names: []string{"iptables"}, Debian: "iptables", Fedora: "iptables"}}
}

// Steps are three, one after the other, the first as soon as the pod
// CIDR can be read (component.Env.AfterPodCIDR): once the node has
// its pod CIDR, say where peers reach it and set the namespace up for
// VXLAN; run flanneld; once it has its lease, write the bridge network for
// exactly that subnet.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	n, cl := env.Node, env.Cluster
	conf, err := Config(cl.PodCIDR, n.UplinkMTU, cl.VXLANPort)
	if err != nil {
		return nil, err
	}
	b, err := Render(conf)
	if err != nil {
		return nil, err
	}
	if err := env.WriteFile(NetConfPath, b); err != nil {
		return nil, err
	}
	prepare := func(ctx context.Context) error {
		cidr, err := env.API.PodCIDR(ctx, n.Name)
		if err != nil {
			return fmt.Errorf("waiting for the node's pod CIDR: %w", err)
		}
		if !cl.PodCIDR.Contains(cidr.Addr()) {
			return fmt.Errorf("the node's pod CIDR %s is outside the cluster's %s: the node object predates a change of cluster.podCIDR", cidr, cl.PodCIDR)
		}
		if err := env.API.AnnotateNode(ctx, n.Name, map[string]string{PublicIPOverwrite: n.HostIP.String()}); err != nil {
			return err
		}
		return SetSysctls("/proc/sys")
	}
	writeCNI := func(ctx context.Context) error {
		lease, err := waitLease(ctx, env.Path(SubnetFile))
		if err != nil {
			return err
		}
		// For the node's lifetime, not this step's: the step's ctx ends
		// with it, the watch must outlive flanneld's remakes of the device.
		// flanneld's own remake (after the network helper's restart took
		// the lower device) is the bare device: the routes, neighbours and
		// FDB entries of the other nodes' subnets stay gone (seen in
		// TestJoin; v0.28.10's reCreateVxlan makes only the device). A
		// restarted flanneld finds the device and programs every lease
		// again, with the MAC its Node annotation keeps.
		wctx := context.WithoutCancel(ctx)
		remade := func() {
			if err := supervise.Restart(wctx, "flanneld", Device+" was made again without the other nodes' routes"); err != nil {
				env.Log.Warnf("%v", err)
			}
		}
		if err := KeepTxChecksumOff(wctx, Device, env.Log.Infof, remade); err != nil {
			return err
		}
		_, err = cni.Install(env.Path(cni.DefaultConfDir), cni.Options{Subnet: lease.Subnet.Masked(), MTU: lease.MTU, NoMasq: true})
		return err
	}
	return []supervise.Step{
		{Name: "flannel-prepare", Oneshot: true, Run: prepare, After: env.AfterPodCIDR()},
		{Name: "flanneld", After: []string{"flannel-prepare"}, Env: []string{"NODE_NAME=" + n.Name}, Argv: []string{env.Bin("flanneld"),
			"--kube-subnet-mgr",
			// The kubelet's identity: the Node authorizer lets it read the
			// nodes and patch its own Node's status, all flanneld does.
			"--kubeconfig-file=" + env.Kubeconfigs.Kubelet,
			// The node's own address picks its uplink (tap0 or eth0).
			"--iface=" + n.IP.String(),
			"--ip-masq",
			"--net-config-path=" + NetConfPath,
			"--subnet-file=" + SubnetFile,
		}},
		{Name: component.CNIStep, Oneshot: true, Run: writeCNI, After: []string{"flanneld"}},
	}, nil
}

func waitLease(ctx context.Context, path string) (Lease, error) {
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return ParseLease(b)
		}
		select {
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("flanneld wrote no lease to %s: %w (see `usernode logs flanneld`)", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
