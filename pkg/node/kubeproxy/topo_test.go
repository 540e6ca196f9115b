package kubeproxy

import "github.com/usernode/usernode/pkg/cluster"

// topo fills what o leaves of the topology from the default cluster model,
// as the component does from the model `up` resolves.
func topo(o Options) Options {
	cl := cluster.DefaultCluster()
	if !o.NodeIP.IsValid() {
		o.NodeIP = cl.Self().IP
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = cl.PodCIDR
	}
	return o
}
