package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// appliedKinds are the kinds the node applies itself (its bootstrap
// objects, CoreDNS's), by group and kind: their resource and whether they
// live in a namespace. A table instead of discovery: kubectl's apply
// spent most of its time (0.5-2 s on this host, on the start's critical
// path) starting a 60 MB program and reading every API group, to map
// kinds known here in advance.
var appliedKinds = map[string]struct {
	resource   string
	namespaced bool
}{
	"/ConfigMap":                                                    {"configmaps", true},
	"/Service":                                                      {"services", true},
	"/ServiceAccount":                                               {"serviceaccounts", true},
	"discovery.k8s.io/EndpointSlice":                                {"endpointslices", true},
	"rbac.authorization.k8s.io/ClusterRole":                         {"clusterroles", false},
	"rbac.authorization.k8s.io/ClusterRoleBinding":                  {"clusterrolebindings", false},
	"rbac.authorization.k8s.io/Role":                                {"roles", true},
	"rbac.authorization.k8s.io/RoleBinding":                         {"rolebindings", true},
	"admissionregistration.k8s.io/ValidatingAdmissionPolicy":        {"validatingadmissionpolicies", false},
	"admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding": {"validatingadmissionpolicybindings", false},
}

// applyPath is the URL path (with the apply's query) of obj, one object
// of a manifest as JSON.
func applyPath(obj []byte, fieldManager string) (string, error) {
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(obj, &m); err != nil {
		return "", err
	}
	if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
		return "", fmt.Errorf("an object without apiVersion, kind or metadata.name: %.80s", obj)
	}
	group, version, grouped := strings.Cut(m.APIVersion, "/")
	if !grouped {
		group, version = "", m.APIVersion
	}
	k, ok := appliedKinds[group+"/"+m.Kind]
	if !ok {
		return "", fmt.Errorf("%s %s %q: not a kind the node applies (pkg/node/apply.go's appliedKinds)", m.APIVersion, m.Kind, m.Metadata.Name)
	}
	p := "/apis/" + m.APIVersion
	if group == "" {
		p = "/api/" + version
	}
	if k.namespaced {
		ns := m.Metadata.Namespace
		if ns == "" {
			ns = "default" // as kubectl, with a kubeconfig naming none
		}
		p += "/namespaces/" + url.PathEscape(ns)
	}
	q := url.Values{"fieldManager": {fieldManager}, "force": {"true"}}
	return p + "/" + k.resource + "/" + url.PathEscape(m.Metadata.Name) + "?" + q.Encode(), nil
}

// splitManifest is a multi-document YAML's objects, as JSON, in order.
func splitManifest(manifest []byte) ([][]byte, error) {
	var out [][]byte
	for i, doc := range bytes.Split(append([]byte("\n"), manifest...), []byte("\n---")) {
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue
		}
		out = append(out, j)
	}
	return out, nil
}

// applyConcurrency is how many objects Apply sends at once. One after
// another, the bootstrap's ~45 objects took 1.2 s on a loaded host, at the
// end of the start; none needs another to exist first (a binding names
// its role, a policy binding its policy, without the API checking).
const applyConcurrency = 8

// Apply is `kubectl apply --server-side --force-conflicts` of manifest's
// objects, as fieldManager. Every object is checked before any is sent;
// then they go applyConcurrency at a time, and every failure is returned.
func (c *apiClient) Apply(ctx context.Context, manifest []byte, fieldManager string) error {
	objs, err := splitManifest(manifest)
	if err != nil {
		return err
	}
	paths := make([]string, len(objs))
	for i, obj := range objs {
		if paths[i], err = applyPath(obj, fieldManager); err != nil {
			return err
		}
	}
	errs := make([]error, len(objs))
	sem := make(chan struct{}, applyConcurrency)
	var wg sync.WaitGroup
	for i := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = c.applyOne(ctx, paths[i], objs[i], applyFor)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// applyFor is how long Apply keeps sending an object the API server has
// not taken. An apply is idempotent, so one that got no answer is sent
// again. Each request has sendAs's 10 s deadline, and right after
// kube-apiserver is ready a loaded host can take longer than that: the
// VM tier's node failed its start once on "coredns-objects: Patch
// .../services/kube-dns: context deadline exceeded" under qemu TCG at
// load 7-12 (kubectl, which applied these before, waited without a
// deadline).
const applyFor = 2 * time.Minute

// applyOne sends one object's apply until the API server takes it,
// refuses it for good (a 4xx other than 429), or for is over.
func (c *apiClient) applyOne(ctx context.Context, path string, obj []byte, f time.Duration) error {
	deadline := time.Now().Add(f)
	wait := 200 * time.Millisecond
	for {
		// JSON is YAML: the apply content type takes either.
		err := c.sendAs(ctx, http.MethodPatch, path, "application/apply-patch+yaml", json.RawMessage(obj), nil)
		if err == nil || !unanswered(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// unanswered tells whether err says the API server did not take a
// request it might take later: no answer in time, no connection, too
// busy (429) or failing (5xx). A 4xx is the request's own fault.
func unanswered(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code == http.StatusTooManyRequests || se.code >= 500
	}
	return true
}
