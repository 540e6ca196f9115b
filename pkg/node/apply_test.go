package node

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/cluster"
)

// Every object the node applies itself maps to its API path without
// discovery: a kind added to the bootstrap or CoreDNS's objects and not to
// appliedKinds fails here, not at a user's `up`.
func TestAppliedObjectsMap(t *testing.T) {
	for _, guard := range []string{"deny", "warn", "off"} {
		root, steps := plan(t, cluster.Config{}, func(cl *cluster.Cluster, _ string) { cl.VolumeGuard = guard })
		for _, s := range steps {
			if (s.Name == "bootstrap-rbac" || s.Name == "coredns-objects") && (s.Run == nil || len(s.Argv) != 0) {
				t.Errorf("%s: not applied in-process: %+v", s.Name, s)
			}
		}
		kinds := map[string]bool{}
		for _, f := range []string{"bootstrap.yaml", "coredns.yaml"} {
			b, err := os.ReadFile(filepath.Join(root, ConfigDir, f))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := splitManifest(b)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(objs) < 3 {
				t.Fatalf("%s: %d objects", f, len(objs))
			}
			for _, o := range objs {
				p, err := applyPath(o, "usernode")
				if err != nil {
					t.Errorf("%s: %v", f, err)
					continue
				}
				kinds[strings.SplitN(p, "?", 2)[0]] = true
			}
		}
		for _, want := range []string{
			"/api/v1/namespaces/default/serviceaccounts/default",
			"/api/v1/namespaces/kube-system/services/kube-dns",
			"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/usernode:kube-apiserver-kubelet-api-admin",
		} {
			if !kinds[want] {
				t.Errorf("guard %q: nothing applied at %s; applied: %v", guard, want, kinds)
			}
		}
	}
}

func TestApplyPath(t *testing.T) {
	for obj, want := range map[string]string{
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cluster-info","namespace":"kube-public"}}`: "/api/v1/namespaces/kube-public/configmaps/cluster-info?fieldManager=usernode&force=true",
		`{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"x"}}`:                                 "/api/v1/namespaces/default/serviceaccounts/x?fieldManager=usernode&force=true",
		`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"system:a b"}}`: "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:a%20b?fieldManager=usernode&force=true",
	} {
		got, err := applyPath([]byte(obj), "usernode")
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", obj, got, err, want)
		}
	}
	for obj, want := range map[string]string{
		`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}`: "apps/v1 Deployment \"x\": not a kind the node applies",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`:                 "without apiVersion, kind or metadata.name",
	} {
		if _, err := applyPath([]byte(obj), "usernode"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", obj, err, want)
		}
	}
}

func TestSplitManifest(t *testing.T) {
	objs, err := splitManifest([]byte("---\n# a comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {k: \"---\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || !strings.Contains(string(objs[0]), `"a"`) || !strings.Contains(string(objs[1]), `"k":"---"`) {
		t.Errorf("objects %q", objs)
	}
	if _, err := splitManifest([]byte("apiVersion: v1\nkind: [\n")); err == nil || !strings.Contains(err.Error(), "document 1") {
		t.Errorf("a broken document: %v", err)
	}
}

// An object the API server does not take yet (busy, failing) is sent
// again until it does; one it refuses is said at once, with the answer.
func TestApplyOneAsksAgainUntilTaken(t *testing.T) {
	var calls atomic.Int32
	codes := []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1)) - 1
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/apply-patch+yaml" {
			t.Errorf("request %s with %q", r.Method, r.Header.Get("Content-Type"))
		}
		if n >= len(codes) {
			n = len(codes) - 1
		}
		w.WriteHeader(codes[n])
	}))
	defer srv.Close()
	c := &apiClient{base: srv.URL, hc: srv.Client()}
	obj := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"default"}}`)
	if err := c.applyOne(context.Background(), "/api/v1/namespaces/default/configmaps/x", obj, time.Minute); err != nil {
		t.Errorf("503, 429, then 200: %v", err)
	}
	if calls.Load() != 3 {
		t.Errorf("sent %d times, want 3", calls.Load())
	}

	calls.Store(0)
	codes = []int{http.StatusUnprocessableEntity}
	err := c.applyOne(context.Background(), "/api/v1/namespaces/default/configmaps/x", obj, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "422") || calls.Load() != 1 {
		t.Errorf("a refusal: %v after %d requests, want it at once", err, calls.Load())
	}

	// Never taken: the last answer, once the time is over.
	calls.Store(0)
	codes = []int{http.StatusServiceUnavailable}
	began := time.Now()
	err = c.applyOne(context.Background(), "/api/v1/namespaces/default/configmaps/x", obj, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "503") || time.Since(began) > 5*time.Second {
		t.Errorf("never taken: %v after %s", err, time.Since(began))
	}
}
