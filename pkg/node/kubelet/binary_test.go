package kubelet

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/testutil"
)

// The kubelet loads and validates the config before it reads its
// kubeconfig: pointing it at a missing kubeconfig makes it stop right
// there, after validation and before it touches anything. As root it runs
// as nobody all the same.
func TestKubeletValidatesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the kubelet")
	}
	bin := testutil.K8sBin(t)
	// Not t.TempDir(): its parent is 0700, and nobody must read the file.
	dir, err := os.MkdirTemp("", "usernode-kubelet-test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort; it is under /tmp
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, degraded := range []bool{true, false} {
		// Full mode is for cgroup v2 hosts; on others the kubelet refuses
		// cgroup v1 on its own (failCgroupV1's default), as it should.
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); !degraded && err != nil {
			continue
		}
		o := topo(Options{NodeName: "dev", Degraded: degraded,
			ConfigPath: filepath.Join(dir, "kubelet.yaml"), KubeconfigPath: filepath.Join(dir, "missing.kubeconfig"), RootDir: filepath.Join(dir, "root")})
		b, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(o.ConfigPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		flags, _ := Flags(o)
		cmd := exec.Command(filepath.Join(bin, "kubelet"), flags...)
		if os.Getuid() == 0 {
			runuser, err := exec.LookPath("runuser")
			if err != nil {
				t.Skip("as root, needs runuser to drop to nobody")
			}
			cmd = exec.Command(runuser, append([]string{"-u", "nobody", "--", filepath.Join(bin, "kubelet")}, flags...)...)
		}
		out, _ := cmd.CombinedOutput()
		s := string(out)
		if !strings.Contains(s, "invalid kubeconfig") {
			t.Errorf("degraded=%v: kubelet stopped before reading its kubeconfig:\n%s", degraded, s)
		}
		for _, bad := range []string{"strict decoding", "failed to validate", "unknown field"} {
			if strings.Contains(s, bad) {
				t.Errorf("degraded=%v: %q in kubelet output:\n%s", degraded, bad, s)
			}
		}
	}
}
