package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/join"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/sandbox"
)

func init() { register(joinCommand) }

func joinCommand() *cobra.Command {
	var cf configFlags
	var detach bool
	var token, pin string
	c := &cobra.Command{
		Use:   "join SERVER --token TOKEN --ca-cert-hash sha256:HASH",
		Short: "Start a worker node of the cluster at SERVER on this host, as your user",
		Long: `Start a worker node on this host that joins the cluster whose API is at
SERVER: the command line ` + "`usernode token create`" + ` prints on its control plane.

The worker runs the CRI runtime, the kubelet, the pod network and kube-proxy,
all as your user. Before it trusts anything, join checks the API server
against the CA pin (--ca-cert-hash); the kubelet then trades the token for its
own certificate. The worker's kubelet port (--kubelet-port) is forwarded
from --host-ip (default: this host's address on its default route), where
the control plane reaches it for logs and exec.

The join is recorded in the node's state dir: later, ` + "`usernode up`" + ` (with the
same --name) starts the same worker, and ` + "`usernode down`" + ` stops it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			l := newLogger(c)
			tok, err := bootstraptoken.Parse(token)
			if err != nil {
				return fmt.Errorf("--token: %w", err)
			}
			cf.join = args[0]
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			cl, err := cfg.Resolve(hostEnv())
			if err != nil {
				return err
			}
			sb, err := node.SandboxConfig(cl, os.Getenv)
			if err != nil {
				return err
			}
			// What can be checked on this host is, before the cluster is
			// asked anything: nothing is written until all is well.
			if _, err := node.Check(cl, sb); err != nil {
				return err
			}
			_, statErr := os.Stat(sb.StateDir)
			fresh := errors.Is(statErr, os.ErrNotExist)
			ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
			defer cancel()
			t := time.Now()
			jc, err := join.Discover(ctx, args[0], tok, pin)
			if err != nil {
				return err
			}
			// The node takes the cluster's address ranges, DNS and VXLAN
			// port: the model again, with the cluster's section under it.
			if cf.shared, err = node.SharedConfig(ctx, jc, tok); err != nil {
				return err
			}
			if cfg, err = cf.load(); err != nil {
				return err
			}
			if cl, err = cfg.Resolve(hostEnv()); err != nil {
				return err
			}
			if _, err := node.Check(cl, sb); err != nil {
				return err
			}
			if err := node.CheckJoin(ctx, jc, tok, cl, node.Joined(sb)); err != nil {
				return err
			}
			l.Infof("the cluster at %s matches the CA pin (%.1fs); starting worker %q (host IP %s)", jc.Server, time.Since(t).Seconds(), cl.Self().Name, cl.Self().HostIP)
			if err := node.WriteJoin(sb, cfg, jc, tok); err != nil {
				return err
			}
			err = runUp(cl, detach, l)
			if err != nil && fresh && os.Getenv(node.ForegroundEnv) == "" {
				if _, runErr := sandbox.Supervisor(sb.RuntimeDir); runErr != nil {
					// A join that did not get its node up leaves nothing
					// behind: the next try starts clean.
					if rmErr := os.RemoveAll(sb.StateDir); rmErr != nil {
						l.Warnf("removing %s: %v", sb.StateDir, rmErr)
					}
				}
			}
			return err
		},
	}
	cf.add(c.Flags(), cluster.AllFlags)
	c.Flags().Lookup("net").Usage += ": " + netDriverNames()
	c.Flags().Lookup("cri").Usage += ": " + strings.Join(node.Runtimes.Names(), ", ")
	c.Flags().StringVar(&token, "token", "", "the bootstrap token (ID.SECRET) from `usernode token create`")
	c.Flags().StringVar(&pin, "ca-cert-hash", "", "the cluster CA's pin, sha256:HEX, from `usernode token create`")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "return once the node is Ready and leave it running in the background")
	for _, f := range []string{"token", "ca-cert-hash"} {
		_ = c.MarkFlagRequired(f) // the flags exist: it cannot fail
	}
	return c
}
