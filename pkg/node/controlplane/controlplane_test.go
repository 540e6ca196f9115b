package controlplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/cluster"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/node/pki"
)

// flagMap turns --k=v flags into a map, failing on duplicates or on
// anything that is not --k=v.
func flagMap(t *testing.T, name string, flags []string, err error) map[string]string {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m := map[string]string{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(k, "--") || v == "" {
			t.Errorf("%s: malformed flag %q", name, f)
		}
		if _, dup := m[k]; dup {
			t.Errorf("%s: %s given twice", name, k)
		}
		m[k] = v
	}
	return m
}

func expect(t *testing.T, name string, m map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s: %s = %q, want %q", name, k, m[k], v)
		}
	}
}

func TestEtcd(t *testing.T) {
	f, err := EtcdFlags(topo(Options{NodeName: "dev"}))
	m := flagMap(t, "etcd", f, err)
	expect(t, "etcd", m, map[string]string{
		"--data-dir":              "/var/lib/etcd",
		"--listen-client-urls":    "https://127.0.0.1:2379",
		"--advertise-client-urls": "https://127.0.0.1:2379",
		"--listen-peer-urls":      "https://127.0.0.1:2380",
		"--listen-metrics-urls":   "http://127.0.0.1:2381",
		"--client-cert-auth":      "true",
		"--peer-client-cert-auth": "true",
		"--trusted-ca-file":       "/var/lib/usernode/pki/etcd/ca.crt",
		"--cert-file":             "/var/lib/usernode/pki/etcd/server.crt",
		"--key-file":              "/var/lib/usernode/pki/etcd/server.key",
		"--quota-backend-bytes":   "1073741824",
		"--snapshot-count":        "10000",
	})
	for k, v := range m {
		if strings.Contains(v, "0.0.0.0") || strings.Contains(v, "10.0.2.100") {
			t.Errorf("etcd %s=%s listens beyond loopback", k, v)
		}
	}
	if _, ok := m["--unsafe-no-fsync"]; ok {
		t.Error("etcd without fsync")
	}
}

