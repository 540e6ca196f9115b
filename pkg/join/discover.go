// Package join is how a host's node finds and trusts the cluster it joins,
// from the three things the join command carries: the API server's
// address, a bootstrap token and the pin of the cluster's CA.
//
// Nothing is trusted, and the token is sent nowhere, until the CA is: the
// server presents its certificate followed by the CA (pki's
// apiserver-chain.crt), the CA's public key must hash to the pin, and the
// server's certificate must be the CA's for the address dialled. Only then
// is the token used, to read kube-public/cluster-info, whose kubeconfig
// must carry a signature made with the token's secret (the
// controller-manager's bootstrapsigner adds it) and the same CA.
package join

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/bootstraptoken"
)

// Cluster is what discovery proves: where the API is and its CA.
type Cluster struct {
	Server string
	CA     []byte // PEM
}

// Discover checks the server at server (https://HOST:PORT) against pin,
// then reads and checks cluster-info with tok. It waits up to the
// context's deadline for the bootstrapsigner to sign cluster-info for a
// token made moments ago.
func Discover(ctx context.Context, server string, tok bootstraptoken.Token, pin string) (*Cluster, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("server %q: give the API server as https://HOST:PORT, as `usernode token create` prints it", server)
	}
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+64 {
		return nil, fmt.Errorf("--ca-cert-hash %q: want sha256: and 64 hex digits, as `usernode token create` prints it", pin)
	}
	ca, err := pinnedCA(ctx, u.Host, u.Hostname(), pin)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	for {
		c, retry, err := clusterInfo(ctx, hc, server, tok, caPEM)
		if err == nil || !retry {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waited: %v)", err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// pinnedCA dials addr and returns the CA among the certificates it
// presents whose key matches pin, once the server's own certificate is
// that CA's for host. No credential is sent on this connection.
func pinnedCA(ctx context.Context, addr, host, pin string) (*x509.Certificate, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		// Verified below, against the pinned CA, before anything is sent.
		Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the API server at %s: %w; is the control plane up (`usernode status` there), is the address the one other hosts reach (--host-ip), and is the port open between the hosts?", addr, err)
	}
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	_ = conn.Close() // nothing was sent on it
	var ca *x509.Certificate
	for _, c := range certs[1:] {
		if c.IsCA && bootstraptoken.CertHash(c) == pin {
			ca = c
		}
	}
	if ca == nil {
		var seen []string
		for _, c := range certs[1:] {
			seen = append(seen, bootstraptoken.CertHash(c))
		}
		return nil, fmt.Errorf("the server at %s does not present the CA pinned by --ca-cert-hash %s (it presents %v): this is not the cluster the join command was made for, or someone is in between; do not join", addr, pin, seen)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
		return nil, fmt.Errorf("the server at %s has the pinned CA but its certificate does not hold for %s: %w; join with the address the control plane was started with (--host-ip)", addr, host, err)
	}
	return ca, nil
}

// clusterInfo reads cluster-info with the token and checks it; retry says
// the signature may still come.
func clusterInfo(ctx context.Context, hc *http.Client, server string, tok bootstraptoken.Token, caPEM []byte) (*Cluster, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/api/v1/namespaces/"+bootstraptoken.ClusterInfoNS+"/configmaps/"+bootstraptoken.ClusterInfo, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.String())
	resp, err := hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("reading cluster-info: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return nil, false, fmt.Errorf("the cluster refused token %s: it is wrong, expired or deleted; make a new one on the control plane with `usernode token create`", tok.ID)
	default:
		return nil, false, fmt.Errorf("reading cluster-info: %s: %s", resp.Status, body)
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, false, fmt.Errorf("cluster-info: %w", err)
	}
	kc := cm.Data["kubeconfig"]
	sig, ok := cm.Data["jws-kubeconfig-"+tok.ID]
	if !ok {
		return nil, true, fmt.Errorf("cluster-info is not signed for token %s yet (the controller-manager's bootstrapsigner does it)", tok.ID)
	}
	if err := verifyDetachedJWS(sig, []byte(kc), tok); err != nil {
		return nil, false, fmt.Errorf("cluster-info's signature for token %s does not hold: %w; do not join", tok.ID, err)
	}
	var cfg clientcmdv1.Config
	if err := yaml.Unmarshal([]byte(kc), &cfg); err != nil || len(cfg.Clusters) != 1 {
		return nil, false, fmt.Errorf("cluster-info's kubeconfig has no cluster (%v)", err)
	}
	c := cfg.Clusters[0].Cluster
	if string(c.CertificateAuthorityData) != string(caPEM) {
		return nil, false, errors.New("cluster-info names another CA than the pinned one the server presents; do not join")
	}
	return &Cluster{Server: c.Server, CA: c.CertificateAuthorityData}, false, nil
}

// verifyDetachedJWS checks a compact JWS with a detached payload
// ("header..signature"), HS256 keyed by the token's secret, as the
// bootstrapsigner makes them.
func verifyDetachedJWS(jws string, payload []byte, tok bootstraptoken.Token) error {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 || parts[1] != "" {
		return errors.New("not a detached JWS")
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return fmt.Errorf("JWS header: %w", err)
	}
	var header struct{ Alg, Kid string }
	if err := json.Unmarshal(h, &header); err != nil {
		return fmt.Errorf("JWS header: %w", err)
	}
	if header.Alg != "HS256" || header.Kid != tok.ID {
		return fmt.Errorf("JWS header %s: want HS256 for %s", h, tok.ID)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("JWS signature: %w", err)
	}
	mac := hmac.New(sha256.New, []byte(tok.Secret))
	mac.Write([]byte(parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return errors.New("HMAC mismatch")
	}
	return nil
}
