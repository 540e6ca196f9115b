package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/sandbox"
)

// Tokens manages a running node's bootstrap tokens from the host, as the
// cluster's admin.
type Tokens struct {
	name   string
	api    *apiClient
	server string
	caHash string
}

// NewTokens reaches the node c names at the API address its host
// kubeconfig gives (the one other hosts use too).
func NewTokens(c sandbox.Config) (*Tokens, error) {
	if _, err := sandbox.Running(c.RuntimeDir); err != nil {
		return nil, err
	}
	p := PathsOf(c)
	b, err := os.ReadFile(p.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("node %q has no kubeconfig yet (is it Ready? `usernode status`): %w", c.Name, err)
	}
	var kc clientcmdv1.Config
	if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) == 0 {
		return nil, fmt.Errorf("%s: no cluster in it (%v)", p.Kubeconfig(), err)
	}
	ps := pki.Paths(p.PKI())
	ca, err := ps.CAPEM()
	if err != nil {
		return nil, err
	}
	hash, err := bootstraptoken.CAHash(ca)
	if err != nil {
		return nil, err
	}
	server := kc.Clusters[0].Cluster.Server
	api, err := newAPIClient(server, ps)
	if err != nil {
		return nil, err
	}
	return &Tokens{name: c.Name, api: api, server: server, caHash: hash}, nil
}

// LocalOnly says, when the cluster's API is on the host's loopback only,
// that a join command for it works on no other host, and what to do.
func (t *Tokens) LocalOnly() string {
	u, err := url.Parse(t.server)
	if err != nil {
		return ""
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err != nil || !ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("node %q serves this host only (its API is at %s): no other host can use this command; `usernode down --name %s`, then `usernode up --name %s --host-ip auto` (or an address of this host the others reach) lets them join", t.name, t.server, t.name, t.name)
}

// Create makes a token valid for ttl (0: never expires) and returns it
// with the join command that uses it.
func (t *Tokens) Create(ctx context.Context, ttl time.Duration, description string) (bootstraptoken.Token, string, error) {
	tok, err := bootstraptoken.New(ttl, time.Now())
	if err != nil {
		return tok, "", err
	}
	if description != "" {
		tok.Description = description
	}
	if err := t.api.send(ctx, http.MethodPost, "/api/v1/namespaces/"+bootstraptoken.Namespace+"/secrets", tok.Object(), nil); err != nil {
		return tok, "", fmt.Errorf("creating the token's Secret: %w", err)
	}
	return tok, bootstraptoken.JoinCommand(t.server, tok, t.caHash), nil
}

// List returns the cluster's bootstrap tokens, soonest to expire first.
func (t *Tokens) List(ctx context.Context) ([]bootstraptoken.Token, error) {
	var list corev1.SecretList
	if err := t.api.get(ctx, "/api/v1/namespaces/"+bootstraptoken.Namespace+"/secrets?fieldSelector=type%3D"+string(bootstraptoken.SecretType), &list); err != nil {
		return nil, err
	}
	var out []bootstraptoken.Token
	for i := range list.Items {
		tok, err := bootstraptoken.FromSecret(&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, tok)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
	return out, nil
}

// Delete removes the token with this ID (or ID.SECRET): it stops
// authenticating at once.
func (t *Tokens) Delete(ctx context.Context, id string) error {
	if tok, err := bootstraptoken.Parse(id); err == nil {
		id = tok.ID
	}
	err := t.api.send(ctx, http.MethodDelete, "/api/v1/namespaces/"+bootstraptoken.Namespace+"/secrets/"+bootstraptoken.SecretPrefix+id, nil, nil)
	if e, ok := err.(*statusError); ok && e.code == http.StatusNotFound {
		return fmt.Errorf("no bootstrap token %q: `usernode token list` shows them", id)
	}
	return err
}

// statusError is an API answer other than 2xx.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// send makes a request with a JSON body (or none) and decodes the answer
// into out (if not nil). A PATCH is a JSON merge patch.
func (c *apiClient) send(ctx context.Context, method, path string, body, out any) error {
	ct := "application/json"
	if method == http.MethodPatch {
		ct = "application/merge-patch+json"
	}
	return c.sendAs(ctx, method, path, ct, body, out)
}

// sendAs is send with the body's content type ct.
func (c *apiClient) sendAs(ctx context.Context, method, path, ct string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ct)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return &statusError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, b)}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
