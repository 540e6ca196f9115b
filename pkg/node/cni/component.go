package cni

import (
	"context"
	"fmt"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
)

// Bridge registers the bridge CNI: one Linux bridge in the node's network
// namespace, pods addressed from the node's share of the pod CIDR.
var Bridge = component.CNI{Name: "bridge", New: func() component.Component { return BridgeComponent{} }}

// PluginDirs are where distributions put the CNI plugins.
var PluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"}

// PluginsTool is the directory of the plugins the bridge network uses
// (containerd adds loopback itself, but looks for it there too).
var PluginsTool = component.Tool{Name: "cni-plugins", Dir: true, Dirs: PluginDirs,
	Names: []string{"bridge", "host-local", "loopback", "portmap"}, Debian: "containernetworking-plugins", Fedora: "containernetworking-plugins"}

// BridgeComponent writes the bridge network's config once the node has its
// pod CIDR.
type BridgeComponent struct{}

// Name is the supervisor's name for it.
func (BridgeComponent) Name() string { return "cni" }

// Tools are the plugins.
func (BridgeComponent) Tools() []component.Tool { return []component.Tool{PluginsTool} }

// Steps waits for the controller-manager to allocate the node's pod CIDR
// (spec.podCIDR) and writes the bridge config for exactly that range:
// host-local then hands out the addresses the cluster routes to this node,
// which is what keeps two nodes from ever giving a pod the same IP. Until
// the file exists the runtime reports the network not ready, and so does
// the node (see component.Env.AfterPodCIDR for when it starts).
func (BridgeComponent) Steps(env *component.Env) ([]supervise.Step, error) {
	write := func(ctx context.Context) error {
		cidr, err := env.API.PodCIDR(ctx, env.Node.Name)
		if err != nil {
			return fmt.Errorf("waiting for the node's pod CIDR: %w", err)
		}
		if !env.Cluster.PodCIDR.Contains(cidr.Addr()) {
			return fmt.Errorf("the node's pod CIDR %s is outside the cluster's %s: the node object predates a change of cluster.podCIDR; `usernode down --purge` starts a fresh cluster", cidr, env.Cluster.PodCIDR)
		}
		_, err = Install(env.Path(DefaultConfDir), Options{Subnet: cidr})
		return err
	}
	return []supervise.Step{{Name: component.CNIStep, Oneshot: true, Run: write, After: env.AfterPodCIDR()}}, nil
}
