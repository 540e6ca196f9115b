package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

type genOptions struct {
	Name    string // node name
	State   string // hardway.sh's HW_STATE
	BinDir  string // kubelet, kube-apiserver, ..., etcd and coredns
	APIPort int    // host port for kube-apiserver, for the host kubeconfig
	Pause   string // a static binary that acts as pause; "": busybox's sleep
}

// gen renders the hard way's node with usernode's own composition
// (node.Plan, what `up` runs inside its sandbox) under STATE, laid out as
// the node sees it: STATE/etc/usernode and STATE/etc/cni/net.d are copied
// into place by hardway.sh, STATE/var/lib/usernode (the PKI, kept if it is
// there, and the image archives) is bound at /var/lib/usernode. Each
// component's command line goes to STATE/etc/usernode/NAME.args, one flag
// a line, and the host kubeconfig to STATE/kubeconfig. Run as the node's
// user.
func gen(o genOptions) error {
	c := cluster.Default()
	c.Name, c.StateDir, c.BinDir = o.Name, o.State, o.BinDir
	cl, err := c.Resolve(cluster.Env{Getenv: os.Getenv})
	if err != nil {
		return err
	}
	comps, _, err := node.Components(cl.Self())
	if err != nil {
		return err
	}
	bins, err := node.FindBinaries(node.Tools(comps), node.Search{BinDir: o.BinDir}, os.Getenv)
	if err != nil {
		return err
	}
	if cl.KubernetesVersion, err = node.BinaryVersion(bins["kubelet"]); err != nil {
		return err
	}
	degraded := cgroup.Host{UID: os.Getuid(), PID: "self"}.Detect().Mode != cgroup.Full
	// The hard way writes its CNI config by hand for the range the
	// controller-manager gives the first node.
	steps, err := node.Plan(cl, node.Build{Binaries: bins, Degraded: degraded, Root: o.State, Pause: o.Pause,
		API: node.FixedPodCIDR(node.FirstNodeCIDR(cl))})
	if err != nil {
		return err
	}
	for _, s := range steps {
		if s.Run != nil {
			if err := s.Run(context.Background()); err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			continue
		}
		if len(s.Argv) < 2 {
			continue
		}
		for _, f := range s.Argv[1:] {
			if strings.Contains(f, "\n") {
				return fmt.Errorf("%s: flag %q has a newline", s.Name, f)
			}
		}
		args := strings.Join(s.Argv[1:], "\n") + "\n"
		if err := os.WriteFile(filepath.Join(o.State, node.ConfigDir, s.Name+".args"), []byte(args), 0o600); err != nil {
			return err
		}
	}
	ps := pki.Paths(filepath.Join(o.State, node.PKIDir))
	host, err := kubeconfig.FromPKI(kubeconfig.ContextName(o.Name), fmt.Sprintf("https://127.0.0.1:%d", o.APIPort), ps, ps.Admin)
	if err != nil {
		return err
	}
	return kubeconfig.Write(filepath.Join(o.State, "kubeconfig"), host)
}
