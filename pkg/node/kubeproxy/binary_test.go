package kubeproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/internal/testutil"
)

// kube-proxy itself loads, validates and defaults the file, then writes
// what it would run with: the conntrack zeros must survive.
func TestKubeProxyLoadsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs kube-proxy")
	}
	bin := testutil.K8sBin(t)
	dir := t.TempDir()
	b, err := Render(topo(Options{NodeName: "dev"}))
	if err != nil {
		t.Fatal(err)
	}
	in, out := filepath.Join(dir, "in.yaml"), filepath.Join(dir, "out.yaml")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command(filepath.Join(bin, "kube-proxy"), "--config="+in, "--write-config-to="+out).CombinedOutput(); err != nil {
		t.Fatalf("kube-proxy: %v\n%s", err, o)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var c kubeproxyv1alpha1.KubeProxyConfiguration
	if err := yaml.UnmarshalStrict(got, &c); err != nil {
		t.Fatal(err)
	}
	if c.Mode != "iptables" || *c.Conntrack.MaxPerCore != 0 || c.Conntrack.TCPEstablishedTimeout.Duration != 0 ||
		c.Conntrack.TCPCloseWaitTimeout.Duration != 0 || c.HostnameOverride != "dev" {
		t.Errorf("kube-proxy would run with %+v", c)
	}
}
