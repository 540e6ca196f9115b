package kubelet

import (
	"context"
	"os"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
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

// OptionsFor is the kubelet of env's node. A worker has no pair from the
// cluster's CA on disk: it bootstraps (env.Kubeconfigs.Bootstrap holds
// the join's token).
func OptionsFor(env *component.Env) Options {
	o := Options{Version: env.Cluster.KubernetesVersion, NodeName: env.Node.Name, NodeIP: env.Node.IP,
		Degraded: env.Degraded, ClusterDNS: env.Cluster.DNSIP, ClusterDomain: env.Cluster.DNSDomain,
		ContainerRuntimeEndpoint: env.Runtime.Endpoint, ClientCAFile: env.PKI.CA.Cert,
		TLSCertFile: env.PKI.Kubelet.Cert, TLSPrivateKeyFile: env.PKI.Kubelet.Key, KubeconfigPath: env.Kubeconfigs.Kubelet,
		ExternalCloudProvider: env.Cluster.MultiNode(), OOMScoreAdj: InheritedOOMScoreAdj(os.ReadFile)}
	if env.Node.Role == cluster.Worker {
		o.BootstrapKubeconfig = env.Kubeconfigs.Bootstrap
		o.TLSCertFile, o.TLSPrivateKeyFile = "", ""
	}
	return o
}

// Steps writes kubelet.yaml and starts the kubelet once the runtime serves
// with the images in it and, on a control plane, kube-apiserver is ready:
// started before it, the kubelet's node registration backs off between
// its tries and the Node registers later than it could. A worker's API is
// on another node, which is up before `join`.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	o := OptionsFor(env)
	after := append(env.AfterRuntime(), env.OnControlPlane(component.APIServerStep)...)
	steps, err := env.Daemon(component.KubeletStep, DefaultConfigPath, func() ([]byte, error) { return Render(o) },
		func() ([]string, error) { return Flags(o) }, &supervise.Probe{URL: "http://127.0.0.1:10248/healthz"}, after)
	if err != nil || !env.Cluster.MultiNode() {
		return steps, err
	}
	// The node says which host it is on; the control plane makes that its
	// ExternalIP (o.ExternalCloudProvider).
	name, ann := env.Node.Name, map[string]string{cluster.HostIPAnnotation: env.Node.HostIP.String()}
	return append(steps, supervise.Step{Name: "node-host-ip", Oneshot: true, After: []string{component.KubeletStep},
		Run: func(ctx context.Context) error { return env.API.AnnotateNode(ctx, name, ann) }}), nil
}
