package coredns

import "github.com/usernode/usernode/pkg/node/internal/nodetest"

// topo fills what o leaves of the topology from the default model, as the
// component does from the model `up` resolves.
func topo(o Options) Options {
	return nodetest.Fill(o, OptionsFor(nodetest.Env()), "NodeIP", "ServiceIP", "ClusterDomain")
}
