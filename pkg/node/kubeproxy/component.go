package kubeproxy

import (
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
)

// IPTables programs kube-proxy's (and portmap's) rules in the node.
var IPTables = component.Tool{Name: "iptables", Names: []string{"iptables"}, Debian: "iptables", Fedora: "iptables-nft"}

// Component runs kube-proxy.
type Component struct{}

// Name is the supervisor's name for it.
func (Component) Name() string { return "kube-proxy" }

// Tools are kube-proxy and the iptables it programs rules with.
func (Component) Tools() []component.Tool {
	return []component.Tool{
		{Name: "kube-proxy", Names: []string{"kube-proxy"}, Built: true},
		IPTables,
	}
}

// OptionsFor is kube-proxy on env's node.
func OptionsFor(env *component.Env) Options {
	return Options{Version: env.Cluster.KubernetesVersion, NodeName: env.Node.Name, NodeIP: env.Node.IP,
		ClusterCIDR: env.Cluster.PodCIDR, KubeconfigPath: env.Kubeconfigs.KubeProxy}
}

// Steps writes kube-proxy.yaml and starts kube-proxy. On a control plane
// it waits for kube-apiserver and CoreDNS's objects, so that its first
// sync already has the cluster DNS Service. A worker's kube-proxy
// authenticates with the kubelet's client certificate, which exists only
// once the kubelet has bootstrapped: it waits for the CNI step, which
// waits for the Node the kubelet registers with it.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	o := OptionsFor(env)
	after := env.OnControlPlane(component.APIServerStep, component.DNSObjectsStep)
	if len(after) == 0 {
		after = []string{component.CNIStep}
	}
	return env.Daemon("kube-proxy", DefaultConfigPath, func() ([]byte, error) { return Render(o) },
		func() ([]string, error) { return Flags(o) }, &supervise.Probe{URL: "http://" + HealthzBindAddress + "/healthz"}, after)
}
