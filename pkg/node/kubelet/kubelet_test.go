package kubelet

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/node/internal/yamltest"
	"k8s.io/apimachinery/pkg/api/equality"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

func render(t *testing.T, o Options) (*kubeletv1beta1.KubeletConfiguration, map[string]any) {
	t.Helper()
	b, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return yamltest.Strict[kubeletv1beta1.KubeletConfiguration](t, b)
}

var get = yamltest.Get

func TestSeedSettings(t *testing.T) {
	c, raw := render(t, topo(Options{NodeName: "dev", Version: "v1.34.2", Degraded: true}))
	want := map[string]any{
		"apiVersion":                          "kubelet.config.k8s.io/v1beta1",
		"kind":                                "KubeletConfiguration",
		"cgroupDriver":                        "cgroupfs",
		"featureGates.KubeletInUserNamespace": true,
		"cgroupsPerQOS":                       false,
		"enforceNodeAllocatable":              []any{},
		"failCgroupV1":                        false,
		"failSwapOn":                          false,
		"authentication.anonymous.enabled":    false,
		"authentication.webhook.enabled":      true,
		"authentication.x509.clientCAFile":    "/var/lib/usernode/pki/ca.crt",
		"authorization.mode":                  "Webhook",
		"tlsCertFile":                         "/var/lib/usernode/pki/kubelet.crt",
		"tlsPrivateKeyFile":                   "/var/lib/usernode/pki/kubelet.key",
		"containerRuntimeEndpoint":            "unix:///run/containerd/containerd.sock",
		"clusterDNS":                          []any{"10.96.0.10"},
		"clusterDomain":                       "cluster.local",
		"resolvConf":                          "/etc/resolv.conf",
		"hairpinMode":                         "hairpin-veth",
		"imageGCHighThresholdPercent":         float64(100),
		"imageMinimumGCAge":                   "8760h0m0s",
		"evictionPressureTransitionPeriod":    "30s",
		"evictionHard.nodefs.available":       "1%",
		"localStorageCapacityIsolation":       true,
	}
	for path, w := range want {
		// evictionHard's keys contain dots.
		if strings.HasPrefix(path, "evictionHard.") {
			eh, _ := raw["evictionHard"].(map[string]any)
			if got := eh[strings.TrimPrefix(path, "evictionHard.")]; got != w {
				t.Errorf("%s = %v, want %v", path, got, w)
			}
			continue
		}
		got, ok := get(raw, path)
		if !ok || !reflect.DeepEqual(got, w) {
			t.Errorf("%s = %#v (present %v), want %#v", path, got, ok, w)
		}
	}
	for _, absent := range []string{"readOnlyPort", "staticPodPath"} {
		if _, ok := raw[absent]; ok {
			t.Errorf("%s present", absent)
		}
	}
	// Every eviction signal the kubelet knows a default for is listed: a
	// partial evictionHard zeroes the rest.
	if len(c.EvictionHard) != 5 || c.EvictionHard["memory.available"] != "100Mi" {
		t.Errorf("evictionHard = %v", c.EvictionHard)
	}
	if c.EnforceNodeAllocatable == nil || len(c.EnforceNodeAllocatable) != 0 {
		t.Errorf("decoded enforceNodeAllocatable = %#v, want empty non-nil", c.EnforceNodeAllocatable)
	}
	if c.ReadOnlyPort != 0 || c.StaticPodPath != "" {
		t.Error("read-only port or static pods on")
	}
}

func TestGateByVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		gate    bool
	}{
		{"v1.30.0", true}, {"1.34.2", true}, {"v1.36.9", true},
		{"v1.37.0-rc.1", false}, {"v1.37.2", false}, {"", false}, {"v1.38.0", false},
	} {
		c, _ := render(t, topo(Options{NodeName: "dev", Version: tc.version}))
		if got := c.FeatureGates["KubeletInUserNamespace"]; got != tc.gate {
			t.Errorf("%q: gate %v, want %v", tc.version, got, tc.gate)
		}
	}
	// A caller's gate wins, and one can be turned off.
	c, _ := render(t, topo(Options{NodeName: "dev", Version: "v1.37.2", FeatureGates: map[string]bool{"KubeletInUserNamespace": false}}))
	if v, ok := c.FeatureGates["KubeletInUserNamespace"]; !ok || v {
		t.Errorf("override: %v", c.FeatureGates)
	}
}

func TestOldVersionRejected(t *testing.T) {
	for _, v := range []string{"v1.29.9", "1.22.0"} {
		_, err := Render(topo(Options{NodeName: "dev", Version: v}))
		if err == nil || !strings.Contains(err.Error(), "not supported") || !strings.Contains(err.Error(), "1.30") {
			t.Errorf("%s: err = %v", v, err)
		}
	}
	if _, err := Render(topo(Options{NodeName: "dev", Version: "banana"})); err == nil {
		t.Error("bad version accepted")
	}
	if _, err := Render(topo(Options{Version: "v1.37.2"})); err == nil {
		t.Error("no node name accepted")
	}
}

