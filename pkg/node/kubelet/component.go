package kubelet

import (
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
)

// Component runs the kubelet.
type Component struct{}

// Name is the supervisor's name for it.
func (Component) Name() string { return "kubelet" }

// Tools is the kubelet.
func (Component) Tools() []component.Tool {
	return []component.Tool{{Name: "kubelet", Names: []string{"kubelet"}, Built: true}}
}

// OptionsFor is the kubelet of env's node.
func OptionsFor(env *component.Env) Options {
	return Options{Version: env.Cluster.KubernetesVersion, NodeName: env.Node.Name, NodeIP: env.Node.IP,
		Degraded: env.Degraded, ClusterDNS: env.Cluster.DNSIP, ClusterDomain: env.Cluster.DNSDomain,
		ContainerRuntimeEndpoint: env.Runtime.Endpoint, ClientCAFile: env.PKI.CA.Cert,
		TLSCertFile: env.PKI.Kubelet.Cert, TLSPrivateKeyFile: env.PKI.Kubelet.Key, KubeconfigPath: env.Kubeconfigs.Kubelet}
}

// Steps writes kubelet.yaml and starts the kubelet.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	o := OptionsFor(env)
	return env.Daemon("kubelet", DefaultConfigPath, func() ([]byte, error) { return Render(o) },
		func() ([]string, error) { return Flags(o) }, &supervise.Probe{URL: "http://127.0.0.1:10248/healthz"})
}
