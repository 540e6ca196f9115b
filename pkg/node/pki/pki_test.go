package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustEnsure(t *testing.T, dir string, o Options) *PKI {
	t.Helper()
	p, err := Ensure(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, path string) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(readCert(t, path))
	return p
}

func verify(t *testing.T, name, cert, ca string, usage x509.ExtKeyUsage, host string) *x509.Certificate {
	t.Helper()
	c := readCert(t, cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, ca), KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: host}); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	return c
}

func TestEnsureFresh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	p := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))

	if !slices.Contains(p.Regenerated, "ca") || !slices.Contains(p.Regenerated, "sa") {
		t.Errorf("fresh dir: Regenerated = %v", p.Regenerated)
	}

	// Serving certs, checked for every name clients use.
	for _, host := range []string{"127.0.0.1", "10.0.2.100", "10.96.0.1", "localhost", "dev",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		verify(t, "apiserver "+host, p.APIServer.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, host)
	}
	api := readCert(t, p.APIServer.Cert)
	if got := ipStrings(api.IPAddresses); !sameSet(got, []string{"127.0.0.1", "10.0.2.100", "10.96.0.1"}) {
		t.Errorf("apiserver IPs = %v", got)
	}
	for _, host := range []string{"dev", "127.0.0.1", "10.0.2.100"} {
		verify(t, "kubelet "+host, p.Kubelet.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, host)
	}
	// kube-apiserver's aggregator checks the Service's name.
	for _, host := range []string{"metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local", "127.0.0.1", "10.0.2.100"} {
		verify(t, "metrics-server "+host, p.MetricsServer.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, host)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		verify(t, "etcd server "+host, p.EtcdServer.Cert, p.EtcdCA.Cert, x509.ExtKeyUsageServerAuth, host)
	}
	etcd := readCert(t, p.EtcdServer.Cert)
	if got := ipStrings(etcd.IPAddresses); !sameSet(got, []string{"127.0.0.1"}) {
		t.Errorf("etcd IPs = %v: must not name the node IP, etcd listens on loopback only", got)
	}

	clients := []struct {
		name string
		pair Pair
		ca   Pair
		cn   string
		orgs []string
	}{
		{"kubelet-client", p.KubeletClient, p.CA, "system:node:dev", []string{"system:nodes"}},
		{"admin", p.Admin, p.CA, "usernode-admin", []string{"system:masters"}},
		{"controller-manager", p.ControllerManager, p.CA, "system:kube-controller-manager", nil},
		{"scheduler", p.Scheduler, p.CA, "system:kube-scheduler", nil},
		{"kube-proxy", p.KubeProxy, p.CA, "system:kube-proxy", nil},
		{"coredns", p.CoreDNS, p.CA, "system:coredns", nil},
		{"metrics-server-client", p.MetricsServerClient, p.CA, "system:metrics-server", nil},
		{"apiserver-kubelet-client", p.APIServerKubeletClient, p.CA, "kube-apiserver-kubelet-client", nil},
		{"apiserver-etcd-client", p.APIServerEtcdClient, p.EtcdCA, "kube-apiserver-etcd-client", nil},
		{"front-proxy-client", p.FrontProxyClient, p.FrontProxyCA, "front-proxy-client", nil},
		{"etcd/peer", p.EtcdPeer, p.EtcdCA, "etcd-peer", nil},
	}
	for _, c := range clients {
		cert := verify(t, c.name, c.pair.Cert, c.ca.Cert, x509.ExtKeyUsageClientAuth, "")
		if cert.Subject.CommonName != c.cn || !slices.Equal(cert.Subject.Organization, c.orgs) {
			t.Errorf("%s: subject %v, want CN=%s O=%v", c.name, cert.Subject, c.cn, c.orgs)
		}
		// A client cert must not be usable to serve.
		if c.name != "etcd/peer" {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(t, c.ca.Cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Errorf("%s verifies for server auth", c.name)
			}
		}
	}
	// Separate CAs: a cert from the cluster CA (which kube-controller-manager
	// signs CSRs with) must not open etcd.
	if _, err := readCert(t, p.Admin.Cert).Verify(x509.VerifyOptions{Roots: pool(t, p.EtcdCA.Cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("admin cert verifies against the etcd CA")
	}
	if !slices.Equal(readCert(t, p.Admin.Cert).ExtKeyUsage, clientUsage) {
		t.Error("admin usages")
	}

	ca := readCert(t, p.CA.Cert)
	if !ca.IsCA || ca.NotAfter.Sub(ca.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA=%v validity %v", ca.IsCA, ca.NotAfter.Sub(ca.NotBefore))
	}

	// Modes.
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v; want 0700", d, fi.Mode().Perm(), err)
		}
	}
	keys := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, _ := d.Info()
		if strings.HasSuffix(path, ".key") {
			keys++
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
			}
		} else if fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: mode %v is writable by others", path, fi.Mode().Perm())
		}
		if strings.Contains(filepath.Base(path), ".tmp") {
			t.Errorf("temp file left behind: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys != 19 {
		t.Errorf("%d keys, want 19 (3 CAs, 15 leaves, sa)", keys)
	}

	// The SA public key is the private key's.
	sa, err := readKey(p.ServiceAccount.Private)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p.ServiceAccount.Public)
	block, _ := pem.Decode(b)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !sa.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Error("sa.pub does not match sa.key")
	}
}

