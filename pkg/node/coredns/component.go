package coredns

import (
	"net/netip"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
)

// Component is the cluster's DNS.
type Component struct{}

// Name is the component's.
func (Component) Name() string { return "coredns" }

// Tools is CoreDNS (its objects are applied in-process: env.API).
func (Component) Tools() []component.Tool {
	return []component.Tool{{Name: "coredns", Names: []string{"coredns"}, Built: true}}
}

// OptionsFor is CoreDNS on env's node, serving env's cluster.
func OptionsFor(env *component.Env) Options {
	o := Options{NodeName: env.Node.Name, NodeIP: env.Node.IP, ServiceIP: env.Cluster.DNSIP,
		ClusterDomain: env.Cluster.DNSDomain, Kubeconfig: env.Kubeconfigs.CoreDNS,
		Binary: env.Bin("coredns"), Dir: kubeconfig.DefaultDir,
		Endpoint: Endpoint(env.Cluster, env.Node)}
	if env.API != nil {
		o.Apply = env.API.Apply
	}
	return o
}

// Endpoint is where a multi-node cluster's pods send DNS queries: the
// control plane's host IP at its forwarded DNS port. Zero for a single
// node, whose pods reach CoreDNS at the node's own address.
func Endpoint(cl *cluster.Cluster, n *cluster.Node) netip.AddrPort {
	if !cl.MultiNode() || n.DNSPort == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(n.HostIP, n.DNSPort)
}

// Steps writes the Corefile and CoreDNS's objects; see Steps.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	return steps(OptionsFor(env), env.WriteFile)
}
