package kubeconfig

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/cluster"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/node/pki"
)

const existing = `apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod
  cluster:
    server: https://prod.example:6443
    certificate-authority-data: cHJvZC1jYQ==
    x-vendor-field: kept
- name: usernode-dev
  cluster:
    server: https://127.0.0.1:7777
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-user
    namespace: payments
users:
- name: prod-user
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
      args: [eks, get-token, --cluster-name, prod]
      interactiveMode: Never
      provideClusterInfo: false
    x-vendor-number: 12345678901234567890
current-context: prod
x-top-level: {a: 1}
`

func decode(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func find(t *testing.T, doc map[string]any, key, name string) map[string]any {
	t.Helper()
	var found map[string]any
	n := 0
	for _, it := range doc[key].([]any) {
		if m := it.(map[string]any); m["name"] == name {
			found = m
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s %q appears %d times", key, name, n)
	}
	return found
}

func newCfg() *clientcmdv1.Config {
	return New(Options{Name: ContextName("dev"), CAData: []byte("CA"), CertData: []byte("CERT"), KeyData: []byte("KEY")})
}

func TestMergeKeepsUnrelated(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".kube", "config")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(existing), 0o644); err != nil {
		t.Fatal(err)
	}
	before := decode(t, path)

	if err := Merge(path, newCfg(), MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	after := decode(t, path)

	// Everything unrelated is exactly as it was.
	for _, k := range []struct{ key, name string }{{"clusters", "prod"}, {"contexts", "prod"}, {"users", "prod-user"}} {
		b, _ := yaml.Marshal(find(t, before, k.key, k.name))
		a, _ := yaml.Marshal(find(t, after, k.key, k.name))
		if !bytes.Equal(a, b) {
			t.Errorf("%s %s changed:\n%s\nwas:\n%s", k.key, k.name, a, b)
		}
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), "12345678901234567890") {
		t.Errorf("big number not kept verbatim:\n%s", raw)
	}
	for _, k := range []string{"preferences", "x-top-level"} {
		if _, ok := after[k]; !ok {
			t.Errorf("%s lost", k)
		}
	}
	if after["current-context"] != "prod" {
		t.Errorf("current-context = %v, want prod kept", after["current-context"])
	}
	// Ours replaced the stale entry of the same name rather than doubling it.
	c := find(t, after, "clusters", "usernode-dev")["cluster"].(map[string]any)
	if c["server"] != DefaultServer {
		t.Errorf("usernode-dev server = %v", c["server"])
	}
	ctx := find(t, after, "contexts", "usernode-dev")["context"].(map[string]any)
	if ctx["cluster"] != "usernode-dev" || ctx["user"] != "usernode-dev" {
		t.Errorf("context = %v", ctx)
	}
	find(t, after, "users", "usernode-dev")

	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Lstat(path + ".lock"); err == nil {
		t.Error("lock left behind")
	}

	// Again, asking for the current context: still one of each.
	if err := Merge(path, newCfg(), MergeOptions{SetCurrentContext: true}); err != nil {
		t.Fatal(err)
	}
	after = decode(t, path)
	find(t, after, "clusters", "usernode-dev")
	if after["current-context"] != "usernode-dev" {
		t.Errorf("current-context = %v", after["current-context"])
	}
	if n := len(after["clusters"].([]any)); n != 2 {
		t.Errorf("%d clusters, want 2", n)
	}

	if err := Remove(path, "usernode-dev"); err != nil {
		t.Fatal(err)
	}
	after = decode(t, path)
	if n := len(after["contexts"].([]any)); n != 1 || after["current-context"] != "" {
		t.Errorf("after Remove: %d contexts, current %v", n, after["current-context"])
	}
	find(t, after, "users", "prod-user")
}

func TestMergeNewFileAndSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "config")
	if err := Merge(path, newCfg(), MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	doc := decode(t, path)
	if doc["current-context"] != "usernode-dev" || doc["kind"] != "Config" {
		t.Errorf("new file: %v", doc)
	}

	// A symlinked config: the target is updated, the link stays a link.
	target := filepath.Join(dir, "dotfiles-config")
	if err := os.WriteFile(target, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := Merge(link, newCfg(), MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("symlink replaced by a file")
	}
	find(t, decode(t, target), "contexts", "usernode-dev")
}

func TestMergeRespectsKubectlLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.Symlink("123", path+".lock"); err != nil {
		t.Fatal(err)
	}
	if err := Merge(path, newCfg(), MergeOptions{}); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Errorf("err = %v, want a lock error", err)
	}
}

func TestMergeRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte("clusters: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Merge(path, newCfg(), MergeOptions{}); err == nil {
		t.Error("merged into a file whose clusters is not a list")
	}
	if b, _ := os.ReadFile(path); string(b) != "clusters: 3\n" {
		t.Errorf("file changed on error: %q", b)
	}
}

func TestComponents(t *testing.T) {
	dir := t.TempDir()
	cl := cluster.DefaultCluster()
	p, err := pki.Ensure(filepath.Join(dir, "pki"), pki.Options{NodeName: "dev", NodeIP: cl.Self().IP, ServiceCIDR: cl.ServiceCIDR, ClusterDomain: cl.DNSDomain})
	if err != nil {
		t.Fatal(err)
	}
	f, err := WriteComponents(filepath.Join(dir, "etc"), "dev", "", p)
	if err != nil {
		t.Fatal(err)
	}
	for path, cn := range map[string]string{
		f.Admin: "usernode-admin", f.Kubelet: "system:node:dev", f.ControllerManager: "system:kube-controller-manager",
		f.Scheduler: "system:kube-scheduler", f.KubeProxy: "system:kube-proxy", f.CoreDNS: "system:coredns",
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cfg clientcmdv1.Config
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if cfg.Clusters[0].Cluster.Server != DefaultServer || cfg.CurrentContext != "usernode-dev" {
			t.Errorf("%s: %+v", path, cfg)
		}
		ai := cfg.AuthInfos[0].AuthInfo
		pair, err := tls.X509KeyPair(ai.ClientCertificateData, ai.ClientKeyData)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if pair.Leaf.Subject.CommonName != cn {
			t.Errorf("%s: CN %s, want %s", path, pair.Leaf.Subject.CommonName, cn)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", path, fi.Mode().Perm())
		}
	}
}
