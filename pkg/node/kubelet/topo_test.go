package kubelet

import "github.com/usernode/usernode/pkg/cluster"

// topo fills what o leaves of the topology from the default cluster model,
// as the component does from the model `up` resolves.
func topo(o Options) Options {
	cl := cluster.DefaultCluster()
	if !o.NodeIP.IsValid() {
		o.NodeIP = cl.Self().IP
	}
	if !o.ClusterDNS.IsValid() {
		o.ClusterDNS = cl.DNSIP
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = cl.DNSDomain
	}
	if o.ContainerRuntimeEndpoint == "" {
		o.ContainerRuntimeEndpoint = "unix:///run/containerd/containerd.sock"
	}
	return o
}
