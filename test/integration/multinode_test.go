package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/sandbox"
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

// apply applies a manifest given as text (on kubectl's stdin).
func (c *hostCluster) apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := c.host.In(c.kubectlBin, "--kubeconfig", c.kubeconfig, "--request-timeout=60s", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// must is kubectl failing t (a subtest's own) when the command does.
func (c *hostCluster) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run starts a busybox pod pinned to node that runs script.
func (c *hostCluster) run(t *testing.T, name, node, script string) {
	t.Helper()
	c.must(t, "run", name, "--image="+busybox, "--image-pull-policy=Never", "--restart=Never", "--labels=app="+name,
		`--overrides={"spec":{"nodeName":"`+node+`"}}`, "--", "sh", "-c", script)
}

// podIP waits for the pod to run and returns its IP.
func (c *hostCluster) podIP(t *testing.T, name string) string {
	t.Helper()
	var ip string
	waitFor(t, name+" Running", 3*time.Minute, func() (bool, string) {
		out, _ := c.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP}")
		f := strings.Fields(out)
		if len(f) == 2 && f[0] == "Running" {
			ip = f[1]
			return true, out
		}
		return false, out
	})
	return ip
}

const busybox = "docker.io/library/busybox:usernode"

// web serves "served-by-NAME" over HTTP on 8080.
func web(name string) string {
	return "echo served-by-" + name + " > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"
}

// statefulSet is Usernetes' multi-node smoke test: three members behind a
// headless Service, spread over the nodes, each answering by its name.
const statefulSet = `apiVersion: v1
kind: Service
metadata: {name: sts}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts}
spec:
  serviceName: sts
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: sts}}}
      containers:
      - name: web
        image: docker.io/library/busybox:usernode
        imagePullPolicy: Never
        command: [sh, -c, 'echo served-by-$(hostname) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']
`

// mover is a Deployment `down --drain` moves off the worker.
const mover = `apiVersion: apps/v1
kind: Deployment
metadata: {name: mover}
spec:
  replicas: 2
  selector: {matchLabels: {app: mover}}
  template:
    metadata: {labels: {app: mover}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: docker.io/library/busybox:usernode, imagePullPolicy: Never, command: [sleep, "3600"]}
`

