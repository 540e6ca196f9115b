package controlplane

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// k8sBin is the directory of the built binaries (hack/build-k8s.sh prints
// it). The tests that run them are skipped without it.
func k8sBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the Kubernetes binaries")
	}
	dir := os.Getenv("USERNODE_K8S_BIN")
	if dir == "" {
		t.Skip("USERNODE_K8S_BIN (the directory hack/build-k8s.sh prints) is not set")
	}
	return dir
}

// Each component parses its whole command line before --version makes it
// exit, so an unknown or malformed flag fails here.
func TestBinariesAcceptFlags(t *testing.T) {
	dir := k8sBin(t)
	o := topo(Options{NodeName: "dev"})
	for name, fn := range map[string]func(Options) ([]string, error){
		"etcd":                    EtcdFlags,
		"kube-apiserver":          APIServerFlags,
		"kube-controller-manager": ControllerManagerFlags,
		"kube-scheduler":          SchedulerFlags,
	} {
		flags, err := fn(o)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(dir, name), append(flags, "--version")...).CombinedOutput()
		// "Kubernetes v1.37.2", or etcd's "etcd Version: 3.6.16".
		if err != nil || !(strings.Contains(string(out), "Kubernetes v") || strings.Contains(string(out), "etcd Version")) {
			t.Errorf("%s rejects its flags: %v\n%s", name, err, out)
		}
	}
}
