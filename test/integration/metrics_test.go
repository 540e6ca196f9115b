package integration

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
)

// metricsResolution is metricsserver.DefaultResolution: how often it scrapes.
const metricsResolution = 15 * time.Second

const busyPod = `apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  containers:
  - name: spin
    image: docker.io/library/busybox:usernode
    imagePullPolicy: Never
    command: ["sh", "-c", "while :; do :; done"]
`

// TestMetrics is `usernode up --metrics` as a user would check it: the
// resource metrics API is available, `kubectl top node` and `kubectl top
// pod` print figures for the node and for a pod that spins a CPU, and
// status lists metrics-server.
func TestMetrics(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	c := &cluster{t: t, env: u.NewEnv(t), name: "ms", kubectlBin: filepath.Join(bins, "kubectl"),
		api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp")), extra: []string{"--metrics"}}
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	start := time.Now()
	r := c.up()
	if r.Code != 0 {
		t.Fatalf("up --metrics: %s", r)
	}
	t.Cleanup(func() { c.down("--purge") })
	t.Logf("up --metrics: Ready in %s", time.Since(start).Round(time.Second))

	waitFor(t, "APIService v1beta1.metrics.k8s.io Available", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", `jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
		return err == nil && strings.HasPrefix(out, "True"), out
	})
	cmd := exec.Command(c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(busyPod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busy pod: %v\n%s", err, out)
	}
	waitFor(t, "busy pod Running", 2*time.Minute, func() (bool, string) {
		out, _ := c.kubectl("get", "pod", "busy", "-o", "jsonpath={.status.phase}")
		return out == "Running", out
	})

	var node string
	t0 := time.Now()
	waitFor(t, "kubectl top node", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("top", "node", "--no-headers")
		node = out
		return err == nil && strings.HasPrefix(out, c.name+" "), out
	})
	f := strings.Fields(node)
	if len(f) < 5 || !strings.HasSuffix(f[1], "m") || !strings.HasSuffix(f[3], "Mi") {
		t.Fatalf("kubectl top node: %q, want NAME CPU(cores) CPU%% MEMORY(bytes) MEMORY%%", node)
	}
	t.Logf("kubectl top node (%s after the pod ran): %s", time.Since(t0).Round(time.Second), strings.TrimSpace(node))

	var pod string
	waitFor(t, "kubectl top pod busy", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("top", "pod", "busy", "--no-headers")
		pod = out
		return err == nil && strings.HasPrefix(out, "busy "), out
	})
	cpu := func(line string) int {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasSuffix(f[2], "Mi") {
			t.Fatalf("kubectl top pod busy: %q, want NAME CPU(cores) MEMORY(bytes)", line)
		}
		m, err := strconv.Atoi(strings.TrimSuffix(f[1], "m"))
		if err != nil {
			t.Fatalf("kubectl top pod busy: CPU %q: %v", f[1], err)
		}
		return m
	}
	// A few scrapes (15 s apart), so that the figure is a rate between two
	// of them rather than the first one's, which metrics-server takes from
	// the container's start.
	samples := []string{strings.TrimSpace(pod)}
	for i := 0; i < 4; i++ {
		time.Sleep(metricsResolution)
		samples = append(samples, strings.TrimSpace(c.mustKubectl("top", "pod", "busy", "--no-headers")))
	}
	t.Logf("kubectl top pod busy, every %s:\n%s", metricsResolution, strings.Join(samples, "\n"))
	nodeTop := strings.TrimSpace(c.mustKubectl("top", "node", "--no-headers"))
	t.Logf("kubectl top node: %s", nodeTop)
	last := cpu(samples[len(samples)-1])
	if mode := cgroupMode(t, c); mode == "full" {
		// Its own cgroup: one spinning loop is about one CPU.
		if last < 300 || last > 1200 {
			t.Errorf("kubectl top pod busy: %dm CPU in full mode, want about one CPU (300m-1200m)", last)
		}
	} else {
		// Degraded: the container's cgroup is the one the whole node is
		// in (see README, Metrics), so the pod's figure is the node's,
		// not the pod's own: what a user sees, and the README says.
		nodeCPU, err := strconv.Atoi(strings.TrimSuffix(strings.Fields(nodeTop)[1], "m"))
		if err != nil {
			t.Fatalf("kubectl top node: %q: %v", nodeTop, err)
		}
		if last <= 0 || math.Abs(float64(last-nodeCPU)) > math.Max(200, 0.25*float64(nodeCPU)) {
			t.Errorf("kubectl top pod busy: %dm CPU in %s mode, want more than 0 and about the node's %dm", last, mode, nodeCPU)
		}
	}
	// metrics.k8s.io through kube-apiserver, as the HPA reads it.
	raw := c.mustKubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy")
	var pm struct {
		Containers []struct {
			Name  string
			Usage map[string]string
		}
	}
	if err := json.Unmarshal([]byte(raw), &pm); err != nil || len(pm.Containers) != 1 || pm.Containers[0].Name != "spin" {
		t.Errorf("PodMetrics: %v\n%s", err, raw)
	}

	st := c.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", c.name, "--json")
	var status struct {
		Node struct {
			Components []struct{ Name, State string }
		}
	}
	if err := json.Unmarshal([]byte(st.Stdout), &status); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st)
	}
	found := ""
	for _, cs := range status.Node.Components {
		if cs.Name == "metrics-server" {
			found = cs.State
		}
	}
	if found != "ready" {
		t.Errorf("status lists metrics-server as %q, want ready:\n%s", found, st.Stdout)
	}
	if txt := c.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", c.name); !strings.Contains(txt.Stdout, "metrics-server") {
		t.Errorf("status does not list metrics-server:\n%s", txt)
	}
	if lg := c.env.Run(t, 30*time.Second, testutil.Binary(t), "logs", "--name", c.name, "metrics-server"); lg.Code != 0 || strings.TrimSpace(lg.Stdout) == "" {
		t.Errorf("logs metrics-server: %s", lg)
	}

	t.Run("up without --metrics unregisters it", func(t *testing.T) {
		if r := c.down(); r.Code != 0 {
			t.Fatalf("down: %s", r)
		}
		c.extra = nil
		if r := c.up(); r.Code != 0 {
			t.Fatalf("up: %s", r)
		}
		// A registered APIService with no server behind it would make
		// discovery fail for every client.
		if out, err := c.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("APIService still there after up without --metrics: %v\n%s", err, out)
		}
		if out, err := c.kubectl("api-resources"); err != nil {
			t.Errorf("kubectl api-resources: %v\n%s", err, out)
		}
		if st := c.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", c.name); strings.Contains(st.Stdout, "metrics-server ") {
			t.Errorf("status lists metrics-server without --metrics:\n%s", st.Stdout)
		}
	})

	// A state dir from before metrics-server's certificates existed: the
	// next `up --metrics` makes them, and top works.
	t.Run("old state dir", func(t *testing.T) {
		if r := c.down(); r.Code != 0 {
			t.Fatalf("down: %s", r)
		}
		pkiDir := filepath.Join(c.env.DataHome, "usernode", c.name, "var/lib/usernode/pki")
		for _, f := range []string{"metrics-server.crt", "metrics-server.key", "metrics-server-client.crt", "metrics-server-client.key"} {
			if err := os.Remove(filepath.Join(pkiDir, f)); err != nil {
				t.Fatal(err)
			}
		}
		c.extra = []string{"--metrics"}
		if r := c.up(); r.Code != 0 {
			t.Fatalf("up --metrics: %s", r)
		}
		waitFor(t, "kubectl top node", 2*time.Minute, func() (bool, string) {
			out, err := c.kubectl("top", "node", "--no-headers")
			return err == nil && strings.HasPrefix(out, c.name+" "), out
		})
	})
}