// TestJoin: host A runs `up --host-ip`, host B runs the `usernode join`
// line `token create` printed there (each host a network namespace on one
// LAN, each node as a non-root user of its own). The worker comes up
// Ready through TLS bootstrap and takes the cluster's settings (here a
// service range and VXLAN port other than the defaults); the control plane
// gives it its host IP as ExternalIP and approves its serving certificate,
// so logs and exec reach a pod on it through B's forwarded kubelet port.
// Pods, Services, DNS and NodePorts work across the hosts, again after
// each restart. Its credentials stop at what the Node authorizer allows.
// Bad joins are refused with the fix and leave nothing behind on host B.
func TestJoin(t *testing.T) {
	u := testutil.Integration(t)
	u2 := testutil.Account(t, testutil.SecondUser)
	bins := testutil.K8sBin(t)
	hostA, hostB := testutil.TwoHosts(t)
	bin := testutil.Binary(t)
	cp := &hostCluster{cluster: &cluster{t: t, env: u.NewEnv(t), name: "mna", kubectlBin: filepath.Join(bins, "kubectl"), api: 6443, klt: 10250}, host: hostA}
	cp.env.NetNS = hostA.NetNS
	cp.kubeconfig = filepath.Join(cp.env.DataHome, "usernode", cp.name, "kubeconfig")
	const vxlanPort, serviceCIDR, dnsIP = "9472", "10.112.0.0/16", "10.112.0.10"
	cp.extra = []string{"--host-ip", hostA.IP.String(), "--vxlan-port", vxlanPort, "--service-cidr", serviceCIDR}
	t.Cleanup(func() {
		if r := cp.down("--purge"); r.Code != 0 {
			t.Errorf("down on host A: %s", r)
		}
	})
	if r := cp.up(); r.Code != 0 {
		t.Fatalf("up on host A: %s", r)
	}
	token := func(args ...string) []string {
		t.Helper()
		r := cp.env.Run(t, 30*time.Second, bin, append([]string{"token", "create", "--name", cp.name}, args...)...)
		f := strings.Fields(r.Stdout)
		if r.Code != 0 || len(f) != 7 {
			t.Fatalf("token create: %s", r)
		}
		return f
	}
	expired := token("--ttl", "1s")[4]
	// A token is expired once its expiration (whole seconds, RFC 3339)
	// is past: a join less than a second or two after it was made may
	// still pass (seen once, the failed joins before it being fast).
	expiredBy := time.Now().Add(2 * time.Second)
	joinCmd := token()
	server, tok, pin := joinCmd[2], joinCmd[4], joinCmd[6]

	wEnv := u2.NewEnv(t)
	wEnv.NetNS = hostB.NetNS
	const worker = "mnb"
	wState := filepath.Join(wEnv.DataHome, "usernode", worker)
	join := func(name string, args ...string) testutil.Result {
		return wEnv.Run(t, 5*time.Minute, bin, append([]string{"join", "-d", "--name", name, "--bin-dir", bins}, args...)...)
	}
	wrun := func(timeout time.Duration, args ...string) testutil.Result {
		return wEnv.Run(t, timeout, bin, append(args, "--name", worker)...)
	}

	t.Run("bad input", func(t *testing.T) {
		cpIP := strings.TrimSpace(cp.must(t, "get", "node", cp.name, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
		cpSubnet := netip.PrefixFrom(netip.MustParseAddr(cpIP), 24).Masked().String()
		for _, c := range []struct {
			what, name string
			args       []string
			want       string
		}{
			{"wrong CA pin", worker, []string{server, "--token", tok, "--ca-cert-hash", "sha256:" + strings.Repeat("ab", 32)}, "pin"},
			{"wrong token", worker, []string{server, "--token", "abcdef.0123456789abcdef", "--ca-cert-hash", pin}, "token"},
			{"expired token", worker, []string{server, "--token", expired, "--ca-cert-hash", pin}, "expired"},
			{"unreachable server", worker, []string{"https://198.51.100.9:6443", "--token", tok, "--ca-cert-hash", pin}, "198.51.100.9"},
			{"host IP not here", worker, []string{server, "--token", tok, "--ca-cert-hash", pin, "--host-ip", "198.51.100.77"}, "not an address of this host"},
			{"a name the cluster has", cp.name, []string{server, "--token", tok, "--ca-cert-hash", pin}, "already has a node named"},
			{"a node subnet the cluster has", worker, []string{server, "--token", tok, "--ca-cert-hash", pin, "--node-subnet", cpSubnet}, "two nodes would share an address"},
			{"another pod range than the cluster's", worker, []string{server, "--token", tok, "--ca-cert-hash", pin, "--pod-cidr", "10.88.0.0/16"}, "a worker takes its cluster's"},
		} {
			if c.what == "expired token" {
				time.Sleep(time.Until(expiredBy))
			}
			r := join(c.name, c.args...)
			if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("%s: exit %d, want an error naming %q:\n%s", c.what, r.Code, c.want, r.Stderr)
			}
			if _, err := os.Stat(filepath.Join(wEnv.DataHome, "usernode", c.name)); err == nil {
				t.Errorf("%s: left %s behind", c.what, filepath.Join(wEnv.DataHome, "usernode", c.name))
			}
			if procs, _ := testutil.ProcsOf(u2.UID); len(procs) > 0 {
				t.Errorf("%s: left processes of %s behind: %v", c.what, u2.Name, procs)
			}
		}
	})

	r := join(worker, server, "--token", tok, "--ca-cert-hash", pin)
	t.Cleanup(func() {
		wEnv.SaveLogs(t, worker)
		if r := wrun(5*time.Minute, "down", "--purge"); r.Code != 0 {
			t.Errorf("down on host B: %s", r)
		}
	})
	if r.Code != 0 {
		t.Fatalf("join on host B: %s", r)
	}

	checkAll := func(t *testing.T, round string) {
		t.Run("nodes", func(t *testing.T) {
			checkNodes(t, cp, map[string]string{cp.name: hostA.IP.String(), worker: hostB.IP.String()})
		})
		t.Run("status", func(t *testing.T) {
			// Each host's status lists the cluster's nodes as the API
			// reports them (the worker's kubelet may list Nodes), its
			// own marked.
			for _, c := range []struct {
				env  *testutil.Env
				name string
				want []string
			}{{cp.env, cp.name, []string{cp.name, worker}}, {wEnv, worker, []string{cp.name, worker}}} {
				r := c.env.Run(t, 30*time.Second, bin, "status", "--name", c.name, "--json")
				var st struct {
					Nodes []struct {
						Name, Ready, ExternalIP string
						Self                    bool
					}
					NodesError string
				}
				if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || r.Code != 0 {
					t.Fatalf("status on %s: %v %s", c.name, err, r)
				}
				var got []string
				for _, n := range st.Nodes {
					got = append(got, n.Name)
					if n.Ready != "True" || n.ExternalIP == "" || n.Self != (n.Name == c.name) {
						t.Errorf("status on %s: node %+v", c.name, n)
					}
				}
				if strings.Join(got, " ") != strings.Join(c.want, " ") {
					t.Errorf("status on %s lists %v (%s), want %v", c.name, got, st.NodesError, c.want)
				}
			}
			r := cp.env.Run(t, 30*time.Second, bin, "status", "--name", cp.name)
			if !regexp.MustCompile(`(?m)^\s+` + worker + `\s+Ready\s+\S+\s+` + regexp.QuoteMeta(hostB.IP.String()) + `\s`).MatchString(r.Stdout) {
				t.Errorf("status on the control plane does not show %s Ready at %s:\n%s", worker, hostB.IP, r.Stdout)
			}
		})
		t.Run("logs and exec on the worker", func(t *testing.T) {
			name := "onb" + round
			cp.run(t, name, worker, "echo hello-from-worker; exec sleep 3600")
			cp.podIP(t, name)
			waitFor(t, "kubectl logs of the worker's pod", time.Minute, func() (bool, string) {
				out, err := cp.kubectl("logs", name)
				return err == nil && strings.Contains(out, "hello-from-worker"), out
			})
			if out, err := cp.kubectl("exec", name, "--", "cat", "/proc/1/cmdline"); err != nil || !strings.Contains(out, "sleep") {
				t.Errorf("kubectl exec on the worker: %v %s", err, out)
			}
		})
		a, b := "weba"+round, "webb"+round
		t.Run("pod network across hosts", func(t *testing.T) { checkPodNetwork(t, cp, a, b, map[string]string{a: cp.name, b: worker}) })
		t.Run("services", func(t *testing.T) {
			// A ClusterIP Service whose only pod is on the other node.
			svc := "svca" + round
			cp.must(t, "expose", "pod", a, "--port=80", "--target-port=8080", "--name="+svc)
			ip := strings.TrimSpace(cp.must(t, "get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"))
			if !netip.MustParsePrefix(serviceCIDR).Contains(netip.MustParseAddr(ip)) {
				t.Errorf("Service IP %s is not in the cluster's range %s", ip, serviceCIDR)
			}
			waitFor(t, "the worker's pod reaching a Service whose pod is on the control plane", time.Minute, func() (bool, string) {
				// By IP: busybox-static's own name lookups crash (FACTS).
				out, err := cp.kubectl("exec", b, "--", "wget", "-q", "-O", "-", "http://"+ip+"/")
				return err == nil && strings.Contains(out, "served-by-"+a), out
			})
			// DNS from the worker's pod, at the cluster's DNS IP: CoreDNS
			// runs on the control plane, behind host A's NAT, and answers
			// through A's forwarded DNS port.
			waitFor(t, "DNS from the worker's pod", time.Minute, func() (bool, string) {
				out, err := cp.kubectl("exec", b, "--", "nslookup", svc+".default.svc.cluster.local", dnsIP)
				return err == nil && strings.Contains(out, ip), out
			})
			// A NodePort on host B's address, served by the pod on host A.
			np := "npa" + round
			cp.must(t, "expose", "pod", a, "--port=80", "--target-port=8080", "--name="+np, "--type=NodePort")
			port := strings.TrimSpace(cp.must(t, "get", "svc", np, "-o", "jsonpath={.spec.ports[0].nodePort}"))
			waitFor(t, "host B's NodePort served by host A's pod", time.Minute, func() (bool, string) {
				out, err := hostB.In("curl", "-s", "-m", "5", "http://127.0.0.1:"+port+"/").CombinedOutput()
				return err == nil && strings.Contains(string(out), "served-by-"+a), string(out)
			})
		})
		t.Run("statefulset", func(t *testing.T) { checkStatefulSet(t, cp, b, dnsIP) })
	}

	t.Run("first", func(t *testing.T) { checkAll(t, "") })

	// Without host B's VXLAN forward, host A's pod cannot reach B's: pod
	// traffic between the hosts is VXLAN to the cluster's port and
	// nothing else.
	t.Run("the path is VXLAN", func(t *testing.T) {
		ips := map[string]string{}
		for _, p := range []string{"weba", "webb"} {
			ips[p] = strings.TrimSpace(cp.must(t, "get", "pod", p, "-o", "jsonpath={.status.podIP}"))
		}
		vxlan := fmt.Sprintf("%s:%s:%s/udp", hostB.IP, vxlanPort, vxlanPort)
		get := func() (string, error) {
			return cp.kubectl("exec", "weba", "--", "busybox", "timeout", "5", "wget", "-q", "-O", "-", "http://"+ips["webb"]+":8080/")
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

	// A kill -9 of host B's network helper takes tap0, and with it
	// flannel.1 (the kernel deletes a VXLAN device with its lower device).
	// The supervisor restarts the helper, flanneld makes flannel.1 again,
	// and usernode turns its tx checksum offload off again: TCP between
	// the hosts' pods comes back.
	t.Run("the worker's network helper killed", func(t *testing.T) {
		st, err := sandbox.Running(filepath.Join(wEnv.RuntimeDir, "usernode", worker))
		if err != nil || st.NetHelper == nil {
			t.Fatalf("worker's state: %v %+v", err, st)
		}
		ips := map[string]string{}
		for _, p := range []string{"weba", "webb"} {
			ips[p] = strings.TrimSpace(cp.must(t, "get", "pod", p, "-o", "jsonpath={.status.podIP}"))
		}
		if err := syscall.Kill(st.NetHelper.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		for from, to := range map[string]string{"weba": "webb", "webb": "weba"} {
			waitFor(t, "TCP from "+from+" to "+to+" after the helper's restart", 2*time.Minute, func() (bool, string) {
				out, err := cp.kubectl("exec", from, "--", "busybox", "timeout", "5", "wget", "-q", "-O", "-", "http://"+ips[to]+":8080/")
				return err == nil && strings.Contains(out, "served-by-"+to), out
			})
		}
		t.Logf("pods' TCP across the hosts back %.1fs after the kill", time.Since(killed).Seconds())
		if r := wEnv.Run(t, 30*time.Second, bin, "logs", "--name", worker, "supervisor"); !strings.Contains(r.Stdout, "flannel.1 was made again") {
			t.Errorf("the worker's supervisor log does not say flannel.1 was fixed after it was made again:\n%s", r.Stdout)
		}
	})

	// `down --drain` on the worker: its pods move to the control plane
	// (a pod no controller manages stops it, named), and its next `up`
	// makes it schedulable again.
	t.Run("drain", func(t *testing.T) {
		cp.must(t, "cordon", cp.name)
		cp.apply(t, mover)
		onNode := func(node string) (bool, string) {
			out, _ := cp.kubectl("get", "pods", "-l", "app=mover", "-o", `jsonpath={range .items[*]}{.spec.nodeName}/{.status.phase} {end}`)
			return strings.Count(out, node+"/Running") == 2, out
		}
		waitFor(t, "mover's pods on the worker", 3*time.Minute, func() (bool, string) { return onNode(worker) })
		cp.must(t, "uncordon", cp.name)
		r := wrun(3*time.Minute, "down", "--drain")
		if r.Code == 0 || !strings.Contains(r.Stderr, "default/webb") {
			t.Fatalf("down --drain with bare pods on the worker: exit %d, want them named:\n%s", r.Code, r.Stderr)
		}
		if out := cp.must(t, "get", "node", worker, "-o", "jsonpath={.spec.unschedulable}"); out == "true" {
			t.Errorf("a refused drain cordoned the worker")
		}
		cp.must(t, "delete", "pods", "--field-selector", "spec.nodeName="+worker, "-l", "app!=mover", "--grace-period=1", "--wait=true")
		if r := wrun(3*time.Minute, "down", "--drain"); r.Code != 0 {
			t.Fatalf("down --drain: %s", r)
		}
		if ok, out := onNode(cp.name); !ok {
			t.Errorf("after the drain, mover's pods are not running on the control plane: %s", out)
		}
		if out := cp.must(t, "get", "node", worker, "-o", "jsonpath={.spec.unschedulable}"); out != "true" {
			t.Errorf("the drained worker is not cordoned: %q", out)
		}
		if r := wrun(6*time.Minute, "up", "-d", "--bin-dir", bins); r.Code != 0 {
			t.Fatalf("up on host B: %s", r)
		}
		if out := cp.must(t, "get", "node", worker, "-o", "jsonpath={.spec.unschedulable}"); out == "true" {
			t.Errorf("the worker is still cordoned after its up")
		}
		cp.must(t, "delete", "deployment", "mover")
	})

	// Both hosts stop and start again, in each order; the cluster comes
	// back and everything above works again. The worker restarts with a
	// plain `up`: its state dir remembers the join.
	upWorker := func() testutil.Result { return wrun(6*time.Minute, "up", "-d", "--bin-dir", bins) }
	// Each node's VXLAN MAC and pod subnet (its lease) outlive restarts:
	// peers' ARP and FDB entries for it stay right.
	vteps := func(t *testing.T) string {
		return cp.must(t, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.metadata.annotations.flannel\.alpha\.coreos\.com/backend-data}{"\n"}{end}`)
	}
	before := vteps(t)
	if !strings.Contains(before, "VtepMAC") {
		t.Errorf("no VXLAN MAC on the nodes: %s", before)
	}
	sameVteps := func(t *testing.T) {
		if after := vteps(t); after != before {
			t.Errorf("VXLAN MACs or pod subnets changed across the restart:\nbefore %s\nafter  %s", before, after)
		}
	}
	down := func(t *testing.T, host string, r testutil.Result) {
		if r.Code != 0 {
			t.Fatalf("down on %s: %s", host, r)
		}
	}
	t.Run("restart, the worker first down and last up", func(t *testing.T) {
		down(t, "host B", wrun(5*time.Minute, "down"))
		down(t, "host A", cp.down())
		if r := cp.up(); r.Code != 0 {
			t.Fatalf("up on host A: %s", r)
		}
		if r := upWorker(); r.Code != 0 {
			t.Fatalf("up on host B: %s", r)
		}
		checkAll(t, "-r1")
		sameVteps(t)
	})
	// The control plane goes first and comes back last: the worker's
	// kubelet waits for it.
	t.Run("restart, the control plane first down and last up", func(t *testing.T) {
		down(t, "host A", cp.down())
		down(t, "host B", wrun(5*time.Minute, "down"))
		done := make(chan testutil.Result, 1)
		go func() { done <- upWorker() }()
		time.Sleep(5 * time.Second)
		if r := cp.up(); r.Code != 0 {
			t.Fatalf("up on host A: %s", r)
		}
		if r := <-done; r.Code != 0 {
			t.Fatalf("up on host B before host A: %s", r)
		}
		checkAll(t, "-r2")
		sameVteps(t)
	})

	t.Run("security", func(t *testing.T) {
		cp.must(t, "create", "secret", "generic", "nobodys", "--from-literal=k=v")
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
			if code := get([]string{"-H", "Authorization: Bearer " + tok}, path); code != "403" {
				t.Errorf("the bootstrap token GET %s: HTTP %s, want 403", path, code)
			}
		}
		if fi, err := os.Stat(wState); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("worker state dir %s: %v", wState, fi)
		}
	})
}

// checkNodes: every node Ready, with its host's IP as ExternalIP, an
// InternalIP of its own, and no uninitialized taint left.
func checkNodes(t *testing.T, cp *hostCluster, hostIPs map[string]string) {
	// Ready comes from the kubelet, the uninitialized taint goes when
	// usernode's node controller on the control plane has seen the node:
	// two events, in either order (a CI run under load saw Ready first).
	// A user waits for both before pods schedule.
	waitFor(t, "every node Ready and initialized", 3*time.Minute, func() (bool, string) {
		out, _ := cp.kubectl("get", "nodes", "--no-headers")
		taints, _ := cp.kubectl("get", "nodes", "-o", "jsonpath={.items[*].spec.taints[*].key}")
		return strings.Count(out, " Ready ") == len(hostIPs) && !strings.Contains(taints, "uninitialized"), out + " taints: " + taints
	})
	var nodes corev1.NodeList
	if err := json.Unmarshal([]byte(cp.must(t, "get", "nodes", "-o", "json")), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(hostIPs) {
		t.Fatalf("%d nodes, want %d", len(nodes.Items), len(hostIPs))
	}
	internal := map[string]bool{}
	for _, n := range nodes.Items {
		addr := map[corev1.NodeAddressType]string{}
		for _, a := range n.Status.Addresses {
			addr[a.Type] = a.Address
		}
		if addr[corev1.NodeExternalIP] != hostIPs[n.Name] {
			t.Errorf("node %s ExternalIP %q, want its host's %s", n.Name, addr[corev1.NodeExternalIP], hostIPs[n.Name])
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
	}
}

// checkPodNetwork runs web pods a and b on their nodes and checks, both
// ways between them: TCP; UDP (traceroute's probes, answered by the other
// pod's kernel); and a ping of the full pod MTU with don't-fragment set.
// The pods' MTU is the hosts' LAN's (1500) less VXLAN's 50.
func checkPodNetwork(t *testing.T, cp *hostCluster, a, b string, nodes map[string]string) {
	for _, p := range []string{a, b} {
		cp.run(t, p, nodes[p], web(p))
	}
	ips := map[string]string{a: cp.podIP(t, a), b: cp.podIP(t, b)}
	if ips[a] == ips[b] {
		t.Fatalf("both pods have IP %s", ips[a])
	}
	for from, to := range map[string]string{b: a, a: b} {
		if out, _ := cp.kubectl("exec", from, "--", "cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(out) != "1450" {
			t.Errorf("pod %s's MTU %q, want 1450: the LAN's 1500 less VXLAN's 50", from, out)
		}
		waitFor(t, "TCP from "+from+" to "+to, time.Minute, func() (bool, string) {
			out, err := cp.kubectl("exec", from, "--", "wget", "-q", "-O", "-", "http://"+ips[to]+":8080/")
			return err == nil && strings.Contains(out, "served-by-"+to), out
		})
		// The last hop of a traceroute is the pod itself answering the
		// UDP probe ("port unreachable"), with its time and no "!".
		reached := regexp.MustCompile(`(?m)^\s*\d+\s+` + regexp.QuoteMeta(ips[to]) + `\s+[\d.]+ ms\s*$`)
		if out, _ := cp.kubectl("exec", from, "--", "busybox", "traceroute", "-n", "-q", "1", "-w", "3", "-m", "5", ips[to], "1450"); !reached.MatchString(out) {
			t.Errorf("UDP of the full pod MTU from %s to %s did not arrive:\n%s", from, to, out)
		}
		// busybox ping sets DF on a packet that fits the pod's link (Linux's
		// IP_PMTUDISC_WANT; seen dropped, not fragmented, at a smaller
		// hop): 1422 bytes of data make 1450, the pod MTU, unfragmented
		// end to end.
		if out, err := cp.kubectl("exec", from, "--", "busybox", "ping", "-c", "2", "-W", "5", "-s", "1422", ips[to]); err != nil {
			t.Errorf("a full-MTU ping with DF from %s to %s: %v %s", from, to, err, out)
		}
	}
}

// checkStatefulSet applies the StatefulSet (once) and, from pod client,
// finds each member by its name in the cluster DNS and reaches it there.
func checkStatefulSet(t *testing.T, cp *hostCluster, client, dnsIP string) {
	cp.apply(t, statefulSet)
	waitFor(t, "the StatefulSet's 3 members ready", 3*time.Minute, func() (bool, string) {
		out, _ := cp.kubectl("get", "sts", "sts", "-o", "jsonpath={.status.readyReplicas}")
		return out == "3", out
	})
	nodes := map[string]bool{}
	for i := range 3 {
		member := fmt.Sprintf("sts-%d", i)
		f := strings.Fields(cp.must(t, "get", "pod", member, "-o", "jsonpath={.status.podIP} {.spec.nodeName}"))
		if len(f) != 2 {
			t.Fatalf("member %s: %v", member, f)
		}
		nodes[f[1]] = true
		name := member + ".sts.default.svc.cluster.local"
		waitFor(t, "member "+member+" by its name", time.Minute, func() (bool, string) {
			out, err := cp.kubectl("exec", client, "--", "nslookup", name, dnsIP)
			if err != nil || !strings.Contains(out, f[0]) {
				return false, out
			}
			// busybox-static cannot resolve names itself (FACTS): the
			// address nslookup gave.
			out, err = cp.kubectl("exec", client, "--", "wget", "-q", "-O", "-", "http://"+f[0]+":8080/")
			return err == nil && strings.Contains(out, "served-by-"+member), out
		})
	}
	if len(nodes) != 2 {
		t.Errorf("the StatefulSet's members are all on %v, not spread over both nodes", nodes)
	}
}
