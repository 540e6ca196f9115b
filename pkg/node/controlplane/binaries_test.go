package controlplane

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/testutil"
)

// Each component parses its whole command line before --version makes it
// exit, so an unknown or malformed flag fails here.
func TestBinariesAcceptFlags(t *testing.T) {
	dir := testutil.K8sBin(t)
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
		// "Kubernetes v1.37.2", or etcd's "etcd Version: 3.7.0".
		if err != nil || (!strings.Contains(string(out), "Kubernetes v") && !strings.Contains(string(out), "etcd Version")) {
			t.Errorf("%s rejects its flags: %v\n%s", name, err, out)
		}
	}
}
