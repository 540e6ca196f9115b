package metricsserver

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

func opts() Options {
	return Options{NodeName: "dev", NodeIP: netip.MustParseAddr("10.0.2.100"), KubeletAddressTypes: "InternalIP,Hostname",
		PKI: pki.Paths("/pki"), CAPEM: []byte("CA PEM"), Kubeconfig: "/etc/usernode/metrics-server.kubeconfig"}
}

// The objects a user's `kubectl top` goes through: the APIService to the
// Service, the Service's endpoints to where metrics-server listens, and
// the RBAC the kubelet and kube-apiserver check.
func TestObjects(t *testing.T) {
	o, err := Objects(opts())
	if err != nil {
		t.Fatal(err)
	}
	a := o.APIService.Spec
	if o.APIService.Name != "v1beta1.metrics.k8s.io" || a.Group != "metrics.k8s.io" || a.Version != "v1beta1" ||
		a.Service != (ServiceReference{Namespace: "kube-system", Name: "metrics-server", Port: 443}) || string(a.CABundle) != "CA PEM" {
		t.Errorf("APIService %+v", o.APIService)
	}
	if p := o.Service.Spec.Ports; len(p) != 1 || p[0].Port != 443 || p[0].TargetPort.IntValue() != 4443 || o.Service.Spec.Selector != nil {
		t.Errorf("Service ports %+v selector %v", p, o.Service.Spec.Selector)
	}
	es := o.EndpointSlice
	if es.Endpoints[0].Addresses[0] != "10.0.2.100" || *es.Ports[0].Port != 4443 || *es.Ports[0].Name != "https" ||
		es.Labels["kubernetes.io/service-name"] != "metrics-server" {
		t.Errorf("EndpointSlice %+v", es)
	}

	var scrape, reader bool
	for _, r := range o.ClusterRoles {
		for _, rule := range r.Rules {
			if r.Name == "system:metrics-server" && slices.Contains(rule.Resources, "nodes/metrics") && slices.Contains(rule.Resources, "nodes/stats") && slices.Equal(rule.Verbs, []string{"get"}) {
				scrape = true
			}
			if r.Name == "system:aggregated-metrics-reader" && slices.Contains(rule.APIGroups, "metrics.k8s.io") && r.Labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true" {
				reader = true
			}
		}
	}
	if !scrape || !reader {
		t.Errorf("roles: nodes/metrics+stats get %v, aggregated reader %v", scrape, reader)
	}
	bound := map[string]bool{}
	for _, b := range o.ClusterRoleBindings {
		if b.Subjects[0].Kind == "User" && b.Subjects[0].Name == pki.MetricsServerUser {
			bound[b.RoleRef.Name] = true
		}
	}
	if !bound["system:metrics-server"] || !bound["system:auth-delegator"] {
		t.Errorf("bindings to %s: %v", pki.MetricsServerUser, bound)
	}
	if o.AuthReaderBinding.Namespace != "kube-system" || o.AuthReaderBinding.RoleRef.Name != "extension-apiserver-authentication-reader" {
		t.Errorf("auth reader binding %+v", o.AuthReaderBinding)
	}
}

func TestFlags(t *testing.T) {
	o := opts()
	o.KubeletAddressTypes = "ExternalIP,InternalIP,Hostname"
	f, err := Flags(o)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Join(f, " ")
	for _, want := range []string{"--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname", "--kubelet-certificate-authority=/pki/ca.crt",
		"--tls-cert-file=/pki/metrics-server.crt", "--metric-resolution=15s", "--kubelet-use-node-status-port"} {
		if !slices.Contains(f, want) {
			t.Errorf("flags lack %s: %s", want, s)
		}
	}
	if strings.Contains(s, "insecure") {
		t.Errorf("an insecure flag: %s", s)
	}
}

func TestBadOptions(t *testing.T) {
	for name, mod := range map[string]func(*Options){
		"no node IP":       func(o *Options) { o.NodeIP = netip.Addr{} },
		"no CA":            func(o *Options) { o.CAPEM = nil },
		"resolution < 10s": func(o *Options) { o.Resolution = 5 * time.Second },
	} {
		o := opts()
		mod(&o)
		if _, err := Flags(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Steps(opts(), nil); err == nil || !strings.Contains(err.Error(), "Binary") {
		t.Errorf("Steps without binaries: %v", err)
	}
}

// An `up` without --metrics after one with it unregisters the APIService
// once, and then runs nothing.
func TestOffUnregistersOnce(t *testing.T) {
	root := t.TempDir()
	env := &component.Env{Root: root, Binaries: component.Binaries{"kubectl": "/bin/kubectl"},
		Kubeconfigs: kubeconfig.Paths("/etc/usernode")}
	if steps, err := (Off{}).Steps(env); err != nil || len(steps) != 0 {
		t.Fatalf("never registered: steps %v, %v", steps, err)
	}
	if err := env.WriteFile(Marker, nil); err != nil {
		t.Fatal(err)
	}
	steps, err := (Off{}).Steps(env)
	if err != nil || len(steps) != 2 {
		t.Fatalf("registered before: steps %v, %v", steps, err)
	}
	if argv := strings.Join(steps[0].Argv, " "); !strings.Contains(argv, "delete --ignore-not-found apiservice/v1beta1.metrics.k8s.io") {
		t.Errorf("unregister: %s", argv)
	}
	if err := steps[1].Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if steps, _ := (Off{}).Steps(env); len(steps) != 0 {
		t.Errorf("after unregistering: steps %v", steps)
	}
}
