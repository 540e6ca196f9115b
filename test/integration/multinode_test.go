package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/bootstraptoken"
)

// TestControlPlaneForOtherHosts: a node started on host A with --host-ip
// serves other hosts. From host B (another network namespace on the same
// LAN, 198.51.100.0/24) the API answers at A's address with a certificate
// that names it and chains to the CA the join command pins; a bootstrap
// token from `token create` reads cluster-info there; and the kubelet's
// port answers but lets nobody in anonymously. This is the half of
// multi-node that `usernode join` will stand on.
func TestControlPlaneForOtherHosts(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	hostA, hostB := testutil.TwoHosts(t)
	c := &cluster{t: t, env: u.NewEnv(t), name: "cpa", kubectlBin: filepath.Join(bins, "kubectl"), api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp"))}
	c.env.NetNS = hostA.NetNS
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	c.extra = []string{"--host-ip", hostA.IP.String()}
	t.Cleanup(func() {
		if r := c.down("--purge"); r.Code != 0 {
			t.Errorf("down: %s", r)
		}
	})
	if r := c.up(); r.Code != 0 {
		t.Fatalf("up on host A: %s", r)
	}

	bin := testutil.Binary(t)
	r := c.env.Run(t, 30*time.Second, bin, "token", "create", "--name", c.name)
	f := strings.Fields(r.Stdout)
	if r.Code != 0 || len(f) != 7 {
		t.Fatalf("token create: %s", r)
	}
	server := fmt.Sprintf("https://%s:%d", hostA.IP, c.api)
	if f[2] != server {
		t.Errorf("the join command names %s, want host A's %s", f[2], server)
	}
	ca := filepath.Join(c.env.DataHome, "usernode", c.name, "var/lib/usernode/pki/ca.crt")
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	if pin, _ := bootstraptoken.CAHash(caPEM); f[6] != pin {
		t.Errorf("join pins %s, the CA is %s", f[6], pin)
	}

	// From host B, as a joining host would: verify the server against the
	// pinned CA by name of A's address (kubectl checks the SAN).
	out, err := hostB.In(c.kubectlBin, "--kubeconfig", os.DevNull, "--server", server, "--certificate-authority", ca,
		"--token", f[4], "get", "cm", "-n", "kube-public", "cluster-info", "-o", "jsonpath={.data.kubeconfig}").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "server: "+server) {
		t.Errorf("cluster-info from host B: %v\n%s", err, out)
	}
	// The kubelet's port, from host B: a certificate from the cluster CA
	// for the node's name, and no anonymous access.
	code, err := hostB.In("curl", "-s", "-o", os.DevNull, "-w", "%{http_code}", "-m", "10", "--cacert", ca,
		"--resolve", fmt.Sprintf("%s:%d:%s", c.name, c.klt, hostA.IP), fmt.Sprintf("https://%s:%d/pods", c.name, c.klt)).Output()
	if err != nil || (string(code) != "401" && string(code) != "403") {
		t.Errorf("anonymous GET of the kubelet from host B: %q %v", code, err)
	}
	// And the host's own loopback still works on host A.
	out, err = hostA.In("curl", "-s", "-o", os.DevNull, "-w", "%{http_code}", "-m", "10", "--cacert", ca, fmt.Sprintf("https://127.0.0.1:%d/readyz", c.api)).Output()
	if err != nil || string(out) != "401" {
		t.Errorf("anonymous GET of the API on host A's 127.0.0.1: %q %v", out, err)
	}
}

// hostCluster is a cluster whose API only host A's namespace reaches:
// kubectl runs there.
type hostCluster struct {
	*cluster
	host *testutil.Host
}

