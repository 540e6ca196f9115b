package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
)

// TestUpCRIO: the node with CRI-O as its runtime (`up --cri crio`), in
// this host's mode (degraded on the hybrid CI host: no cgroup delegation,
// which containerd 2.x cannot do without). The kubelet reports CRI-O and
// a user namespace (the KEP's check); the images usernode imports run, by
// their full and their short name; logs, exec and a NodePort work; after
// down and up the pod runs again from the same store.
func TestUpCRIO(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	if _, err := exec.LookPath(filepath.Join(bins, "crio")); err != nil {
		t.Fatalf("no crio in %s: `make test` builds it there (hack/build-crio.sh)", bins)
	}
	c := &cluster{t: t, env: u.NewEnv(t), name: "tcrio", kubectlBin: filepath.Join(bins, "kubectl"), api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp"))}
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	c.extra = []string{"--cri", "crio"}
	r := c.up()
	if r.Code != 0 {
		t.Fatalf("up --cri crio: %s", r)
	}
	t.Cleanup(func() { c.down("--purge") })

	var node struct {
		Status struct {
			NodeInfo struct {
				ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
				RunningInUserNamespace  bool   `json:"runningInUserNamespace"`
			} `json:"nodeInfo"`
		}
	}
	if err := json.Unmarshal([]byte(c.mustKubectl("get", "node", c.name, "-o", "json")), &node); err != nil {
		t.Fatal(err)
	}
	if ni := node.Status.NodeInfo; !strings.HasPrefix(ni.ContainerRuntimeVersion, "cri-o://1.36") || !ni.RunningInUserNamespace {
		t.Errorf("node info %+v: want CRI-O 1.36, in a user namespace", ni)
	}

	// restart Always: the pod outlives the node's down and up.
	run := func(name, image string) {
		c.mustKubectl("run", name, "--image="+image, "--image-pull-policy=Never", "--restart=Always", "--labels=app="+name,
			"--", "sh", "-c", "echo hello-from-crio; echo served-by-"+name+" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
	}
	running := func(name string) {
		waitFor(t, name+" Running", 3*time.Minute, func() (bool, string) {
			out, _ := c.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")
			return out == "Running", out
		})
	}
	run("full", busybox)
	run("short", "busybox:usernode")
	running("full")
	running("short")
	waitFor(t, "kubectl logs", 30*time.Second, func() (bool, string) {
		out, err := c.kubectl("logs", "full")
		return err == nil && strings.Contains(out, "hello-from-crio"), out
	})
	if out, err := c.kubectl("exec", "full", "--", "cat", "/proc/1/cmdline"); err != nil || !strings.Contains(out, "httpd") {
		t.Errorf("kubectl exec: %v %s", err, out)
	}
	c.mustKubectl("expose", "pod", "full", "--type=NodePort", "--port=80", "--target-port=8080", "--name=np", "--overrides", `{"spec":{"ports":[{"port":80,"targetPort":8080,"nodePort":30777}]}}`)
	waitFor(t, "the NodePort on the host", 30*time.Second, func() (bool, string) {
		out, err := exec.Command("curl", "-s", "-m", "5", "http://127.0.0.1:30777/").CombinedOutput()
		return err == nil && strings.Contains(string(out), "served-by-full"), string(out)
	})
	st := c.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", c.name)
	if !regexp.MustCompile(`(?m)^crio\s+\d+\s+ready`).MatchString(st.Stdout) {
		t.Errorf("status does not show crio running:\n%s", st.Stdout)
	}

	if r := c.down(); r.Code != 0 {
		t.Fatalf("down: %s", r)
	}
	if r := c.up(); r.Code != 0 {
		t.Fatalf("up again: %s", r)
	}
	running("full")
	waitFor(t, "the pod serving again after down and up", time.Minute, func() (bool, string) {
		out, err := exec.Command("curl", "-s", "-m", "5", "http://127.0.0.1:30777/").CombinedOutput()
		return err == nil && strings.Contains(string(out), "served-by-full"), string(out)
	})
}
