package node

import (
	"slices"

	"github.com/usernode/usernode/internal/supervise"
)

// GoGC is the Go garbage collector's target every daemon of the node runs
// with (each is a Go program: containerd, CRI-O, etcd, the five Kubernetes
// daemons, CoreDNS, flanneld, metrics-server). Go's default, 100, lets a
// heap grow to twice what is live before collecting; on an idle node
// kube-apiserver's live heap is ~100 MB, so half its memory was garbage
// waiting for a collection. 50 measured 203 -> 162 MB anonymous memory for
// kube-apiserver and 1-3 MB less for each other daemon, 593 -> 543 MB PSS
// for the node (docs/benchmarks.md). A memory limit (GOMEMLIMIT=150MiB)
// took kube-apiserver 25 MB lower still but was not kept: when the live
// heap nears it (a busy cluster's may), Go collects without pause, up to
// half the CPU, and a node runs on a laptop's few cores.
const GoGC = "GOGC=50"

// SettledGoGC lowers kube-node's daemons (the five Kubernetes daemons, etcd
// and CoreDNS as the one executable k8s/kubenode builds) to GOGC=25 a
// minute after each starts; other programs ignore it. A heap that has
// settled is where a low target saves memory: GOGC=25 from the start took
// a node's PSS ~500 -> ~470 MB (kube-apiserver ~20 MB of it) with no
// measurable idle CPU, but cost 25% more CPU before Ready (the heaps grow
// from nothing then: 4.6 against 3.8 s of CPU, Ready 6.4 against 5.9 s,
// five alternated cold-cache ups, docs/benchmarks.md). The names are
// k8s/kubenode's SettledGOGCEnv and SettleAfterEnv (another module).
var SettledGoGC = []string{"KUBE_NODE_SETTLED_GOGC=25", "KUBE_NODE_SETTLE_AFTER=60s"}

// tuneGo gives every long-running step the node's Go runtime settings.
// Oneshots (image imports, kubectl's deletes) exit within seconds: they keep
// Go's defaults.
func tuneGo(steps []supervise.Step) {
	for i := range steps {
		if !steps[i].Oneshot {
			// Clipped: a step's Env may share its array with another's.
			steps[i].Env = append(append(slices.Clip(steps[i].Env), GoGC), SettledGoGC...)
		}
	}
}
