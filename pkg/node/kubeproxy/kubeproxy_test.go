package kubeproxy

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/node/internal/yamltest"
	"k8s.io/apimachinery/pkg/api/equality"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
)

func render(t *testing.T, o Options) (*kubeproxyv1alpha1.KubeProxyConfiguration, map[string]any) {
	t.Helper()
	b, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return yamltest.Strict[kubeproxyv1alpha1.KubeProxyConfiguration](t, b)
}

var get = yamltest.Get

func TestSeedSettings(t *testing.T) {
	for _, v := range []string{"v1.30.0", "v1.34.2", "v1.37.2"} {
		c, raw := render(t, topo(Options{NodeName: "dev", Version: v}))
		for path, want := range map[string]any{
			"apiVersion":                      "kubeproxy.config.k8s.io/v1alpha1",
			"kind":                            "KubeProxyConfiguration",
			"mode":                            "iptables",
			"conntrack.maxPerCore":            float64(0),
			"conntrack.tcpEstablishedTimeout": "0s",
			"conntrack.tcpCloseWaitTimeout":   "0s",
			"clusterCIDR":                     "10.88.0.0/16",
			"clientConnection.kubeconfig":     "/etc/usernode/kube-proxy.kubeconfig",
			"metricsBindAddress":              "127.0.0.1:10249",
			"hostnameOverride":                "dev",
			"nodePortAddresses":               []any{"10.0.2.100/32", "127.0.0.1/32"},
		} {
			if got, ok := get(raw, path); !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s = %#v (present %v), want %#v", v, path, got, ok, want)
			}
		}
		// Zero, not absent: absent means "set the default", which a user
		// namespace refuses.
		if c.Conntrack.MaxPerCore == nil || *c.Conntrack.MaxPerCore != 0 ||
			c.Conntrack.TCPEstablishedTimeout == nil || c.Conntrack.TCPEstablishedTimeout.Duration != 0 ||
			c.Conntrack.TCPCloseWaitTimeout == nil || c.Conntrack.TCPCloseWaitTimeout.Duration != 0 {
			t.Errorf("%s: conntrack = %+v", v, c.Conntrack)
		}
		if len(c.FeatureGates) != 0 {
			t.Errorf("%s: feature gates %v; kube-proxy needs none", v, c.FeatureGates)
		}
	}
}

func TestOptions(t *testing.T) {
	c, _ := render(t, topo(Options{NodeName: "dev", NodeIP: netip.MustParseAddr("10.0.2.15"), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")}))
	if !slices.Equal(c.NodePortAddresses, []string{"10.0.2.15/32", "127.0.0.1/32"}) || c.ClusterCIDR != "10.244.0.0/16" {
		t.Errorf("options not used: %v %v", c.NodePortAddresses, c.ClusterCIDR)
	}
	f, err := Flags(topo(Options{NodeName: "dev"}))
	if err != nil || !slices.Equal(f, []string{"--config=/etc/usernode/kube-proxy.yaml"}) {
		t.Errorf("Flags = %v, %v", f, err)
	}
}

func TestOldVersionRejected(t *testing.T) {
	_, err := Render(topo(Options{NodeName: "dev", Version: "v1.29.3"}))
	if err == nil || !strings.Contains(err.Error(), "1.30") {
		t.Errorf("err = %v", err)
	}
	if _, err := Render(topo(Options{Version: "v1.37.2"})); err == nil {
		t.Error("no node name accepted")
	}
}

func TestRenderIsLossless(t *testing.T) {
	o := topo(Options{NodeName: "dev", FeatureGates: map[string]bool{"Foo": true}})
	want, err := Config(o)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := render(t, o); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("decoded file differs from Config:\n got %+v\nwant %+v", got, want)
	}
}
