package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/join"

	"github.com/usernode/usernode/pkg/bootstraptoken"

	"github.com/usernode/usernode/internal/testutil"
)

type cluster struct {
	t          *testing.T
	env        *testutil.Env
	name       string
	kubeconfig string
	kubectlBin string
	api, klt   int
	// extra are more flags for `up`.
	extra []string
}

func (c *cluster) kubectl(args ...string) (string, error) {
	out, err := exec.Command(c.kubectlBin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *cluster) mustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// waitFor polls f until it returns true or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = f(); ok {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
}

// up starts the node in the background; c.extra adds flags.
func (c *cluster) up() testutil.Result {
	args := []string{"up", "-d", "--name", c.name, "--bin-dir", filepath.Dir(c.kubectlBin),
		"--api-port", fmt.Sprint(c.api), "--kubelet-port", fmt.Sprint(c.klt)}
	return c.env.Run(c.t, 5*time.Minute, testutil.Binary(c.t), append(args, c.extra...)...)
}

// down stops the node; with --purge, a failed test's logs are kept first.
func (c *cluster) down(args ...string) testutil.Result {
	if slices.Contains(args, "--purge") {
		c.env.SaveLogs(c.t, c.name)
	}
	return c.env.Run(c.t, 5*time.Minute, testutil.Binary(c.t), append([]string{"down", "--name", c.name}, args...)...)
}

const workload = `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello-from-configmap}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {token: s3cr3t}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: docker.io/library/busybox:usernode
        imagePullPolicy: Never
        command: ["sh", "-c", "echo served-by-$(hostname) > /tmp/index.html; echo started; exec httpd -f -v -p 8080 -h /tmp"]
        volumeMounts:
        - {name: cfg, mountPath: /cfg}
        - {name: sec, mountPath: /sec}
      volumes:
      - {name: cfg, configMap: {name: cfg}}
      - {name: sec, secret: {secretName: sec}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: NODEPORT}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: LOCALPORT}]
`

