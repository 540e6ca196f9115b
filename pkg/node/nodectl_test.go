package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"strings"
	"testing"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/usernode/usernode/pkg/cluster"
)

func servingCSR(t *testing.T, cn string, org []string, dns []string, ips ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: org}, DNSNames: dns}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// A kubelet-serving CSR is approved only when it is the node's own, for
// its own name and addresses, with server usages.
func TestServingCSROK(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "10.0.77.100"}, {Type: corev1.NodeExternalIP, Address: "198.51.100.2"}, {Type: corev1.NodeHostName, Address: "w1"}}}}
	usages := []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth}
	csr := func(user string, req []byte, u []certv1.KeyUsage) *certv1.CertificateSigningRequest {
		return &certv1.CertificateSigningRequest{Spec: certv1.CertificateSigningRequestSpec{SignerName: kubeletServing,
			Username: user, Groups: []string{"system:nodes", "system:authenticated"}, Usages: u, Request: req}}
	}
	nodes := []string{"system:nodes"}
	good := servingCSR(t, "system:node:w1", nodes, []string{"w1"}, "10.0.77.100", "198.51.100.2")
	if err := servingCSROK(csr("system:node:w1", good, usages), n); err != nil {
		t.Errorf("the node's own CSR: %v", err)
	}
	for name, c := range map[string]struct {
		csr  *certv1.CertificateSigningRequest
		want string
	}{
		"another node's":     {csr("system:node:w2", good, usages), "by node w1 itself"},
		"a client usage":     {csr("system:node:w1", good, []certv1.KeyUsage{certv1.UsageClientAuth}), "not a server's"},
		"a foreign address":  {csr("system:node:w1", servingCSR(t, "system:node:w1", nodes, nil, "198.51.100.9"), usages), "198.51.100.9 is not one of the node's"},
		"a foreign name":     {csr("system:node:w1", servingCSR(t, "system:node:w1", nodes, []string{"kubernetes.default"}, "10.0.77.100"), usages), "kubernetes.default"},
		"another subject":    {csr("system:node:w1", servingCSR(t, "system:node:w2", nodes, nil, "10.0.77.100"), usages), "subject"},
		"no address at all":  {csr("system:node:w1", servingCSR(t, "system:node:w1", nodes, nil), usages), "names no address"},
		"not a request":      {csr("system:node:w1", []byte("garbage"), usages), "no PEM"},
		"a client's subject": {csr("system:node:w1", servingCSR(t, "system:node:w1", []string{"system:masters"}, nil, "10.0.77.100"), usages), "subject"},
	} {
		err := servingCSROK(c.csr, n)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

// A node's addresses come once it has said its host IP; the ExternalIP is
// that host IP.
func TestNodeAddresses(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1", Annotations: map[string]string{providedNodeIP: "10.0.77.100"}}}
	if _, ok := nodeAddresses(n); ok {
		t.Error("addresses before the node said its host IP")
	}
	n.Annotations[cluster.HostIPAnnotation] = "198.51.100.2"
	a, ok := nodeAddresses(n)
	if !ok || len(a) != 3 || a[0].Address != "10.0.77.100" || a[1].Type != corev1.NodeExternalIP || a[1].Address != "198.51.100.2" {
		t.Errorf("addresses %v", a)
	}
}