// Degraded and full mode differ in exactly these keys.
func TestDegradedVsFull(t *testing.T) {
	for _, tc := range []struct {
		version string
		diff    map[string][2]any // key: {degraded, full}; nil = absent
	}{
		{"v1.37.2", map[string][2]any{
			"cgroupsPerQOS":          {false, true},
			"enforceNodeAllocatable": {[]any{}, nil},
			"failCgroupV1":           {false, nil},
		}},
		// failCgroupV1 does not exist before 1.31.
		{"v1.30.4", map[string][2]any{
			"cgroupsPerQOS":          {false, true},
			"enforceNodeAllocatable": {[]any{}, nil},
		}},
	} {
		_, deg := render(t, topo(Options{NodeName: "dev", Version: tc.version, Degraded: true}))
		_, full := render(t, topo(Options{NodeName: "dev", Version: tc.version}))
		keys := map[string]bool{}
		for k := range deg {
			keys[k] = true
		}
		for k := range full {
			keys[k] = true
		}
		var differ []string
		for k := range keys {
			if !reflect.DeepEqual(deg[k], full[k]) {
				differ = append(differ, k)
				w, ok := tc.diff[k]
				if !ok {
					t.Errorf("%s: %s differs: %v vs %v", tc.version, k, deg[k], full[k])
					continue
				}
				if !reflect.DeepEqual(deg[k], w[0]) || !reflect.DeepEqual(full[k], w[1]) {
					t.Errorf("%s: %s = %#v / %#v, want %#v / %#v", tc.version, k, deg[k], full[k], w[0], w[1])
				}
			}
		}
		if len(differ) != len(tc.diff) {
			t.Errorf("%s: differing keys %v, want %v", tc.version, differ, tc.diff)
		}
	}
}

func TestFlags(t *testing.T) {
	f, err := Flags(topo(Options{NodeName: "dev"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--config=/etc/usernode/kubelet.yaml",
		"--kubeconfig=/etc/usernode/kubelet.kubeconfig",
		"--hostname-override=dev",
		"--node-ip=10.0.2.100",
		"--root-dir=/var/lib/kubelet",
	}
	if !slices.Equal(f, want) {
		t.Errorf("Flags = %v\nwant %v", f, want)
	}
	f, _ = Flags(topo(Options{NodeName: "dev", NodeIP: netip.MustParseAddr("10.0.2.15")}))
	if !slices.Contains(f, "--node-ip=10.0.2.15") {
		t.Errorf("node IP not used: %v", f)
	}
	if _, err := Flags(topo(Options{NodeName: "dev", Version: "v1.29.0"})); err == nil {
		t.Error("Flags accepted 1.29")
	}
}

// What Marshal leaves out must be exactly what decodes back to the same
// value: the file means what Config returned.
func TestRenderIsLossless(t *testing.T) {
	for _, o := range []Options{
		{NodeName: "dev", Version: "v1.34.2", Degraded: true},
		{NodeName: "dev", Version: "v1.37.2"},
		{NodeName: "dev", Version: "v1.30.0", Degraded: true, FeatureGates: map[string]bool{"Foo": false}},
	} {
		want, err := Config(topo(o))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := render(t, topo(o))
		if !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("%+v: decoded file differs from Config:\n got %+v\nwant %+v", o, got, want)
		}
	}
}

// The kubelet keeps the oom_score_adj it inherits instead of trying its
// default -999, which a user namespace refuses (an error every 5 min).
func TestOOMScoreAdjIsTheInheritedOne(t *testing.T) {
	read := func(v string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if p != "/proc/self/oom_score_adj" {
				t.Errorf("read %s", p)
			}
			return []byte(v), nil
		}
	}
	for in, want := range map[string]int32{"0\n": 0, "200\n": 200, "-500": -500} {
		got := InheritedOOMScoreAdj(read(in))
		if got == nil || *got != want {
			t.Errorf("%q: %v, want %d", in, got, want)
			continue
		}
		c, _ := render(t, topo(Options{NodeName: "dev", OOMScoreAdj: got}))
		if c.OOMScoreAdj == nil || *c.OOMScoreAdj != want {
			t.Errorf("%q: rendered oomScoreAdj %v, want %d", in, c.OOMScoreAdj, want)
		}
	}
	for _, bad := range []string{"", "x", "2000"} {
		if got := InheritedOOMScoreAdj(read(bad)); got != nil {
			t.Errorf("%q: %d, want none", bad, *got)
		}
	}
}