func TestAPIServer(t *testing.T) {
	p := pki.Paths("/x/pki")
	f, err := APIServerFlags(topo(Options{NodeName: "dev", PKI: p}))
	m := flagMap(t, "kube-apiserver", f, err)
	expect(t, "kube-apiserver", m, map[string]string{
		"--authorization-mode":               "Node,RBAC",
		"--anonymous-auth":                   "false",
		"--kubelet-preferred-address-types":  "InternalIP,Hostname",
		"--kubelet-certificate-authority":    "/x/pki/ca.crt",
		"--kubelet-client-certificate":       "/x/pki/apiserver-kubelet-client.crt",
		"--kubelet-client-key":               "/x/pki/apiserver-kubelet-client.key",
		"--service-account-issuer":           "https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file": "/x/pki/sa.key",
		"--service-account-key-file":         "/x/pki/sa.pub",
		"--etcd-servers":                     "https://127.0.0.1:2379",
		"--etcd-cafile":                      "/x/pki/etcd/ca.crt",
		"--etcd-certfile":                    "/x/pki/apiserver-etcd-client.crt",
		"--secure-port":                      "6443",
		"--bind-address":                     "0.0.0.0",
		"--advertise-address":                "10.0.2.100",
		"--enable-admission-plugins":         "NodeRestriction",
		"--allow-privileged":                 "true",
		"--service-cluster-ip-range":         "10.96.0.0/16",
		"--client-ca-file":                   "/x/pki/ca.crt",
		"--tls-cert-file":                    "/x/pki/apiserver-chain.crt",
		"--requestheader-client-ca-file":     "/x/pki/front-proxy-ca.crt",
		"--requestheader-allowed-names":      "front-proxy-client",
	})
	f, err = APIServerFlags(topo(Options{NodeName: "dev", NodeIP: netip.MustParseAddr("10.0.2.15"), ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"), ClusterDomain: "dev.local"}))
	m = flagMap(t, "kube-apiserver", f, err)
	expect(t, "kube-apiserver", m, map[string]string{
		"--advertise-address":        "10.0.2.15",
		"--service-cluster-ip-range": "10.43.0.0/16",
		"--service-account-issuer":   "https://kubernetes.default.svc.dev.local",
	})
}

func TestControllerManagerAndScheduler(t *testing.T) {
	f, err := ControllerManagerFlags(topo(Options{NodeName: "dev"}))
	m := flagMap(t, "kube-controller-manager", f, err)
	expect(t, "kube-controller-manager", m, map[string]string{
		"--kubeconfig":                       "/etc/usernode/controller-manager.kubeconfig",
		"--use-service-account-credentials":  "true",
		"--cluster-signing-cert-file":        "/var/lib/usernode/pki/ca.crt",
		"--cluster-signing-key-file":         "/var/lib/usernode/pki/ca.key",
		"--root-ca-file":                     "/var/lib/usernode/pki/ca.crt",
		"--service-account-private-key-file": "/var/lib/usernode/pki/sa.key",
		"--controllers":                      "*,bootstrapsigner,tokencleaner",
		"--allocate-node-cidrs":              "true",
		"--cluster-cidr":                     "10.88.0.0/16",
		"--node-cidr-mask-size":              "24",
		"--leader-elect":                     "false",
		"--bind-address":                     "127.0.0.1",
	})
	f, err = SchedulerFlags(topo(Options{NodeName: "dev"}))
	m = flagMap(t, "kube-scheduler", f, err)
	expect(t, "kube-scheduler", m, map[string]string{
		"--kubeconfig":   "/etc/usernode/scheduler.kubeconfig",
		"--leader-elect": "false",
		"--bind-address": "127.0.0.1",
	})
}

func TestValidation(t *testing.T) {
	for name, o := range map[string]Options{
		"1.29":          {NodeName: "dev", Version: "v1.29.5"},
		"no node":       {},
		"overlap":       {NodeName: "dev", ClusterCIDR: netip.MustParsePrefix("10.96.0.0/12")},
		"mask too wide": {NodeName: "dev", NodeCIDRMaskSize: 8},
	} {
		if _, err := APIServerFlags(topo(o)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	_, err := EtcdFlags(topo(Options{NodeName: "dev", Version: "1.29.0"}))
	if err == nil || !strings.Contains(err.Error(), "1.30") {
		t.Errorf("1.29: %v", err)
	}
	if _, err := SchedulerFlags(topo(Options{NodeName: "dev", Version: "v1.34.2"})); err != nil {
		t.Errorf("1.34: %v", err)
	}
}

func TestBootstrap(t *testing.T) {
	shared := cluster.DefaultCluster().Shared()
	b, err := RenderBootstrap(ClusterInfo{Server: "https://198.51.100.1:6443", CA: []byte("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"), Shared: shared}, "deny")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "---\n")
	var sa corev1.ServiceAccount
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &sa); err != nil || sa.Kind != "ServiceAccount" || sa.Name != "default" || sa.Namespace != "default" {
		t.Errorf("service account = %+v (%v)", sa, err)
	}
	// Each document decodes strictly into its kind; the bindings are what
	// kube-apiserver's kubelet client and the bootstrap tokens need.
	bindings := map[string]rbacv1.ClusterRoleBinding{}
	cms := map[string]corev1.ConfigMap{}
	var role rbacv1.Role
	for _, d := range docs[1:] {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(d), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ClusterRoleBinding":
			var crb rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(d), &crb); err != nil {
				t.Fatal(err)
			}
			bindings[crb.RoleRef.Name] = crb
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict([]byte(d), &cm); err != nil {
				t.Fatal(err)
			}
			cms[cm.Namespace+"/"+cm.Name] = cm
		case "Role":
			if err := yaml.UnmarshalStrict([]byte(d), &role); err != nil {
				t.Fatal(err)
			}
		case "ClusterRole":
			var cr rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(d), &cr); err != nil {
				t.Fatal(err)
			}
			// The token may read nodes (join's name and address check) and
			// nothing else.
			if cr.Name != "usernode:get-nodes" || len(cr.Rules) != 1 || strings.Join(cr.Rules[0].Resources, ",") != "nodes" || strings.Join(cr.Rules[0].Verbs, ",") != "get,list" {
				t.Errorf("unexpected ClusterRole %+v", cr)
			}
		case "ServiceAccount":
			// The controller-manager's, made ahead of it.
			var sa corev1.ServiceAccount
			if err := yaml.UnmarshalStrict([]byte(d), &sa); err != nil || sa.Namespace != "kube-system" || !slices.Contains(ControllerServiceAccounts, sa.Name) {
				t.Errorf("unexpected ServiceAccount (%v):\n%s", err, d)
			}
		case "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
		default:
			t.Errorf("unexpected %s:\n%s", meta.Kind, d)
		}
	}
	if crb := bindings["system:kubelet-api-admin"]; len(crb.Subjects) != 1 || crb.Subjects[0].Name != pki.APIServerKubeletClientUser || crb.Subjects[0].Kind != "User" {
		t.Errorf("kubelet API binding = %+v", crb)
	}
	for role, group := range map[string]string{
		"system:node-bootstrapper": bootstraptoken.Group,
		"system:certificates.k8s.io:certificatesigningrequests:nodeclient":     bootstraptoken.Group,
		"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient": "system:nodes",
		"system:node-proxier": "system:nodes",
		"usernode:get-nodes":  bootstraptoken.Group,
	} {
		if crb := bindings[role]; len(crb.Subjects) != 1 || crb.Subjects[0].Name != group || crb.Subjects[0].Kind != "Group" {
			t.Errorf("%s bound to %+v, want group %s", role, crb.Subjects, group)
		}
	}
	info := cms["kube-public/cluster-info"]
	kc := info.Data["kubeconfig"]
	if !strings.Contains(kc, "server: https://198.51.100.1:6443") || !strings.Contains(kc, "certificate-authority-data:") || strings.Contains(kc, "client-") {
		t.Errorf("cluster-info = %+v", info)
	}
	// The cluster section a worker takes, as the cluster resolved it.
	var got cluster.ClusterConfig
	if err := yaml.UnmarshalStrict([]byte(cms["kube-public/"+cluster.SharedConfigMap].Data[cluster.SharedKey]), &got); err != nil || got != shared {
		t.Errorf("%s = %+v (%v), want %+v", cluster.SharedConfigMap, got, err, shared)
	}
	// The bootstrappers read those two ConfigMaps and nothing else.
	if len(role.Rules) != 1 || strings.Join(role.Rules[0].ResourceNames, ",") != "cluster-info,"+cluster.SharedConfigMap || strings.Join(role.Rules[0].Verbs, ",") != "get" {
		t.Errorf("kube-public role %+v", role.Rules)
	}
	if len(cms) != 2 {
		t.Errorf("ConfigMaps %v", cms)
	}
}
