package bootstraptoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestNewAndParse(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 500, time.UTC)
	a, err := New(time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(0, now)
	if a.String() == b.String() {
		t.Error("two tokens are the same")
	}
	p, err := Parse(a.String())
	if err != nil || p.ID != a.ID || p.Secret != a.Secret {
		t.Errorf("Parse(%s) = %+v, %v", a, p, err)
	}
	if !a.Expires.Equal(now.Add(time.Hour).Truncate(time.Second)) || !b.Expires.IsZero() {
		t.Errorf("expiry %v / %v", a.Expires, b.Expires)
	}
	for _, bad := range []string{"", "abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef:0123456789abcdef"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "usernode token create") {
			t.Errorf("Parse(%q): %v", bad, err)
		}
	}
}

// The Secret is what kube-apiserver's bootstrap authenticator and the
// bootstrapsigner read: the names and keys are fixed by Kubernetes.
func TestObject(t *testing.T) {
	tok := Token{ID: "abcdef", Secret: "0123456789abcdef", Expires: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), Description: "ci"}
	s := tok.Object()
	if s.Name != "bootstrap-token-abcdef" || s.Namespace != "kube-system" || s.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("secret %s/%s type %s", s.Namespace, s.Name, s.Type)
	}
	for k, v := range map[string]string{"token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": "2026-12-03T00:00:00Z",
		"usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true", "auth-extra-groups": Group} {
		if s.StringData[k] != v {
			t.Errorf("%s = %q, want %q", k, s.StringData[k], v)
		}
	}
	// Read back as the API returns it.
	back := &corev1.Secret{Type: s.Type, Data: map[string][]byte{}}
	back.Name = s.Name
	for k, v := range s.StringData {
		back.Data[k] = []byte(v)
	}
	got, err := FromSecret(back)
	if err != nil || got != tok {
		t.Errorf("FromSecret = %+v, %v; want %+v", got, err, tok)
	}
	if _, err := FromSecret(&corev1.Secret{Type: corev1.SecretTypeOpaque}); err == nil {
		t.Error("an opaque secret read as a token")
	}
}

// CAHash agrees with the pin kubeadm's docs compute with openssl:
// openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum.
func TestCAHash(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	got, err := CAHash(caPEM)
	if err != nil || !strings.HasPrefix(got, "sha256:") || len(got) != len("sha256:")+64 {
		t.Fatalf("CAHash = %q, %v", got, err)
	}
	if _, err := CAHash([]byte("not a certificate")); err == nil {
		t.Error("garbage hashed")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed: no second opinion on the hash")
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `"$0" x509 -pubkey -noout -in "$1" | "$0" pkey -pubin -outform der | sha256sum`, openssl, ca).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + strings.Fields(string(out))[0]; got != want {
		t.Errorf("CAHash %s, openssl says %s", got, want)
	}
}

func TestJoinCommand(t *testing.T) {
	got := JoinCommand("https://198.51.100.1:6443", Token{ID: "abcdef", Secret: "0123456789abcdef"}, "sha256:00")
	if got != "usernode join https://198.51.100.1:6443 --token abcdef.0123456789abcdef --ca-cert-hash sha256:00" {
		t.Error(got)
	}
}
