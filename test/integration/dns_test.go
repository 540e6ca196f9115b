package integration

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
)

// dnsQueryTCP is a DNS query for name's A record as sent over TCP (RFC
// 1035 4.2.2: a two-byte length, then the message), written as a printf
// format of octal escapes so busybox's printf can send it through nc.
func dnsQueryTCP(name string) string {
	msg := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0} // id, RD, QDCOUNT=1
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0, 0, 1, 0, 1) // root, type A, class IN
	msg = append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
	var b strings.Builder
	for _, c := range msg {
		fmt.Fprintf(&b, `\%03o`, c)
	}
	return b.String()
}

// TestDNS: a pod resolves cluster names through the node's CoreDNS at the
// kubelet's clusterDNS (10.96.0.10), which kube-proxy forwards to CoreDNS
// on the node's IP: an explicit query, the pod's search path (its own
// namespace, then kubernetes.default through the libc resolver), and DNS
// over TCP.
func TestDNS(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	c := &cluster{t: t, env: u.NewEnv(t), name: "dnstest", kubectlBin: filepath.Join(bins, "kubectl"), api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp"))}
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	c.extra = []string{"--keep-source-ip"} // DNS must work with the forwarder's policy routing too
	// Registered first: a node that failed halfway through up is stopped too.
	t.Cleanup(func() {
		if r := c.down("--purge"); r.Code != 0 {
			t.Errorf("down: %s", r)
		}
	})
	r := c.up()
	if r.Code != 0 {
		t.Fatalf("up: %s", r)
	}
	if m := regexp.MustCompile(`usernode: coredns\s+([0-9.]+s)`).FindStringSubmatch(r.Stderr); m != nil {
		t.Logf("CoreDNS ready %s after it started", m[1])
	} else {
		t.Errorf("up did not start coredns:\n%s", r.Stderr)
	}

	if ip := strings.TrimSpace(c.mustKubectl("get", "service", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")); ip != "10.96.0.10" {
		t.Fatalf("kube-dns ClusterIP = %q, want 10.96.0.10", ip)
	}

	// A Service in the pod's own namespace, found through the search path.
	const ns = "dns-probe"
	c.mustKubectl("create", "namespace", ns)
	c.mustKubectl("create", "service", "clusterip", "hello", "-n", ns, "--tcp=80:80")
	helloIP := strings.TrimSpace(c.mustKubectl("get", "service", "-n", ns, "hello", "-o", "jsonpath={.spec.clusterIP}"))
	// Pods are refused until the namespace's default service account exists.
	waitFor(t, "service account default/"+ns, time.Minute, func() (bool, string) {
		out, err := c.kubectl("get", "serviceaccount", "-n", ns, "default")
		return err == nil, out
	})

	// busybox's nslookup applies resolv.conf's search list only when it
	// reads resolv.conf (no server argument) and the name has no dot; ping
	// resolves through the libc resolver, which applies it to any name
	// with fewer dots than ndots (5).
	script := `echo "== explicit"; nslookup kubernetes.default.svc.cluster.local 10.96.0.10
echo "== search"; nslookup hello
echo "== libc"; ping -c1 -W1 kubernetes.default
echo "== tcp"; printf '` + dnsQueryTCP("kubernetes.default.svc.cluster.local") + `' | nc -w3 10.96.0.10 53 | hexdump -v -e '/1 "%02x"'; echo
echo "== resolv.conf"; cat /etc/resolv.conf
echo "== end"`
	pod := `apiVersion: v1
kind: Pod
metadata: {name: dns-client, namespace: ` + ns + `}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: c
    image: docker.io/library/busybox:usernode
    imagePullPolicy: Never
    command: ["sh", "-c", ` + fmt.Sprintf("%q", script) + `]
`
	cmd := exec.Command(c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(pod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply pod: %v\n%s", err, out)
	}
	waitFor(t, "pod dns-client finished", 3*time.Minute, func() (bool, string) {
		out, _ := c.kubectl("get", "pod", "-n", ns, "dns-client", "-o", "jsonpath={.status.phase}")
		return out == "Succeeded" || out == "Failed", out
	})
	logs := c.mustKubectl("logs", "-n", ns, "dns-client")
	section := func(name string) string {
		_, after, _ := strings.Cut(logs, "== "+name+"\n")
		before, _, _ := strings.Cut(after, "\n== ")
		return before
	}
	t.Logf("pod output:\n%s", logs)

	if s := section("explicit"); !strings.Contains(s, "Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\n") {
		t.Errorf("nslookup kubernetes.default.svc.cluster.local 10.96.0.10 did not answer 10.96.0.1:\n%s", s)
	}
	if s := section("search"); !strings.Contains(s, "Name:\thello."+ns+".svc.cluster.local\nAddress: "+helloIP+"\n") {
		t.Errorf("nslookup hello (search path) did not answer hello.%s.svc.cluster.local = %s:\n%s", ns, helloIP, s)
	}
	// ping gets no reply from a ClusterIP; the name was resolved if it
	// says which address it pings.
	if s := section("libc"); !strings.Contains(s, "PING kubernetes.default (10.96.0.1)") {
		t.Errorf("ping kubernetes.default did not resolve it to 10.96.0.1:\n%s", s)
	}
	// The answer's RDATA: 10.96.0.1.
	if s := section("tcp"); !strings.Contains(s, "0004"+"0a600001") {
		t.Errorf("DNS over TCP to 10.96.0.10:53 did not answer 10.96.0.1: %q", s)
	}
	if s := section("resolv.conf"); !strings.Contains(s, "nameserver 10.96.0.10") || !strings.Contains(s, "search "+ns+".svc.cluster.local svc.cluster.local cluster.local") {
		t.Errorf("pod resolv.conf:\n%s", s)
	}
}
