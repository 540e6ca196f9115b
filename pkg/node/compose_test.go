package node

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
)

// render resolves cfg, plans the node under a temporary root as `up` does
// inside the node, runs the in-process steps (the CNI's), and returns
// every file written and every argv, as text.
func render(t *testing.T, cfg cluster.Config) (files map[string]string, argv string) {
	t.Helper()
	root, steps := plan(t, cfg, nil)
	var names []string
	for _, s := range steps {
		names = append(names, s.Name)
		if s.Run != nil {
			if err := s.Run(context.Background()); err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
		}
		argv += strings.Join(s.Argv, " ") + "\n"
		if s.Ready != nil {
			argv += s.Ready.URL + "\n"
		}
	}
	want := []string{"containerd", "image-import-0", "image-import-1", "etcd", "kube-apiserver", "bootstrap-rbac",
		"kube-controller-manager", "kube-scheduler", "coredns-objects", "coredns", "kubelet", "cni", "kube-proxy"}
	if cfg.Metrics {
		want = append(want, "metrics-server-objects", "metrics-server")
	}
	if !slices.Equal(names, want) {
		t.Errorf("steps %v, want %v", names, want)
	}
	files = map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".tar") {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files["/"+rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, argv
}

// plan resolves cfg, lets edit change the model (and write files under
// root first), and plans the node under a temporary root as `up` does
// inside the node.
func plan(t *testing.T, cfg cluster.Config, edit func(cl *cluster.Cluster, root string)) (string, []supervise.Step) {
	t.Helper()
	cluster.SetDefaults(&cfg)
	cl, err := cfg.Resolve(cluster.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cl.KubernetesVersion = "v1.37.2"
	root := t.TempDir()
	if edit != nil {
		edit(cl, root)
	}
	// containerd's config format follows `containerd --version`; this
	// stands in for the binary's answer.
	ctd := filepath.Join(t.TempDir(), "containerd")
	if err := os.WriteFile(ctd, []byte("#!/bin/sh\necho containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	comps, _, err := Components(cl.Self())
	if err != nil {
		t.Fatal(err)
	}
	bins := component.Binaries{}
	for _, tool := range Tools(comps) {
		bins[tool.Name] = "/bin/" + tool.Name
	}
	bins["containerd"] = ctd
	steps, err := Plan(cl, Build{Binaries: bins, Root: root, API: FixedPodCIDR(FirstNodeCIDR(cl))})
	if err != nil {
		t.Fatal(err)
	}
	return root, steps
}

// What each step waits for: the runtime and etcd nothing, everything that
// needs the API kube-apiserver and no more, so the supervisor starts them
// together; a worker's steps never name the control plane's.
func TestStepsWaitForWhatTheyNeed(t *testing.T) {
	after := func(steps []supervise.Step) map[string]string {
		m := map[string]string{}
		for _, s := range steps {
			if s.After == nil {
				t.Errorf("%s: nil After", s.Name)
			}
			m[s.Name] = strings.Join(s.After, ",")
		}
		return m
	}
	_, steps := plan(t, cluster.Config{}, nil)
	want := map[string]string{
		"containerd": "", "etcd": "",
		"image-import-0": "containerd", "image-import-1": "containerd",
		"kube-apiserver": "etcd",
		"bootstrap-rbac": "kube-apiserver", "kube-controller-manager": "kube-apiserver",
		"kube-scheduler": "kube-apiserver", "coredns-objects": "kube-apiserver",
		"coredns":    "coredns-objects",
		"kubelet":    "containerd,image-import-0,image-import-1,kube-apiserver",
		"cni":        "kube-apiserver",
		"kube-proxy": "kube-apiserver,coredns-objects",
	}
	if got := after(steps); !maps.Equal(got, want) {
		t.Errorf("control plane: After = %v\nwant %v", got, want)
	}

	_, steps = plan(t, cluster.Config{}, func(cl *cluster.Cluster, root string) {
		cl.Self().Role = cluster.Worker
		// What `join` leaves: the cluster's CA.
		ca := filepath.Join(root, PKIDir, "ca.crt")
		if err := os.MkdirAll(filepath.Dir(ca), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ca, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	want = map[string]string{
		"containerd": "", "image-import-0": "containerd", "image-import-1": "containerd",
		"kubelet":    "containerd,image-import-0,image-import-1",
		"cni":        "kubelet",
		"kube-proxy": "cni",
		// A worker is multi-node: it says which host it is on.
		"node-host-ip": "kubelet",
	}
	if got := after(steps); !maps.Equal(got, want) {
		t.Errorf("worker: After = %v\nwant %v", got, want)
	}
}

func certIPs(t *testing.T, pemText string) []string {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// Every renderer takes its values from the one model: change the service
// CIDR, the pod CIDR, the node's subnet and the domain once, render the
// whole node, and every file and flag carries the new values and none of
// the defaults.
func TestEveryRendererFollowsTheModel(t *testing.T) {
	def, defArgv := render(t, cluster.Config{})
	for _, v := range []string{"10.96.0.10", "10.0.2.100", "10.88.0.0/24", "cluster.local"} {
		if !strings.Contains(defArgv+strings.Join(mapValues(def), ""), v) {
			t.Fatalf("default render does not carry %s: the test would prove nothing", v)
		}
	}

	files, argv := render(t, cluster.Config{NodeSubnet: "10.0.5.0/24", Cluster: cluster.ClusterConfig{
		ServiceCIDR: "10.100.0.0/16", PodCIDR: "10.244.0.0/16", DNSDomain: "corp.internal"}})
	want := map[string][]string{
		"/etc/usernode/kubelet.yaml":          {"- 10.100.0.10", "clusterDomain: corp.internal"},
		"/etc/usernode/kube-proxy.yaml":       {"clusterCIDR: 10.244.0.0/16", "- 10.0.5.100/32"},
		"/etc/usernode/Corefile":              {"bind 10.0.5.100", "kubernetes corp.internal in-addr.arpa"},
		"/etc/usernode/coredns.yaml":          {"clusterIP: 10.100.0.10", "- 10.0.5.100"},
		"/etc/cni/net.d/10-usernode.conflist": {`"subnet": "10.244.0.0/24"`},
	}
	for path, subs := range want {
		for _, s := range subs {
			if !strings.Contains(files[path], s) {
				t.Errorf("%s lacks %q:\n%s", path, s, files[path])
			}
		}
	}
	for _, flag := range []string{"--node-ip=10.0.5.100", "--advertise-address=10.0.5.100",
		"--service-cluster-ip-range=10.100.0.0/16", "--cluster-cidr=10.244.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.corp.internal"} {
		if !strings.Contains(argv, flag) {
			t.Errorf("no step has %s:\n%s", flag, argv)
		}
	}
	for _, kc := range []string{"admin", "kubelet", "controller-manager", "scheduler", "kube-proxy", "coredns"} {
		if f := files["/etc/usernode/"+kc+".kubeconfig"]; !strings.Contains(f, "server: https://127.0.0.1:6443") {
			t.Errorf("%s.kubeconfig does not name the local API server:\n%s", kc, f)
		}
	}
	api := certIPs(t, files["/var/lib/usernode/pki/apiserver.crt"])
	for _, ip := range []string{"10.100.0.1", "10.0.5.100", "127.0.0.1"} {
		if !slices.Contains(api, ip) {
			t.Errorf("apiserver cert IPs %v lack %s", api, ip)
		}
	}
	if kl := certIPs(t, files["/var/lib/usernode/pki/kubelet.crt"]); !slices.Contains(kl, "10.0.5.100") {
		t.Errorf("kubelet cert IPs %v lack the node IP", kl)
	}
	// Nothing anywhere still says a default.
	for _, old := range []string{"10.96.", "10.0.2.", "10.88.", "cluster.local"} {
		if strings.Contains(argv, old) {
			t.Errorf("a step still carries %s:\n%s", old, argv)
		}
		for path, text := range files {
			if strings.Contains(text, old) {
				t.Errorf("%s still carries %s", path, old)
			}
		}
	}
}

// The host IP the API is reached at beyond loopback is named by the API
// server's certificate.
func TestHostIPInAPIServerCert(t *testing.T) {
	cfg := cluster.Config{HostIP: "127.0.0.1"}
	cluster.SetDefaults(&cfg)
	cl, err := cfg.Resolve(cluster.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cl.API.Host = cl.Self().Subnet.Addr().Next().Next() // any non-loopback address
	cl.KubernetesVersion = "v1.37.2"
	root := t.TempDir()
	_, err = Plan(cl, Build{Binaries: component.Binaries{"containerd": "/bin/false"}, Root: root, API: FixedPodCIDR(FirstNodeCIDR(cl))})
	// containerd's version cannot be read from /bin/false, but the PKI is
	// written before any component.
	if err == nil || !strings.Contains(err.Error(), "containerd") {
		t.Fatalf("want containerd's version error, got %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(root, PKIDir, "apiserver.crt"))
	if ips := certIPs(t, string(b)); !slices.Contains(ips, cl.API.Host.String()) {
		t.Errorf("apiserver cert IPs %v lack the host IP %s", ips, cl.API.Host)
	}
}

// A worker runs no control plane.
func TestRoles(t *testing.T) {
	cl := cluster.DefaultCluster()
	n := *cl.Self()
	n.Role = cluster.Worker
	comps, rt, err := Components(&n)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range comps {
		names = append(names, c.Name())
	}
	if !slices.Equal(names, []string{"containerd", "kubelet", "cni", "kube-proxy"}) || rt.Name != "containerd" {
		t.Errorf("worker components %v (runtime %s)", names, rt.Name)
	}
	n.CRI = "cri-o"
	if _, _, err := Components(&n); err == nil || !strings.Contains(err.Error(), "known are containerd") {
		t.Errorf("unknown runtime: %v", err)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestHostPorts(t *testing.T) {
	cl := cluster.DefaultCluster()
	n := cl.Self()
	if got := hostPorts(cl); len(got) != 2 || got[0].HostIP.String() != "127.0.0.1" {
		t.Errorf("loopback host IP: %v", got)
	}
	n.HostIP = netip.MustParseAddr("198.51.100.1")
	got := hostPorts(cl)
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "198.51.100.1:6443/tcp->6443 198.51.100.1:10250/tcp->10250 127.0.0.1:6443/tcp->6443 127.0.0.1:10250/tcp->10250"; strings.Join(s, " ") != want {
		t.Errorf("host ports %q, want %q", strings.Join(s, " "), want)
	}
	// A multi-node node's VXLAN comes in at the cluster's port.
	n.CNI, cl.VXLANPort = "flannel", 9472
	if got := hostPorts(cl); got[len(got)-1].String() != "198.51.100.1:9472/udp->9472" {
		t.Errorf("VXLAN's host port: %v", got)
	}
}

// Every daemon runs with the node's GOGC, as the node's whole plan gives
// it (a step's own environment kept); oneshots keep Go's default.
func TestDaemonsRunWithTheNodesGOGC(t *testing.T) {
	_, steps := plan(t, cluster.Config{}, nil)
	daemons := 0
	for _, s := range steps {
		has := slices.Contains(s.Env, GoGC)
		for _, e := range SettledGoGC {
			if slices.Contains(s.Env, e) != has {
				t.Errorf("%s: %s and %s not together: env %v", s.Name, GoGC, e, s.Env)
			}
		}
		switch {
		case s.Oneshot && has:
			t.Errorf("oneshot %s has %s", s.Name, GoGC)
		case !s.Oneshot && !has:
			t.Errorf("daemon %s runs without %s: env %v", s.Name, GoGC, s.Env)
		case !s.Oneshot:
			daemons++
		}
	}
	// containerd, etcd, the five Kubernetes daemons, CoreDNS.
	if daemons != 8 {
		t.Errorf("%d daemons in the control plane's plan, want 8", daemons)
	}
}