// Bad input is refused before anything starts, naming the problem and
// the fix: --metrics on a worker, and --metrics without a metrics-server
// binary.
func TestMetricsBadInput(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	t.Run("worker", func(t *testing.T) {
		// A worker's role comes from its config (`usernode join` writes it).
		cfg := filepath.Join(u.TempDir(t), "worker.yaml")
		if err := os.WriteFile(cfg, []byte("role: worker\nserver: https://192.0.2.9:6443\nhostIP: auto\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := env.Run(t, time.Minute, testutil.Binary(t), "up", "--name", "msworker", "--metrics", "--config", cfg)
		if r.Code == 0 {
			t.Fatalf("up --metrics on a worker succeeded: %s", r)
		}
		for _, s := range []string{"metrics (--metrics)", "control plane", "drop --metrics"} {
			if !strings.Contains(r.Stderr, s) {
				t.Errorf("up --metrics on a worker: stderr lacks %q:\n%s", s, r.Stderr)
			}
		}
	})
	t.Run("no metrics-server binary", func(t *testing.T) {
		bins := testutil.K8sBin(t)
		dir := u.TempDir(t)
		entries, err := os.ReadDir(bins)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "metrics-server" {
				if err := os.Symlink(filepath.Join(bins, e.Name()), filepath.Join(dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		r := env.Run(t, time.Minute, testutil.Binary(t), "up", "--name", "msnobin", "--metrics", "--bin-dir", dir)
		if r.Code == 0 {
			env.Run(t, time.Minute, testutil.Binary(t), "down", "--name", "msnobin", "--purge")
			t.Fatalf("up --metrics without metrics-server succeeded: %s", r)
		}
		for _, s := range []string{"metrics-server not found", "hack/build-metrics-server.sh"} {
			if !strings.Contains(r.Stderr, s) {
				t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
			}
		}
	})
}

// cgroupMode is the node's cgroup mode as status reports it: full or
// degraded.
func cgroupMode(t *testing.T, c *cluster) string {
	t.Helper()
	r := c.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", c.name, "--json")
	var st struct {
		Sandbox struct {
			Cgroup struct{ Mode string }
		}
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.Sandbox.Cgroup.Mode == "" {
		t.Fatalf("status --json: no sandbox.cgroup.mode: %v\n%s", err, r)
	}
	return st.Sandbox.Cgroup.Mode
}
