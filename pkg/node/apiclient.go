package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/usernode/usernode/pkg/node/pki"
)

// apiClient is the little of the Kubernetes API the host side needs: read
// a Node, list and watch Services. A plain HTTP client instead of
// client-go, whose package init (every API group's scheme) costs each of
// usernode's processes tens of MB, though only `up` needs it.
type apiClient struct {
	base string
	hc   *http.Client
	// claim, when valid, is the pod CIDR PodCIDR gives the Node itself
	// if it has none (see PodCIDR).
	claim netip.Prefix
}

// newAPIClient is the cluster admin's client (ps's admin pair).
func newAPIClient(server string, ps *pki.PKI) (*apiClient, error) {
	if _, err := tls.LoadX509KeyPair(ps.Admin.Cert, ps.Admin.Key); err != nil {
		return nil, err
	}
	return newAPIClientFiles(server, ps.CA.Cert, ps.Admin.Cert, ps.Admin.Key)
}

// newAPIClientFiles authenticates with the pair in certFile and keyFile,
// read again at each TLS handshake: a worker's kubelet writes its client
// certificate only once the cluster has signed it, and renews it later.
func newAPIClientFiles(server, caFile, certFile, keyFile string) (*apiClient, error) {
	return newAPIClientUnder("", server, caFile, certFile, keyFile)
}

// newAPIClientUnder is newAPIClientFiles from outside the node whose files
// are under root: the kubelet's current certificate is a symlink to an
// absolute path inside the node, taken under root here.
func newAPIClientUnder(root, server, caFile, certFile, keyFile string) (*apiClient, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	cert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cert, err := readUnder(root, certFile)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		key, err := readUnder(root, keyFile)
		if err != nil {
			return nil, fmt.Errorf("the client key: %w", err)
		}
		kp, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		return &kp, nil
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, GetClientCertificate: cert, MinVersion: tls.VersionTLS12}}
	return &apiClient{base: server, hc: &http.Client{Transport: tr}}, nil
}

// readUnder reads path; a symlink there to an absolute path is followed
// under root (when root is set).
func readUnder(root, path string) ([]byte, error) {
	if root != "" {
		if t, err := os.Readlink(path); err == nil && filepath.IsAbs(t) {
			path = filepath.Join(root, t)
		}
	}
	return os.ReadFile(path)
}

// AnnotateNode waits for the Node to exist (its kubelet registers it),
// then sets the annotations on it.
func (c *apiClient) AnnotateNode(ctx context.Context, node string, ann map[string]string) error {
	patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
	var last error
	for {
		if last = c.send(ctx, http.MethodPatch, "/api/v1/nodes/"+node, patch, nil); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("annotating node %s: %w (last: %v)", node, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *apiClient) do(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = resp.Body.Close() // read for the message; the status is the error
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return resp, nil
}

func (c *apiClient) get(ctx context.Context, path string, out any) error {
	return c.send(ctx, http.MethodGet, path, nil, out)
}

// watch streams watch events until the server ends the watch, ctx ends or
// a line cannot be read.
func (c *apiClient) watch(ctx context.Context, path string, each func(typ string, obj json.RawMessage)) error {
	resp, err := c.do(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			return err
		}
		each(ev.Type, ev.Object)
	}
}

type condition struct {
	Type              string    `json:"type"`
	Status            string    `json:"status"`
	Reason            string    `json:"reason"`
	Message           string    `json:"message"`
	LastHeartbeatTime time.Time `json:"lastHeartbeatTime"`
}

// nodeReady tells whether the Node is Ready by a heartbeat of this run:
// after a restart the stored condition still says Ready from the last one.
func (c *apiClient) nodeReady(ctx context.Context, name string, since time.Time) (bool, string, error) {
	var n struct {
		Status struct {
			Conditions []condition `json:"conditions"`
		} `json:"status"`
	}
	if err := c.get(ctx, "/api/v1/nodes/"+name, &n); err != nil {
		return false, "", err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type != "Ready" {
			continue
		}
		fresh := !cond.LastHeartbeatTime.Before(since.Truncate(time.Second))
		if cond.Status == "True" && fresh {
			return true, "", nil
		}
		return false, fmt.Sprintf("Ready=%s %s %s (heartbeat %s)", cond.Status, cond.Reason, cond.Message, cond.LastHeartbeatTime.Format(time.TimeOnly)), nil
	}
	return false, "no Ready condition yet", nil
}