func (c *hostCluster) kubectl(args ...string) (string, error) {
	out, err := c.host.In(c.kubectlBin, append([]string{"--kubeconfig", c.kubeconfig, "--request-timeout=60s"}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *hostCluster) mustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestJoin: host A runs `up --host-ip`, host B runs the `usernode join`
// line `token create` printed there (each host a network namespace on one
// LAN, each node as the non-root user). The worker comes up Ready through
// TLS bootstrap; the control plane gives it its host IP as ExternalIP and
// approves its serving certificate, so logs and exec reach a pod on it
// through B's forwarded kubelet port. Its credentials stop at what the
// Node authorizer allows. Bad joins are refused with the fix and leave
// nothing behind on host B.
func TestJoin(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	hostA, hostB := testutil.TwoHosts(t)
	bin := testutil.Binary(t)
	cp := &hostCluster{cluster: &cluster{t: t, env: u.NewEnv(t), name: "mna", kubectlBin: filepath.Join(bins, "kubectl"), api: 6443, klt: 10250}, host: hostA}
	cp.env.NetNS = hostA.NetNS
	cp.kubeconfig = filepath.Join(cp.env.DataHome, "usernode", cp.name, "kubeconfig")
	cp.extra = []string{"--host-ip", hostA.IP.String()}
	t.Cleanup(func() {
		if r := cp.down("--purge"); r.Code != 0 {
			t.Errorf("down on host A: %s", r)
		}
	})
	if r := cp.up(); r.Code != 0 {
		t.Fatalf("up on host A: %s", r)
	}
	r := cp.env.Run(t, 30*time.Second, bin, "token", "create", "--name", cp.name)
	joinCmd := strings.Fields(r.Stdout)
	if r.Code != 0 || len(joinCmd) != 7 {
		t.Fatalf("token create: %s", r)
	}
	server, token, pin := joinCmd[2], joinCmd[4], joinCmd[6]

	wEnv := u.NewEnv(t)
	wEnv.NetNS = hostB.NetNS
	const worker = "mnb"
	wState := filepath.Join(wEnv.DataHome, "usernode", worker)
	join := func(name string, args ...string) testutil.Result {
		return wEnv.Run(t, 5*time.Minute, bin, append([]string{"join", "-d", "--name", name, "--bin-dir", bins}, args...)...)
	}

	t.Run("bad input", func(t *testing.T) {
		otherPin := "sha256:" + strings.Repeat("ab", 32)
		wrongToken := "abcdef.0123456789abcdef"
		for _, c := range []struct {
			name string
			args []string
			want string
		}{
			{"wrong CA pin", []string{server, "--token", token, "--ca-cert-hash", otherPin}, "pin"},
			{"wrong token", []string{server, "--token", wrongToken, "--ca-cert-hash", pin}, "token"},
			{"unreachable server", []string{"https://198.51.100.9:6443", "--token", token, "--ca-cert-hash", pin}, "198.51.100.9"},
			{"host IP not here", []string{server, "--token", token, "--ca-cert-hash", pin, "--host-ip", "198.51.100.77"}, "not an address of this host"},
			{"a name the cluster has", []string{server, "--token", token, "--ca-cert-hash", pin, "--name", cp.name}, "already has a node named"},
		} {
			name := worker
			if len(c.args) > 4 && c.args[3] == "--name" {
				name = c.args[4]
			}
			r := join(name, c.args...)
			if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("%s: exit %d, want an error naming %q:\n%s", c.name, r.Code, c.want, r.Stderr)
			}
			if _, err := os.Stat(filepath.Join(wEnv.DataHome, "usernode", name)); err == nil {
				t.Errorf("%s: left %s behind", c.name, filepath.Join(wEnv.DataHome, "usernode", name))
			}
		}
	})

	r = join(worker, server, "--token", token, "--ca-cert-hash", pin)
	t.Cleanup(func() {
		if r := wEnv.Run(t, 5*time.Minute, bin, "down", "--name", worker, "--purge"); r.Code != 0 {
			t.Errorf("down on host B: %s", r)
		}
	})
	if r.Code != 0 {
		t.Fatalf("join on host B: %s", r)
	}

	t.Run("nodes", func(t *testing.T) {
		var nodes corev1.NodeList
		if err := json.Unmarshal([]byte(cp.mustKubectl("get", "nodes", "-o", "json")), &nodes); err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 2 {
			t.Fatalf("%d nodes", len(nodes.Items))
		}
		internal := map[string]bool{}
		for _, n := range nodes.Items {
			addr := map[corev1.NodeAddressType]string{}
			for _, a := range n.Status.Addresses {
				addr[a.Type] = a.Address
			}
			want := map[string]string{cp.name: hostA.IP.String(), worker: hostB.IP.String()}[n.Name]
			if addr[corev1.NodeExternalIP] != want {
				t.Errorf("node %s ExternalIP %q, want its host's %s", n.Name, addr[corev1.NodeExternalIP], want)
			}
			if internal[addr[corev1.NodeInternalIP]] {
				t.Errorf("node %s shares InternalIP %s", n.Name, addr[corev1.NodeInternalIP])
			}
			internal[addr[corev1.NodeInternalIP]] = true
			for _, taint := range n.Spec.Taints {
				if taint.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
					t.Errorf("node %s still tainted uninitialized", n.Name)
				}
			}
			ready := false
			for _, c := range n.Status.Conditions {
				ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}
			if !ready {
				t.Errorf("node %s not Ready: %+v", n.Name, n.Status.Conditions)
			}
		}
	})

	t.Run("logs and exec on the worker", func(t *testing.T) {
		cp.mustKubectl("run", "onb", "--image=docker.io/library/busybox:usernode", "--image-pull-policy=Never", "--restart=Never",
			`--overrides={"spec":{"nodeName":"`+worker+`"}}`, "--", "sh", "-c", "echo hello-from-worker; exec sleep 3600")
		waitFor(t, "the pod on the worker Running", 3*time.Minute, func() (bool, string) {
			out, _ := cp.kubectl("get", "pod", "onb", "-o", "jsonpath={.status.phase}")
			return out == "Running", out
		})
		waitFor(t, "kubectl logs of the worker's pod", time.Minute, func() (bool, string) {
			out, err := cp.kubectl("logs", "onb")
			return err == nil && strings.Contains(out, "hello-from-worker"), out
		})
		if out, err := cp.kubectl("exec", "onb", "--", "cat", "/proc/1/cmdline"); err != nil || !strings.Contains(out, "sleep") {
			t.Errorf("kubectl exec on the worker: %v %s", err, out)
		}
	})

	// Pods on both nodes: Flannel's VXLAN between the hosts carries their
	// traffic, addressed pod to pod.
	// crossHost runs a web pod on each node (named with suffix) and checks
	// TCP and full-size ICMP between them both ways.
	crossHost := func(t *testing.T, suffix string) map[string]string {
		a, b := "weba"+suffix, "webb"+suffix
		for _, p := range []struct{ name, node string }{{a, cp.name}, {b, worker}} {
			cp.mustKubectl("run", p.name, "--image=docker.io/library/busybox:usernode", "--image-pull-policy=Never", "--restart=Never",
				"--labels=app="+p.name, `--overrides={"spec":{"nodeName":"`+p.node+`"}}`, "--",
				"sh", "-c", "echo served-by-"+p.name+" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
		}
		ips := map[string]string{}
		for _, name := range []string{a, b} {
			waitFor(t, name+" Running", 3*time.Minute, func() (bool, string) {
				out, _ := cp.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP}")
				f := strings.Fields(out)
				if len(f) == 2 && f[0] == "Running" {
					ips[name] = f[1]
					return true, out
				}
				return false, out
			})
		}
		if ips[a] == ips[b] {
			t.Fatalf("both pods have IP %s", ips[a])
		}
		for from, to := range map[string]string{b: a, a: b} {
			waitFor(t, "TCP from "+from+" to "+to, time.Minute, func() (bool, string) {
				out, err := cp.kubectl("exec", from, "--", "wget", "-q", "-O", "-", "http://"+ips[to]+":8080/")
				return err == nil && strings.Contains(out, "served-by-"+to), out
			})
			// A full-size ICMP packet: the pods' MTU fits the VXLAN path.
			if out, err := cp.kubectl("exec", from, "--", "busybox", "ping", "-c", "2", "-W", "5", "-s", "1422", ips[to]); err != nil {
				t.Errorf("ICMP from %s to %s: %v %s", from, to, err, out)
			}
		}
		return ips
	}
	nodesReady := func(t *testing.T) {
		waitFor(t, "both nodes Ready", 3*time.Minute, func() (bool, string) {
			out, _ := cp.kubectl("get", "nodes", "--no-headers")
			return strings.Count(out, " Ready ") == 2, out
		})
	}

	var podIPs map[string]string
	t.Run("pod network across hosts", func(t *testing.T) {
		podIPs = crossHost(t, "")
		// A ClusterIP Service whose only pod is on the other node.
		cp.mustKubectl("expose", "pod", "weba", "--port=80", "--target-port=8080", "--name=svca")
		waitFor(t, "the worker's pod reaching a Service whose pod is on the control plane", time.Minute, func() (bool, string) {
			// By IP: busybox-static's own name lookups crash (FACTS).
			ip, _ := cp.kubectl("get", "svc", "svca", "-o", "jsonpath={.spec.clusterIP}")
			out, err := cp.kubectl("exec", "webb", "--", "wget", "-q", "-O", "-", "http://"+ip+"/")
			return err == nil && strings.Contains(out, "served-by-weba"), out
		})
		// DNS from the worker's pod: CoreDNS runs on the control plane,
		// behind host A's NAT, and answers through A's forwarded DNS port.
		svcIP := strings.TrimSpace(cp.mustKubectl("get", "svc", "svca", "-o", "jsonpath={.spec.clusterIP}"))
		waitFor(t, "DNS from the worker's pod", time.Minute, func() (bool, string) {
			out, err := cp.kubectl("exec", "webb", "--", "nslookup", "svca.default.svc.cluster.local", "10.96.0.10")
			return err == nil && strings.Contains(out, svcIP), out
		})
		// A NodePort on host B's address, served by the pod on host A.
		cp.mustKubectl("expose", "pod", "weba", "--port=80", "--target-port=8080", "--name=npa", "--type=NodePort")
		np := strings.TrimSpace(cp.mustKubectl("get", "svc", "npa", "-o", "jsonpath={.spec.ports[0].nodePort}"))
		waitFor(t, "host B's NodePort served by host A's pod", time.Minute, func() (bool, string) {
			out, err := hostB.In("curl", "-s", "-m", "5", "http://127.0.0.1:"+np+"/").CombinedOutput()
			return err == nil && strings.Contains(string(out), "served-by-weba"), string(out)
		})
	})

	// Without host B's VXLAN forward, host A's pod cannot reach B's: pod
	// traffic between the hosts is VXLAN to that port and nothing else.
	t.Run("the path is VXLAN", func(t *testing.T) {
		if podIPs == nil {
			t.Skip("no pods: the pod network test failed")
		}
		vxlan := fmt.Sprintf("%s:8472:8472/udp", hostB.IP)
		get := func() (string, error) {
			return cp.kubectl("exec", "weba", "--", "busybox", "timeout", "5", "wget", "-q", "-O", "-", "http://"+podIPs["webb"]+":8080/")
		}
		if r := wEnv.Run(t, 30*time.Second, bin, "port", "rm", "--name", worker, vxlan); r.Code != 0 {
			t.Fatalf("port rm %s: %s", vxlan, r)
		}
		if out, err := get(); err == nil {
			t.Errorf("host A's pod reached host B's with B's VXLAN port closed: %s", out)
		}
		if r := wEnv.Run(t, 30*time.Second, bin, "port", "add", "--name", worker, vxlan); r.Code != 0 {
			t.Fatalf("port add %s: %s", vxlan, r)
		}
		waitFor(t, "host A's pod reaching B's again", time.Minute, func() (bool, string) {
			out, err := get()
			return err == nil && strings.Contains(out, "served-by-webb"), out
		})
	})

	// Both hosts stop and start again, in each order; the cluster comes
	// back and pods talk across the hosts again. The worker restarts with
	// a plain `up`: its state dir remembers the join.
	t.Run("restart", func(t *testing.T) {
		upWorker := func() testutil.Result {
			return wEnv.Run(t, 6*time.Minute, bin, "up", "-d", "--name", worker, "--bin-dir", bins)
		}
		down := func(host string, r testutil.Result) {
			if r.Code != 0 {
				t.Fatalf("down on %s: %s", host, r)
			}
		}
		down("host B", wEnv.Run(t, 5*time.Minute, bin, "down", "--name", worker))
		down("host A", cp.down())
		if r := cp.up(); r.Code != 0 {
			t.Fatalf("up on host A: %s", r)
		}
		if r := upWorker(); r.Code != 0 {
			t.Fatalf("up on host B: %s", r)
		}
		nodesReady(t)
		crossHost(t, "-r1")

		// The control plane goes first and comes back last: the worker's
		// kubelet waits for it.
		down("host A", cp.down())
		down("host B", wEnv.Run(t, 5*time.Minute, bin, "down", "--name", worker))
		done := make(chan testutil.Result, 1)
		go func() { done <- upWorker() }()
		time.Sleep(5 * time.Second)
		if r := cp.up(); r.Code != 0 {
			t.Fatalf("up on host A: %s", r)
		}
		if r := <-done; r.Code != 0 {
			t.Fatalf("up on host B before host A: %s", r)
		}
		nodesReady(t)
		crossHost(t, "-r2")
	})

	t.Run("security", func(t *testing.T) {
		cp.mustKubectl("create", "secret", "generic", "nobodys", "--from-literal=k=v")
		ca := filepath.Join(wState, "var/lib/usernode/pki/ca.crt")
		// A symlink to an absolute path inside the node.
		cert := filepath.Join(wState, "var/lib/kubelet/pki/kubelet-client-current.pem")
		if target, err := os.Readlink(cert); err == nil && filepath.IsAbs(target) {
			cert = filepath.Join(wState, target)
		}
		get := func(auth []string, path string) string {
			args := append([]string{"-s", "-o", os.DevNull, "-w", "%{http_code}", "-m", "10", "--cacert", ca}, auth...)
			out, _ := hostB.In("curl", append(args, server+path)...).Output()
			return string(out)
		}
		// The worker's own identity: the Node authorizer allows what its
		// pods need, not a Secret none of them mounts.
		if code := get([]string{"--cert", cert, "--key", cert}, "/api/v1/namespaces/default/secrets/nobodys"); code != "403" {
			t.Errorf("the worker's kubelet reading an unrelated Secret: HTTP %s, want 403", code)
		}
		if code := get([]string{"--cert", cert, "--key", cert}, "/api/v1/nodes/"+worker); code != "200" {
			t.Errorf("the worker's kubelet reading its own Node: HTTP %s, want 200", code)
		}
		// The token: bootstrapping only.
		for _, path := range []string{"/api/v1/namespaces/default/secrets", "/api/v1/namespaces/kube-system/pods"} {
			if code := get([]string{"-H", "Authorization: Bearer " + token}, path); code != "403" {
				t.Errorf("the bootstrap token GET %s: HTTP %s, want 403", path, code)
			}
		}
		if fi, err := os.Stat(wState); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("worker state dir %s: %v", wState, fi)
		}
	})
}
