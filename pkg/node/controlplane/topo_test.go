package controlplane

import "github.com/usernode/usernode/pkg/cluster"

// topo fills what o leaves of the topology from the default cluster model,
// as the component does from the model `up` resolves.
func topo(o Options) Options {
	cl := cluster.DefaultCluster()
	if o.ClusterName == "" {
		o.ClusterName = cl.Name
	}
	if !o.NodeIP.IsValid() {
		o.NodeIP = cl.Self().IP
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = cl.ServiceCIDR
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = cl.PodCIDR
	}
	if o.NodeCIDRMaskSize == 0 {
		o.NodeCIDRMaskSize = cl.NodeCIDRMaskSize
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = cl.DNSDomain
	}
	return o
}
