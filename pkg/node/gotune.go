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

// tuneGo gives every long-running step the node's Go runtime settings.
// Oneshots (kubectl apply, image imports) exit within seconds: they keep
// Go's defaults.
func tuneGo(steps []supervise.Step) {
	for i := range steps {
		if !steps[i].Oneshot {
			// Clipped: a step's Env may share its array with another's.
			steps[i].Env = append(slices.Clip(steps[i].Env), GoGC)
		}
	}
}