// testUp is the product's main job, end to end, as the non-root user,
// with runtime rt (TestUp runs it for each): a node comes up, runs a
// workload a user would run, is secure by default, stops cleanly and
// comes back with its state.
func testUp(t *testing.T, rt upRuntime) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	c := &cluster{t: t, env: u.NewEnv(t), name: rt.node, kubectlBin: filepath.Join(bins, "kubectl"), api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp"))}
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	// Not the defaults: the node's subnet and the pod CIDR flow from the
	// command line into the network driver, the certificates, the
	// controller-manager and the CNI (checked in "model" below).
	// --keep-source-ip: everything else the node test checks must work
	// with the forwarder's policy routing and nft table in place.
	c.extra = append([]string{"--node-subnet", "10.0.7.0/24", "--pod-cidr", "10.244.0.0/16", "--keep-source-ip"}, rt.flags...)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	mountsBefore := hostMounts(t)

	r := c.up()
	if r.Code != 0 {
		t.Fatalf("up: %s", r)
	}
	t.Cleanup(func() { c.down("--purge") })
	for _, phase := range []string{"sandbox", "network", rt.component, "etcd", "kube-apiserver", "kubelet", "Ready"} {
		if !strings.Contains(r.Stderr, phase) {
			t.Errorf("up did not report phase %q:\n%s", phase, r.Stderr)
		}
	}

	var nodes struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				NodeInfo struct {
					KubeletVersion          string `json:"kubeletVersion"`
					ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
					RunningInUserNamespace  bool   `json:"runningInUserNamespace"`
				} `json:"nodeInfo"`
				Conditions []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(c.mustKubectl("get", "nodes", "-o", "json")), &nodes); err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %+v", err, nodes)
	}
	n := nodes.Items[0]
	ready := false
	for _, cond := range n.Status.Conditions {
		ready = ready || (cond.Type == "Ready" && cond.Status == "True")
	}
	// The KEP's check: the kubelet knows it runs in a user namespace.
	if ni := n.Status.NodeInfo; n.Metadata.Name != c.name || !ready || ni.KubeletVersion != "v1.37.2" || !ni.RunningInUserNamespace ||
		!strings.HasPrefix(ni.ContainerRuntimeVersion, rt.version) {
		t.Errorf("node = %+v; want Ready, v1.37.2, in a user namespace, runtime %s*", n, rt.version)
	}

	t.Run("security", func(t *testing.T) {
		for _, url := range []string{fmt.Sprintf("https://127.0.0.1:%d/api", c.api), fmt.Sprintf("https://127.0.0.1:%d/pods", c.klt)} {
			out, _ := exec.Command("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", url).Output()
			if code := string(out); code != "401" && code != "403" {
				t.Errorf("anonymous GET %s = %q, want 401 or 403", url, code)
			}
		}
		state := filepath.Join(c.env.DataHome, "usernode", c.name)
		if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("state dir %s: %v", state, fi)
		}
		keys, _ := filepath.Glob(filepath.Join(state, "var/lib/usernode/pki/*.key"))
		if len(keys) < 5 {
			t.Errorf("only %d key files in the PKI", len(keys))
		}
		for _, k := range keys {
			if fi, _ := os.Stat(k); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", k, fi.Mode().Perm())
			}
		}
		procs := testutil.NewProcs(u.UID, procsBefore)
		if len(procs) < 8 {
			t.Errorf("only %d processes of the user run the node", len(procs))
		}
		for _, p := range procs {
			if uid := realUID(p); uid == 0 {
				t.Errorf("pid %d runs with real uid 0", p)
			}
		}
	})

	nodePort := 30000 + c.api%2700
	applyWorkload(t, c, nodePort)
	waitRunning(t, c)

	// The node's address is its subnet's .100, the controller-manager gave
	// it a /24 of the pod CIDR, and the CNI hands out pod IPs from exactly
	// that /24 (it used to write a fixed 10.88.0.0/24 whatever the node
	// was given).
	t.Run("model", func(t *testing.T) {
		if ip := c.mustKubectl("get", "node", c.name, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`); ip != "10.0.7.100" {
			t.Errorf("node InternalIP %q, want 10.0.7.100", ip)
		}
		cidr := c.mustKubectl("get", "node", c.name, "-o", "jsonpath={.spec.podCIDR}")
		if cidr != "10.244.0.0/24" {
			t.Errorf("node podCIDR %q, want 10.244.0.0/24", cidr)
		}
		for _, ip := range strings.Fields(c.mustKubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}")) {
			if !strings.HasPrefix(ip, "10.244.0.") {
				t.Errorf("pod IP %s is outside the node's pod CIDR %s", ip, cidr)
			}
		}
	})

	t.Run("workload", func(t *testing.T) {
		waitFor(t, "NodePort on the host", time.Minute, func() (bool, string) {
			b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", nodePort))
			return err == nil && strings.HasPrefix(b, "served-by-web-"), fmt.Sprint(b, err)
		})
		pod := strings.TrimPrefix(strings.Fields(c.mustKubectl("get", "pods", "-l", "app=web", "-o", "name"))[0], "pod/")
		if out := c.mustKubectl("exec", pod, "--", "cat", "/cfg/greeting", "/sec/token"); out != "hello-from-configmaps3cr3t" {
			t.Errorf("configmap and secret volumes read %q", out)
		}
		if out := c.mustKubectl("logs", pod); !strings.Contains(out, "started") {
			t.Errorf("kubectl logs = %q", out)
		}
		// The imported image by the short name users type: each runtime
		// normalises it its own way (CRI-O through registries.conf).
		c.mustKubectl("run", "short", "--image=busybox:usernode", "--image-pull-policy=Never", "--restart=Never", "--", "echo", "short-name-ok")
		waitFor(t, "the pod by short image name", 2*time.Minute, func() (bool, string) {
			out, _ := c.kubectl("logs", "short")
			return strings.Contains(out, "short-name-ok"), out
		})
		c.mustKubectl("delete", "pod", "short", "--wait=false")
	})

	// The kubelet's stats API, which the eviction manager, metrics-server
	// and `kubectl top` read: the node's filesystem (its state dir's) and
	// the runtime's image filesystem, and each web pod's ephemeral storage
	// (the index.html it wrote, its logs). It used to fail outright:
	// "failed to get rootFs stats: cannot find filesystem info for device".
	t.Run("stats summary", func(t *testing.T) {
		var sum struct {
			Node struct {
				Fs      *struct{ CapacityBytes, AvailableBytes, UsedBytes uint64 }
				Runtime struct {
					ImageFs *struct{ CapacityBytes, UsedBytes uint64 }
				}
			}
			Pods []struct {
				PodRef           struct{ Name string }
				EphemeralStorage *struct{ UsedBytes uint64 } `json:"ephemeral-storage"`
			}
		}
		waitFor(t, "/stats/summary with the web pods", time.Minute, func() (bool, string) {
			out, err := c.kubectl("get", "--raw", "/api/v1/nodes/"+c.name+"/proxy/stats/summary")
			if err != nil {
				return false, out
			}
			if err := json.Unmarshal([]byte(out), &sum); err != nil {
				return false, err.Error()
			}
			web := 0
			for _, p := range sum.Pods {
				if strings.HasPrefix(p.PodRef.Name, "web-") && p.EphemeralStorage != nil && p.EphemeralStorage.UsedBytes > 0 {
					web++
				}
			}
			return web == 2 || (!rt.podStats && sum.Node.Fs != nil), out
		})
		if fs := sum.Node.Fs; fs == nil || fs.CapacityBytes == 0 || fs.AvailableBytes == 0 || fs.UsedBytes == 0 {
			t.Errorf("node fs stats %+v", fs)
		}
		// Its usage may read 0 until the runtime has measured its
		// snapshots (containerd's first sample did, in a cold CI run).
		if im := sum.Node.Runtime.ImageFs; im == nil || im.CapacityBytes == 0 {
			t.Errorf("image fs stats %+v", im)
		}
	})

	// A client on the host's own address, through a port added by hand to
	// a NodePort with externalTrafficPolicy Local (no masquerade): the pod
	// logs the client's address, and the answer comes back through the
	// DNAT and the forwarder.
	t.Run("the client's address reaches the pod (--keep-source-ip)", func(t *testing.T) {
		hip, hp := testutil.HostIPv4(t).String(), testutil.FreePort(t, "tcp")
		if r := c.env.Run(t, 30*time.Second, testutil.Binary(t), "port", "add", "--name", c.name, fmt.Sprintf("%s:%d:%d", hip, hp, nodePort+1)); r.Code != 0 {
			t.Fatalf("port add: %s", r)
		}
		defer c.env.Run(t, 30*time.Second, testutil.Binary(t), "port", "rm", "--name", c.name, fmt.Sprintf("%s:%d:%d", hip, hp, nodePort+1))
		client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hip)}}).DialContext}}
		waitFor(t, "the NodePort through a port on "+hip, time.Minute, func() (bool, string) {
			resp, err := client.Get(fmt.Sprintf("http://%s:%d/", hip, hp))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.HasPrefix(string(b), "served-by-web-"), string(b)
		})
		if logs := c.mustKubectl("logs", "-l", "app=web", "--tail=-1"); !strings.Contains(logs, hip) {
			t.Errorf("no pod logged a request from %s:\n%s", hip, logs)
		}
	})

	t.Run("pods cannot reach the host's loopback", func(t *testing.T) {
		lo, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lo.Close()
		pub, err := net.Listen("tcp", testutil.HostIPv4(t).String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		for _, l := range []net.Listener{lo, pub} {
			go func(l net.Listener) {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					_, _ = conn.Write([]byte("reached\n")) // the client's read says whether it got there
					conn.Close()
				}
			}(l)
		}
		pod := strings.TrimPrefix(strings.Fields(c.mustKubectl("get", "pods", "-l", "app=web", "-o", "name"))[0], "pod/")
		try := func(addr string) string {
			h, p, _ := net.SplitHostPort(addr)
			out, _ := c.kubectl("exec", pod, "--", "nc", "-w", "3", h, p)
			return out
		}
		// The control: the host's own address is reachable, so a failure
		// below is the loopback being closed, not the network being down.
		if out := try(pub.Addr().String()); !strings.Contains(out, "reached") {
			t.Fatalf("pod cannot reach the host's %s at all: %q", pub.Addr(), out)
		}
		_, p, _ := net.SplitHostPort(lo.Addr().String())
		// The gateway is the host, at .2 of the node's subnet (--node-subnet).
		if out := try("10.0.7.2:" + p); strings.Contains(out, "reached") {
			t.Errorf("a pod reached the host's 127.0.0.1:%s through the gateway 10.0.7.2", p)
		}
	})

	t.Run("status, logs, and a crashed component restarted", func(t *testing.T) {
		bin := testutil.Binary(t)
		var runtime struct{ Name, Version string }
		status := func() map[string]int {
			r := c.env.Run(t, 30*time.Second, bin, "status", "--name", c.name, "--json")
			var st struct {
				Runtime *struct{ Name, Version string }
				Node    struct {
					Phase      string
					Components []struct {
						Name     string
						PID      int
						State    string
						Restarts int
					}
				}
				Ports []struct{ HostPort int }
			}
			if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, r)
			}
			if st.Runtime != nil {
				runtime = *st.Runtime
			}
			out := map[string]int{}
			for _, cs := range st.Node.Components {
				if cs.State == "ready" {
					out[cs.Name] = cs.PID
				}
				out[cs.Name+".restarts"] = cs.Restarts
			}
			out["ports"] = len(st.Ports)
			return out
		}
		before := status()
		// The runtime and version status names are the ones the kubelet
		// reports; the binary's own version may say more (measured:
		// Debian's containerd --version prints 1.6.20~ds1, its CRI 1.6.20).
		if _, v, _ := strings.Cut(n.Status.NodeInfo.ContainerRuntimeVersion, "://"); runtime.Name != rt.name || v == "" || !strings.HasPrefix(runtime.Version, v) {
			t.Errorf("status --json runtime %+v, want %s %s (the Node's %s)", runtime, rt.name, v, n.Status.NodeInfo.ContainerRuntimeVersion)
		}
		for _, comp := range []string{rt.component, "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
			if before[comp] == 0 {
				t.Errorf("status: %s not ready with a PID: %v", comp, before)
			}
		}
		if before["ports"] < 3 {
			t.Errorf("status lists %d forwarded ports, want the API, the kubelet and the NodePort", before["ports"])
		}
		if r := c.env.Run(t, 30*time.Second, bin, "logs", "--name", c.name, "kubelet"); r.Code != 0 || !strings.Contains(r.Stdout, "kubelet") {
			t.Errorf("logs kubelet: exit %d, %d bytes", r.Code, len(r.Stdout))
		}
		// Kill the kubelet inside the node: the supervisor restarts it.
		if r := c.env.Run(t, 30*time.Second, bin, "enter", "--name", c.name, "--", "kill", "-9", fmt.Sprint(before["kubelet"])); r.Code != 0 {
			t.Fatalf("enter kill: %s", r)
		}
		waitFor(t, "kubelet restarted", time.Minute, func() (bool, string) {
			st := status()
			return st["kubelet.restarts"] >= 1 && st["kubelet"] != 0 && st["kubelet"] != before["kubelet"], fmt.Sprint(st)
		})
		waitFor(t, "node Ready again", 2*time.Minute, func() (bool, string) {
			out, _ := c.kubectl("get", "node", c.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return out == "True", out
		})
	})

	// Bootstrap tokens, the way other hosts will join: the join command
	// pins the cluster's CA, a token can read cluster-info (signed for it
	// by the bootstrapsigner) and ask for a node certificate, and nothing
	// else; deleted or expired, it is refused. The control plane's, not
	// the runtime's: checked once, with the first runtime.
	tokens := func(t *testing.T) {
		bin := testutil.Binary(t)
		r := c.env.Run(t, 30*time.Second, bin, "token", "create", "--name", c.name, "--ttl", "1h", "--description", "integration")
		f := strings.Fields(r.Stdout)
		if r.Code != 0 || len(f) != 7 || f[0] != "usernode" || f[1] != "join" || f[3] != "--token" || f[5] != "--ca-cert-hash" {
			t.Fatalf("token create: %s", r)
		}
		if f[2] != fmt.Sprintf("https://127.0.0.1:%d", c.api) {
			t.Errorf("join server %s", f[2])
		}
		// A node of this host only: the user is told no other host can
		// join it, and how to make it one they can.
		if !strings.Contains(r.Stderr, "--host-ip auto") {
			t.Errorf("token create on a node of this host only does not say so: %s", r.Stderr)
		}
		tok, err := bootstraptoken.Parse(f[4])
		if err != nil {
			t.Fatal(err)
		}
		ca := filepath.Join(c.env.DataHome, "usernode", c.name, "var/lib/usernode/pki/ca.crt")
		caPEM, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := bootstraptoken.CAHash(caPEM); f[6] != want {
			t.Errorf("CA pin %s, the CA's is %s", f[6], want)
		}
		as := func(token string, args ...string) (string, error) {
			out, err := exec.Command(c.kubectlBin, append([]string{"--kubeconfig", os.DevNull, "--server", f[2],
				"--certificate-authority", ca, "--token", token}, args...)...).CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		if out, err := as(tok.String(), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); err != nil || out != "system:bootstrap:"+tok.ID {
			t.Errorf("whoami with the token: %q %v", out, err)
		}
		if out, err := as(tok.String(), "get", "cm", "-n", "kube-public", "cluster-info", "-o", "jsonpath={.data.kubeconfig}"); err != nil || !strings.Contains(out, "server: "+f[2]) {
			t.Errorf("cluster-info with the token: %q %v", out, err)
		}
		waitFor(t, "cluster-info signed for the token", time.Minute, func() (bool, string) {
			out, _ := c.kubectl("get", "cm", "-n", "kube-public", "cluster-info", "-o", "jsonpath={.data.jws-kubeconfig-"+tok.ID+"}")
			return out != "", out
		})
		// Nodes it may read (join checks that no node has its name or
		// address), not change.
		for check, want := range map[string]string{"create certificatesigningrequests": "yes", "list secrets -A": "no", "get nodes": "yes",
			"update nodes": "no", "delete nodes": "no", "create pods": "no"} {
			out, _ := as(tok.String(), append([]string{"auth", "can-i"}, strings.Fields(check)...)...)
			// The answer is the last word; kubectl may warn before it.
			if w := strings.Fields(out); len(w) == 0 || w[len(w)-1] != want {
				t.Errorf("can the token %s? %q, want %q", check, out, want)
			}
		}
		if out, err := as(tok.String(), "get", "secrets", "-n", "kube-system"); err == nil || !strings.Contains(out, "Forbidden") {
			t.Errorf("the token read kube-system's secrets: %q", out)
		}
		// Discovery, as a joining host does it: the CA is pinned before
		// the token is sent, cluster-info must be signed for the token.
		discover := func(server string, tok bootstraptoken.Token, pin string, timeout time.Duration) (*join.Cluster, error) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return join.Discover(ctx, server, tok, pin)
		}
		if got, err := discover(f[2], tok, f[6], time.Minute); err != nil || string(got.CA) != string(caPEM) || got.Server != f[2] {
			t.Errorf("discovery with the join command's values: %+v %v", got, err)
		}
		for name, bad := range map[string]struct {
			server, pin string
			tok         bootstraptoken.Token
			want        string
		}{
			"wrong pin":   {f[2], "sha256:" + strings.Repeat("0", 64), tok, "does not present the CA pinned"},
			"wrong token": {f[2], f[6], bootstraptoken.Token{ID: tok.ID, Secret: strings.Repeat("0", 16)}, "refused token"},
			"unreachable": {fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t, "tcp")), f[6], tok, "cannot reach the API server"},
		} {
			if _, err := discover(bad.server, bad.tok, bad.pin, 10*time.Second); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("discovery, %s: %v; want %q", name, err, bad.want)
			}
		}
		if r := c.env.Run(t, 30*time.Second, bin, "token", "list", "--name", c.name, "--json"); r.Code != 0 || !strings.Contains(r.Stdout, `"id": "`+tok.ID+`"`) || strings.Contains(r.Stdout, tok.Secret) {
			t.Errorf("token list (must show the ID, never the secret): %s", r)
		}
		if r := c.env.Run(t, 30*time.Second, bin, "token", "delete", "--name", c.name, tok.ID); r.Code != 0 {
			t.Errorf("token delete: %s", r)
		}
		waitFor(t, "a deleted token refused", 30*time.Second, func() (bool, string) {
			out, err := as(tok.String(), "auth", "whoami")
			return err != nil && strings.Contains(out, "Unauthorized"), out
		})
		r = c.env.Run(t, 30*time.Second, bin, "token", "create", "--name", c.name, "--ttl", "2s")
		short := strings.Fields(r.Stdout)
		if r.Code != 0 || len(short) != 7 {
			t.Fatalf("token create --ttl 2s: %s", r)
		}
		waitFor(t, "an expired token refused", 30*time.Second, func() (bool, string) {
			out, err := as(short[4], "auth", "whoami")
			return err != nil && strings.Contains(out, "Unauthorized"), out
		})
		if expired, err := bootstraptoken.Parse(short[4]); err != nil {
			t.Error(err)
		} else if _, err := discover(f[2], expired, f[6], 10*time.Second); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("discovery with an expired token: %v", err)
		}
		if _, err := discover(f[2], tok, f[6], 10*time.Second); err == nil || !strings.Contains(err.Error(), "refused token") {
			t.Errorf("discovery with a deleted token: %v", err)
		}
		if r := c.env.Run(t, 30*time.Second, bin, "token", "delete", "--name", c.name, "zzzzzz"); r.Code == 0 || !strings.Contains(r.Stderr, "token list") {
			t.Errorf("deleting a token that is not there: %s", r)
		}
	}
	if rt.first {
		t.Run("bootstrap tokens", tokens)
	}

	t.Run("second up is refused", func(t *testing.T) {
		r := c.up()
		if r.Code == 0 || !strings.Contains(r.Stderr, "already running") {
			t.Errorf("second up: %s", r)
		}
	})

	// down: nothing of the node is left, and its ports are closed.
	if r := c.down(); r.Code != 0 {
		t.Fatalf("down: %s", r)
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 30*time.Second); len(left) > 0 {
		t.Errorf("processes left after down: %v", left)
	}
	checkMountsLeft(t, "after down", mountsBefore)
	for _, p := range []int{c.api, c.klt, nodePort} {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			conn.Close()
			t.Errorf("port %d still open after down", p)
		}
	}

	// up again: the same cluster, with the Deployment's pods back.
	if r := c.up(); r.Code != 0 {
		t.Fatalf("second up: %s", r)
	}
	waitRunning(t, c)
	waitFor(t, "NodePort after restart", 2*time.Minute, func() (bool, string) {
		b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", nodePort))
		return err == nil && strings.HasPrefix(b, "served-by-web-"), fmt.Sprint(b, err)
	})

	// down --purge removes the state too, files of subordinate IDs
	// (container layers) included.
	if r := c.down("--purge"); r.Code != 0 {
		t.Fatalf("down --purge: %s", r)
	}
	if _, err := os.Stat(filepath.Join(c.env.DataHome, "usernode", c.name)); !os.IsNotExist(err) {
		t.Errorf("state dir still there after --purge: %v", err)
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 30*time.Second); len(left) > 0 {
		t.Errorf("processes left after down --purge: %v", left)
	}
}

func applyWorkload(t *testing.T, c *cluster, nodePort int) {
	t.Helper()
	applyManifest(t, c, strings.NewReplacer("NODEPORT", fmt.Sprint(nodePort), "LOCALPORT", fmt.Sprint(nodePort+1)).Replace(workload))
}

// applyManifest is `kubectl apply` of a manifest, as a user applies one.
func applyManifest(t *testing.T, c *cluster, manifest string) {
	t.Helper()
	cmd := exec.Command(c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
}

// waitRunning waits for the workload's two web pods to run.
func waitRunning(t *testing.T, c *cluster) {
	t.Helper()
	const want = 2
	waitFor(t, fmt.Sprintf("%d web pods Running", want), 3*time.Minute, func() (bool, string) {
		out, _ := c.kubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.status.phase} {end}")
		return strings.Count(out, "Running") == want && strings.Count(out, " ") == want, out
	})
}

func realUID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			var uid int
			if _, err := fmt.Sscan(f[1], &uid); err != nil {
				return -1
			}
			return uid
		}
	}
	return -1
}

// Each bad input fails before anything starts, says what to do, and leaves
// no process, runtime state or port behind.
func TestUpBadInput(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	bin := testutil.Binary(t)
	check := func(t *testing.T, env *testutil.Env, args []string, wants ...string) {
		t.Helper()
		procsBefore, _ := testutil.ProcsOf(u.UID)
		r := env.Run(t, 2*time.Minute, bin, append([]string{"up", "--name", "bad"}, args...)...)
		if r.Code == 0 {
			t.Fatalf("want failure: %s", r)
		}
		for _, w := range wants {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, r.Stderr)
			}
		}
		if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
		if _, err := os.Stat(filepath.Join(env.RuntimeDir, "usernode", "bad", "state.json")); err == nil {
			t.Error("runtime state left behind")
		}
	}
	t.Run("malformed config file", func(t *testing.T) {
		env := u.NewEnv(t)
		cfg := filepath.Join(env.DataHome, "config.yaml")
		if err := os.WriteFile(cfg, []byte("name: bad\napiPort: [6443\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, env, []string{"--config", cfg, "--bin-dir", bins}, "config file", "is not valid")
	})
	t.Run("version below 1.30", func(t *testing.T) {
		env := u.NewEnv(t)
		// Not under /tmp: the sandbox hides it, and up says so first.
		old, err := os.MkdirTemp(u.Home, ".usernode-old-k8s-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(old) }) // best effort
		if err := os.Chmod(old, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "kubectl", "coredns"} {
			if err := os.WriteFile(filepath.Join(old, name), []byte("#!/bin/sh\necho Kubernetes v1.29.4\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(old, u.UID, u.GID); err != nil {
			t.Fatal(err)
		}
		check(t, env, []string{"--bin-dir", old}, "v1.29.4", "1.30")
	})
	t.Run("API port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		p := l.Addr().(*net.TCPAddr).Port
		check(t, u.NewEnv(t), []string{"--bin-dir", bins, "--api-port", fmt.Sprint(p), "--kubelet-port", fmt.Sprint(testutil.FreePort(t, "tcp"))},
			fmt.Sprintf("127.0.0.1:%d", p), "already in use", "--api-port")
	})
	t.Run("containerd missing", func(t *testing.T) {
		env := u.NewEnv(t)
		env.Extra = []string{"PATH=" + filepath.Join(env.DataHome, "empty")}
		check(t, env, []string{"--bin-dir", bins, "--api-port", fmt.Sprint(testutil.FreePort(t, "tcp")), "--kubelet-port", fmt.Sprint(testutil.FreePort(t, "tcp"))},
			"containerd", "apt-get install containerd")
	})
	t.Run("bad model values", func(t *testing.T) {
		check(t, u.NewEnv(t), []string{"--bin-dir", bins, "--service-cidr", "10.0.0.0/8", "--node-subnet", "10.88.1.0/24"},
			"2 problems", "cluster.serviceCIDR (--service-cidr) \"10.0.0.0/8\"", "between /12 and /28", "nodeSubnet (--node-subnet)", "overlaps cluster.podCIDR 10.88.0.0/16")
		env := u.NewEnv(t)
		cfg := filepath.Join(env.DataHome, "config.yaml")
		if err := os.WriteFile(cfg, []byte("cluster:\n  podCIDR: 10.0.0.0/8\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, env, []string{"--config", cfg, "--bin-dir", bins}, "cluster.podCIDR", "contains cluster.serviceCIDR 10.96.0.0/16")
	})
	t.Run("no binaries", func(t *testing.T) {
		env := u.NewEnv(t)
		env.Extra = []string{"PATH=/usr/bin:/bin", "XDG_CACHE_HOME=" + env.DataHome}
		check(t, env, nil, "kubelet", "make k8s", "--bin-dir")
	})
}
