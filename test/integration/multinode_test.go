package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
