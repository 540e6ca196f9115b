package integration

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/usernode/usernode/internal/testutil"
)

// upRuntime is a CRI runtime TestUp runs the whole node test with.
type upRuntime struct {
	name string
	// component is its name in up's phases and `usernode status`.
	component string
	// node names the node, so one runtime's leftovers cannot pass for
	// another's.
	node string
	// version starts the Node's containerRuntimeVersion.
	version string
	flags   []string
	// needs is a program the runtime needs in the test's bin dir.
	needs string
	// first runs the checks that are the control plane's, not the
	// runtime's.
	first bool
	// podStats: the kubelet's /stats/summary lists the pods. With CRI-O
	// the kubelet takes pod stats from cAdvisor's cgroups, which a node
	// without delegation does not make per pod: measured (CRI-O 1.36.3,
	// degraded mode) the summary has the node's and the image
	// filesystem's figures and no pod. containerd's come through the CRI.
	podStats bool
}

// TestUp runs the node test once per runtime this host can run: containerd
// 1.x from Debian and CRI-O (built by `make test`), both in this host's
// mode. containerd 2.x cannot run without a delegated cgroup tree, which
// this host does not give: up's refusal is tested here, its node in the
// VM tier (test/vm), as is CRI-O's full mode.
func TestUp(t *testing.T) {
	for _, rt := range []upRuntime{
		{name: "containerd", component: "containerd", node: "t5", version: "containerd://1.", first: true, podStats: true},
		{name: "crio", component: "crio", node: "t5crio", version: "cri-o://1.36", flags: []string{"--cri", "crio"}, needs: "crio"},
	} {
		t.Run(rt.name, func(t *testing.T) {
			if rt.needs != "" {
				if _, err := exec.LookPath(filepath.Join(testutil.K8sBin(t), rt.needs)); err != nil {
					t.Fatalf("no %s in %s: `make test` builds it there (hack/build-crio.sh)", rt.needs, testutil.K8sBin(t))
				}
			}
			testUp(t, rt)
		})
	}
}
