package metricsserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/controlplane"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
)

// Component is metrics-server on a control plane started with --metrics.
type Component struct{}

// Name is the component's.
func (Component) Name() string { return "metrics-server" }

// Tools are metrics-server (hack/build-metrics-server.sh, which `make k8s`
// runs) and kubectl, which applies its objects.
func (Component) Tools() []component.Tool {
	return []component.Tool{
		{Name: "metrics-server", Names: []string{"metrics-server"}, Built: true, Build: "hack/build-metrics-server.sh"},
		{Name: "kubectl", Names: []string{"kubectl"}, Built: true},
	}
}

// OptionsFor is metrics-server on env's node; caPEM is the cluster CA.
func OptionsFor(env *component.Env, caPEM []byte) Options {
	return Options{NodeName: env.Node.Name, NodeIP: env.Node.IP,
		KubeletAddressTypes: controlplane.KubeletAddressTypes(env.Cluster.MultiNode()),
		PKI:                 env.PKI, CAPEM: caPEM,
		Kubeconfig: filepath.Join(kubeconfig.DefaultDir, KubeconfigName),
		Binary:     env.Bin("metrics-server"), Kubectl: env.Bin("kubectl"),
		AdminKubeconfig: env.Kubeconfigs.Admin, Dir: kubeconfig.DefaultDir}
}

// Marker is in the node's persistent /var/lib: it records that an `up`
// registered the APIService, which an `up` without --metrics then removes,
// since an APIService whose server is gone makes API discovery fail
// (kubectl api-resources and every client that lists groups report
// metrics.k8s.io/v1beta1 unavailable).
const Marker = "/var/lib/usernode/metrics-server.registered"

// Steps writes metrics-server's kubeconfig (its client certificate from
// the PKI the control plane made) and its objects; see Steps.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	caPEM, err := os.ReadFile(env.Path(env.PKI.CA.Cert))
	if err != nil {
		return nil, fmt.Errorf("the cluster CA, the APIService's caBundle: %w", err)
	}
	o := OptionsFor(env, caPEM)
	kc := kubeconfig.NewFiles(kubeconfig.ContextName(env.Node.Name), env.Cluster.NodeAPIServer(env.Node),
		env.PKI.CA.Cert, env.PKI.MetricsServerClient.Cert, env.PKI.MetricsServerClient.Key)
	if err := kubeconfig.Write(env.Path(o.Kubeconfig), kc); err != nil {
		return nil, err
	}
	if err := env.WriteFile(Marker, nil); err != nil {
		return nil, err
	}
	return Steps(o, env.WriteFile)
}

// Off is a control plane without --metrics: it unregisters what an
// earlier `up --metrics` left in the API, once.
type Off struct{}

// Name is the component's.
func (Off) Name() string { return "metrics-server-off" }

// Tools is kubectl, which deletes the objects.
func (Off) Tools() []component.Tool {
	return []component.Tool{{Name: "kubectl", Names: []string{"kubectl"}, Built: true}}
}

// Steps are none unless Marker is there; then a delete of the APIService,
// the Service and its EndpointSlice (the RBAC is left: it grants nothing to anyone else),
// and the marker's removal once that worked.
func (Off) Steps(env *component.Env) ([]supervise.Step, error) {
	marker := env.Path(Marker)
	if _, err := os.Stat(marker); err != nil {
		return nil, nil
	}
	return []supervise.Step{
		{Name: "metrics-server-unregister", Oneshot: true, Argv: []string{env.Bin("kubectl"), "--kubeconfig", env.Kubeconfigs.Admin,
			"delete", "--ignore-not-found", "apiservice/" + APIServiceName, "-n", Namespace, "service/" + ServiceName,
			"endpointslice.discovery.k8s.io/" + ServiceName},
			Env: []string{"KUBERC=off"}},
		{Name: "metrics-server-unregistered", Oneshot: true, Run: func(context.Context) error { return os.Remove(marker) }},
	}, nil
}
