package pki

import "github.com/usernode/usernode/pkg/cluster"

// topo fills what o leaves of the topology from the default model, as
// `up` does from the model it resolves.
func topo(o Options) Options {
	cl := cluster.DefaultCluster()
	if !o.NodeIP.IsValid() {
		o.NodeIP = cl.Self().IP
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = cl.ServiceCIDR
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = cl.DNSDomain
	}
	return o
}
