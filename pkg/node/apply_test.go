package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