func serials(t *testing.T, p *PKI) map[string]string {
	t.Helper()
	m := map[string]string{}
	for name, pair := range map[string]Pair{
		"ca": p.CA, "etcd/ca": p.EtcdCA, "front-proxy-ca": p.FrontProxyCA,
		"apiserver": p.APIServer, "apiserver-kubelet-client": p.APIServerKubeletClient,
		"apiserver-etcd-client": p.APIServerEtcdClient, "front-proxy-client": p.FrontProxyClient,
		"kubelet": p.Kubelet, "kubelet-client": p.KubeletClient, "admin": p.Admin,
		"controller-manager": p.ControllerManager, "scheduler": p.Scheduler, "kube-proxy": p.KubeProxy,
		"coredns": p.CoreDNS, "metrics-server": p.MetricsServer, "metrics-server-client": p.MetricsServerClient, "etcd/server": p.EtcdServer, "etcd/peer": p.EtcdPeer,
	} {
		m[name] = readCert(t, pair.Cert).SerialNumber.String()
	}
	b, _ := os.ReadFile(p.ServiceAccount.Private)
	m["sa"] = string(b)
	return m
}

func changed(a, b map[string]string) []string {
	var out []string
	for k := range a {
		if a[k] != b[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestEnsureIdempotent(t *testing.T) {
	dir := t.TempDir()
	p1 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	s1 := serials(t, p1)
	p2 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	if len(p2.Regenerated) != 0 {
		t.Errorf("second Ensure regenerated %v", p2.Regenerated)
	}
	if c := changed(s1, serials(t, p2)); len(c) != 0 {
		t.Errorf("second Ensure changed %v", c)
	}
}

func TestEnsureNodeIPChange(t *testing.T) {
	dir := t.TempDir()
	s1 := serials(t, mustEnsure(t, dir, topo(Options{NodeName: "dev"})))
	p := mustEnsure(t, dir, topo(Options{NodeName: "dev", NodeIP: netip.MustParseAddr("10.0.2.15")}))
	if got, want := changed(s1, serials(t, p)), []string{"apiserver", "kubelet", "metrics-server"}; !slices.Equal(got, want) {
		t.Errorf("changed %v, want %v", got, want)
	}
	if !slices.Equal(p.Regenerated, []string{"apiserver", "kubelet", "metrics-server"}) {
		t.Errorf("Regenerated = %v", p.Regenerated)
	}
	verify(t, "apiserver new IP", p.APIServer.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, "10.0.2.15")
	verify(t, "kubelet new IP", p.Kubelet.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, "10.0.2.15")
	if _, err := readCert(t, p.Kubelet.Cert).Verify(x509.VerifyOptions{Roots: pool(t, p.CA.Cert), DNSName: "10.0.2.100"}); err == nil {
		t.Error("kubelet cert still valid for the old IP")
	}
}

// A state dir made before metrics-server's certificates existed gets them
// at its next `up`, and nothing else changes: kubeconfigs copied out stay
// good.
func TestEnsureAddsMetricsServerCerts(t *testing.T) {
	dir := t.TempDir()
	p := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	s1 := serials(t, p)
	for _, f := range []string{p.MetricsServer.Cert, p.MetricsServer.Key, p.MetricsServerClient.Cert, p.MetricsServerClient.Key} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	p2 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	if !slices.Equal(p2.Regenerated, []string{"metrics-server", "metrics-server-client"}) {
		t.Errorf("Regenerated = %v, want only metrics-server's two", p2.Regenerated)
	}
	if got := changed(s1, serials(t, p2)); !slices.Equal(got, []string{"metrics-server", "metrics-server-client"}) {
		t.Errorf("changed %v", got)
	}
	verify(t, "metrics-server", p2.MetricsServer.Cert, p2.CA.Cert, x509.ExtKeyUsageServerAuth, "metrics-server.kube-system.svc")
}

func TestEnsureRepairs(t *testing.T) {
	dir := t.TempDir()
	p := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	s1 := serials(t, p)

	// A lost leaf key: only that leaf comes back.
	if err := os.Remove(p.Scheduler.Key); err != nil {
		t.Fatal(err)
	}
	// A key left world-readable gets its mode back without regeneration.
	if err := os.Chmod(p.Admin.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	if got := changed(s1, serials(t, p2)); !slices.Equal(got, []string{"scheduler"}) {
		t.Errorf("after losing scheduler.key, changed %v", got)
	}
	if fi, _ := os.Stat(p.Admin.Key); fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.key mode %v", fi.Mode().Perm())
	}

	// A lost etcd CA: the etcd CA and everything it signed, nothing else.
	s2 := serials(t, p2)
	if err := os.Remove(p.EtcdCA.Key); err != nil {
		t.Fatal(err)
	}
	p3 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	if got, want := changed(s2, serials(t, p3)), []string{"apiserver-etcd-client", "etcd/ca", "etcd/peer", "etcd/server"}; !slices.Equal(got, want) {
		t.Errorf("after losing etcd/ca.key, changed %v want %v", got, want)
	}
	verify(t, "etcd server after CA change", p3.EtcdServer.Cert, p3.EtcdCA.Cert, x509.ExtKeyUsageServerAuth, "127.0.0.1")

	// sa.pub lost: rewritten from sa.key, which is kept.
	s3 := serials(t, p3)
	if err := os.Remove(p.ServiceAccount.Public); err != nil {
		t.Fatal(err)
	}
	p4 := mustEnsure(t, dir, topo(Options{NodeName: "dev"}))
	if got := changed(s3, serials(t, p4)); len(got) != 0 || !slices.Equal(p4.Regenerated, []string{"sa.pub"}) {
		t.Errorf("after losing sa.pub: changed %v, regenerated %v", got, p4.Regenerated)
	}
}

func TestEnsureRenewsNearExpiry(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s1 := serials(t, mustEnsure(t, dir, topo(Options{NodeName: "dev", Now: func() time.Time { return now }})))
	later := now.Add(LeafValidity - RenewBefore + time.Hour)
	p := mustEnsure(t, dir, topo(Options{NodeName: "dev", Now: func() time.Time { return later }}))
	got := changed(s1, serials(t, p))
	for _, keep := range []string{"ca", "etcd/ca", "front-proxy-ca", "sa"} {
		if slices.Contains(got, keep) {
			t.Errorf("%s renewed; only leaves should be", keep)
		}
	}
	if len(got) != 15 {
		t.Errorf("renewed %v, want all 15 leaves", got)
	}
}

func TestEnsureNeedsNodeName(t *testing.T) {
	if _, err := Ensure(t.TempDir(), topo(Options{})); err == nil {
		t.Error("no error without a node name")
	}
}

func TestExtraSANs(t *testing.T) {
	p := mustEnsure(t, t.TempDir(), topo(Options{NodeName: "dev", ExtraAPIServerSANs: []string{"myhost.example", "192.168.1.7"}}))
	verify(t, "extra dns", p.APIServer.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, "myhost.example")
	verify(t, "extra ip", p.APIServer.Cert, p.CA.Cert, x509.ExtKeyUsageServerAuth, "192.168.1.7")
}

// kube-apiserver serves its certificate followed by the CA, which is what
// a joining host checks its pin against.
func TestAPIServerChain(t *testing.T) {
	p := mustEnsure(t, t.TempDir(), topo(Options{NodeName: "dev"}))
	chain, err := os.ReadFile(p.APIServerChain)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := os.ReadFile(p.APIServer.Cert)
	ca, _ := os.ReadFile(p.CA.Cert)
	if string(chain) != string(leaf)+string(ca) {
		t.Errorf("chain is not apiserver.crt then ca.crt:\n%s", chain)
	}
}
