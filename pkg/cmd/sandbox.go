package cmd

import (
	"context"
	"errors"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/internal/memtrim"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/sandbox"
)

func init() {
	register(func() *cobra.Command {
		sb := &cobra.Command{
			Use:   "sandbox",
			Short: "Run commands in the node's sandbox without the node (for development)",
		}
		var cf configFlags
		var ports []string
		var allowLoopback, restart bool
		var mtu int
		run := &cobra.Command{
			Use:   "run [flags] -- COMMAND [ARG...]",
			Short: "Build the sandbox, run COMMAND as its first process, tear it down when it exits",
			Long: `Build the node's sandbox (user namespace with your full subuid/subgid range,
mount namespace with /etc, /run, /var/lib and /var/log writable, network,
pid and cgroup namespaces), run COMMAND inside as uid 0 of the user
namespace, and tear everything down when it exits or on SIGTERM/SIGINT.
/var/lib and /var/log persist under the state dir.`,
			Args: cobra.MinimumNArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := cf.resolve()
				if err != nil {
					return err
				}
				o := cl.Options
				cfg := sandbox.Config{Name: cl.Self().Name, StateDir: o.StateDir, Command: args, Net: o.Net,
					NetOptions:  network.Options{Subnet: cl.Self().Subnet, AllowHostLoopback: allowLoopback, MTU: mtu},
					PortOptions: sandbox.PortOptions{BusyPoll: o.PortBusyPoll, KeepSourceIP: o.KeepSourceIP}}
				if err := cfg.Defaults(os.Getenv); err != nil {
					return err
				}
				if cfg.Ports, err = parsePorts(ports); err != nil {
					return err
				}
				opt, err := sandboxOpt(cfg.Net, newLogger(c))
				if err != nil {
					return err
				}
				if restart {
					opt.Restart = &sandbox.DefaultRestart
				}
				// Once the sandbox is up this process only waits for it
				// to end (and restarts the network helper if it dies):
				// what starting it left mapped and allocated goes back
				// (internal/memtrim has the figures).
				opt.Ready = func(context.Context, *sandbox.State) error {
					memtrim.Trim()
					memtrim.Quiet()
					return nil
				}
				code, err := sandbox.Run(context.Background(), cfg, opt)
				if err != nil {
					return err
				}
				if code != 0 {
					return ExitError{Code: code}
				}
				return nil
			},
		}
		cf.add(run.Flags(), cluster.NodeFlags|cluster.NetFlags|cluster.PortFlags)
		run.Flags().Lookup("net").Usage += ": " + netDriverNames()
		run.Flags().StringArrayVarP(&ports, "publish", "p", nil, "forward a host port into the node: [HOST_IP:]HOST_PORT:NODE_PORT[/tcp|udp] (HOST_IP defaults to 127.0.0.1)")
		run.Flags().BoolVar(&allowLoopback, "allow-host-loopback", false, "let the node reach the host's 127.0.0.1 (off: pods must not reach host-local services)")
		run.Flags().IntVar(&mtu, "mtu", 0, "MTU of the node's interface (0: the driver's default)")
		run.Flags().BoolVar(&restart, "restart", false, "build the sandbox again, COMMAND included, when a process of it is killed (as `up` does); COMMAND exiting still ends it")
		sb.AddCommand(run)
		return sb
	})
	register(func() *cobra.Command {
		var cf configFlags
		c := &cobra.Command{
			Use:   "enter [flags] [-- COMMAND [ARG...]]",
			Short: "Run a shell or COMMAND inside a running node's namespaces, as its root",
			RunE: func(_ *cobra.Command, args []string) error {
				cfg, err := cf.node()
				if err != nil {
					return err
				}
				cmd, err := sandbox.Enter(cfg.RuntimeDir, args)
				if err != nil {
					return err
				}
				if err := cmd.Run(); err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						return ExitError{Code: ee.ExitCode()}
					}
					return err
				}
				return nil
			},
		}
		cf.add(c.Flags(), cluster.NodeFlags)
		return c
	})
}
