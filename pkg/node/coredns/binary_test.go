package coredns

import (
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
)

// The CoreDNS that `make k8s` builds links every plugin the Corefile
// names, loads the Corefile, serves /health, and is not ready while its
// kubernetes plugin has not synced (here there is no API server to sync
// with). On loopback and free ports, so it runs anywhere.
func TestCoreDNSLoadsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs coredns")
	}
	dir := testutil.K8sBin(t)
	bin := filepath.Join(dir, "coredns")

	out, err := exec.Command(bin, "-plugins").Output()
	if err != nil {
		t.Fatalf("coredns -plugins: %v", err)
	}
	linked := strings.Fields(string(out))
	cf, err := Corefile(topo(Options{NodeName: "dev"}))
	if err != nil {
		t.Fatal(err)
	}
	// The server block's directives are the lines indented once.
	for _, line := range strings.Split(string(cf), "\n") {
		if strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "     ") && strings.TrimSpace(line) != "}" {
			if d := strings.Fields(line)[0]; !slices.Contains(linked, d) {
				t.Errorf("the Corefile uses %q, which coredns does not link (k8s/coredns/main.go): %v", d, linked)
			}
		}
	}

	tmp := t.TempDir()
	kc := filepath.Join(tmp, "kubeconfig")
	if err := kubeconfig.Write(kc, kubeconfig.New(kubeconfig.Options{Name: "none", Server: "https://127.0.0.1:1"})); err != nil {
		t.Fatal(err)
	}
	health, ready := "127.0.0.1:"+strconv.Itoa(int(testutil.FreePort(t, "tcp"))), "127.0.0.1:"+strconv.Itoa(int(testutil.FreePort(t, "tcp")))
	cf, err = Corefile(topo(Options{NodeName: "dev", NodeIP: netip.MustParseAddr("127.0.0.1"), Port: testutil.FreePort(t, "tcp"),
		HealthAddr: health, ReadyAddr: ready, Kubeconfig: kc}))
	if err != nil {
		t.Fatal(err)
	}
	cfPath := filepath.Join(tmp, "Corefile")
	if err := os.WriteFile(cfPath, cf, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", cfPath)
	logPath := filepath.Join(tmp, "log")
	log, _ := os.Create(logPath)
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once coredns has ended, waitErr then says how. A
	// close, not a send: the check below and the cleanup both wait on it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited }) // how it ends does not matter

	get := func(url string) int {
		resp, err := (&http.Client{Timeout: time.Second}).Get(url)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close() // only the status is wanted
		return resp.StatusCode
	}
	deadline := time.Now().Add(30 * time.Second)
	for get("http://"+health+"/health") != http.StatusOK {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("coredns exited (%v):\n%s\n%s", waitErr, b, cf)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("no /health after 30s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := get("http://" + ready + "/ready"); code == http.StatusOK {
		t.Errorf("/ready answers 200 with no API server to sync with: the supervisor's probe would pass too early")
	}
}
