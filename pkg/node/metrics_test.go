package node

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/metricsserver"
)

// --metrics adds metrics-server after kube-proxy, with its own kubeconfig
// and an APIService whose caBundle is the cluster CA that signed its
// serving certificate; without it nothing of metrics-server is rendered.
func TestMetricsComponent(t *testing.T) {
	files, argv := render(t, cluster.Config{})
	if strings.Contains(argv, "metrics-server") || files["/etc/usernode/"+metricsserver.ObjectsName] != "" {
		t.Fatalf("metrics-server rendered without --metrics:\n%s", argv)
	}

	files, argv = render(t, cluster.Config{Metrics: true})
	lines := strings.Split(strings.TrimSpace(argv), "\n")
	var last string
	for _, l := range lines {
		if strings.HasPrefix(l, "/bin/metrics-server ") {
			last = l
		}
	}
	if last == "" {
		t.Fatalf("no metrics-server step:\n%s", argv)
	}
	for _, f := range []string{"--kubeconfig=/etc/usernode/metrics-server.kubeconfig", "--bind-address=10.0.2.100",
		"--secure-port=4443", "--tls-cert-file=/var/lib/usernode/pki/metrics-server.crt",
		"--kubelet-certificate-authority=/var/lib/usernode/pki/ca.crt",
		"--kubelet-client-certificate=/var/lib/usernode/pki/metrics-server-client.crt",
		"--requestheader-client-ca-file=/var/lib/usernode/pki/front-proxy-ca.crt",
		"--requestheader-allowed-names=front-proxy-client", "--kubelet-preferred-address-types=InternalIP,Hostname"} {
		if !strings.Contains(last, f+" ") && !strings.HasSuffix(last, f) {
			t.Errorf("metrics-server lacks %s:\n%s", f, last)
		}
	}
	if strings.Contains(argv, "insecure") {
		t.Errorf("an insecure flag:\n%s", argv)
	}
	if !strings.Contains(argv, "https://10.0.2.100:4443/livez") {
		t.Errorf("no readiness probe on metrics-server's /livez:\n%s", argv)
	}
	kc := files["/etc/usernode/metrics-server.kubeconfig"]
	for _, s := range []string{"server: https://127.0.0.1:6443", "metrics-server-client.crt", "ca.crt"} {
		if !strings.Contains(kc, s) {
			t.Errorf("metrics-server.kubeconfig lacks %q:\n%s", s, kc)
		}
	}

	var apiSvc *metricsserver.APIService
	for _, doc := range strings.Split(files["/etc/usernode/"+metricsserver.ObjectsName], "---\n") {
		if strings.Contains(doc, "kind: APIService") {
			apiSvc = &metricsserver.APIService{}
			if err := yaml.Unmarshal([]byte(doc), apiSvc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if apiSvc == nil {
		t.Fatal("no APIService")
	}
	if string(apiSvc.Spec.CABundle) != files["/var/lib/usernode/pki/ca.crt"] {
		t.Error("the APIService's caBundle is not the cluster CA")
	}
	verifyPEM(t, files["/var/lib/usernode/pki/metrics-server.crt"], files["/var/lib/usernode/pki/ca.crt"], "metrics-server.kube-system.svc")
}

// With --metrics on a worker, the model refuses before anything renders.
func TestMetricsOnWorkerRefused(t *testing.T) {
	cfg := cluster.Config{Role: cluster.Worker, HostIP: "192.0.2.2", Server: "https://192.0.2.9:6443", Metrics: true}
	cluster.SetDefaults(&cfg)
	_, err := cfg.Resolve(cluster.Env{})
	if err == nil || !strings.Contains(err.Error(), "--metrics") {
		t.Fatalf("err = %v, want the metrics field refused", err)
	}
}

func verifyPEM(t *testing.T, leafPEM, caPEM, name string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("no CA PEM")
	}
	blk, _ := pem.Decode([]byte(leafPEM))
	if blk == nil {
		t.Fatal("no leaf PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
		t.Errorf("serving certificate for %s: %v", name, err)
	}
}
