package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/usernode/usernode/pkg/network/drivers"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/port/builtin"
	"github.com/usernode/usernode/pkg/sandbox"
)

// nodeFlags are the flags every command that names a node shares.
type nodeFlags struct {
	name       string
	stateDir   string
	configFile string
	fs         *pflag.FlagSet
	file       *node.File
}

func (f *nodeFlags) add(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.name, "name", "usernode", "node name (a DNS label); each node has its own state and runtime dir")
	fs.StringVar(&f.stateDir, "state-dir", "", "where the node's persistent state lives (default $XDG_DATA_HOME/usernode/NAME)")
	fs.StringVar(&f.configFile, "config", "", "usernode's config file (default $XDG_CONFIG_HOME/usernode/config.yaml, if it exists)")
}

// portFlags are the port forwarder's flags, for the commands that start
// one.
type portFlags struct {
	busyPoll   time.Duration
	keepSource bool
}

func (p *portFlags) add(fs *pflag.FlagSet) {
	fs.DurationVar(&p.busyPoll, "port-busy-poll", builtin.DefaultBusyPoll, "how long the port forwarder keeps polling after a small message instead of sleeping: lower latency for some CPU (0: off)")
	fs.BoolVar(&p.keepSource, "keep-source-ip", false, "TCP servers in the node see the client's IPv4 address instead of 127.0.0.1 (adds policy routing and an nft table in the node; needs nft)")
}

// portOptions are the flags, or else the config file's values.
func (f *nodeFlags) portOptions(p portFlags) sandbox.PortOptions {
	if !f.fs.Changed("port-busy-poll") && f.file != nil && f.file.PortBusyPoll != "" {
		p.busyPoll, _ = time.ParseDuration(f.file.PortBusyPoll) // LoadFile checked it
	}
	if !f.fs.Changed("keep-source-ip") && f.file != nil && f.file.KeepSourceIP {
		p.keepSource = true
	}
	o := sandbox.PortOptions{BusyPoll: p.busyPoll, KeepSourceIP: p.keepSource}
	if o.BusyPoll <= 0 {
		o.BusyPoll = -1
	}
	return o
}

// portArgs are the flags that give o again, for a re-run of the command.
func portArgs(o sandbox.PortOptions) []string {
	return []string{"--port-busy-poll", max(o.BusyPoll, 0).String(), fmt.Sprintf("--keep-source-ip=%t", o.KeepSourceIP)}
}

// load reads the config file and takes from it what the command line did
// not set.
func (f *nodeFlags) load() error {
	if f.file != nil {
		return nil
	}
	path, explicit := f.configFile, f.configFile != ""
	if !explicit {
		path = node.DefaultConfigFile(os.Getenv)
	}
	file := &node.File{}
	if path != "" {
		var err error
		if file, err = node.LoadFile(path, explicit); err != nil {
			return err
		}
	}
	f.file = file
	if file.Name != "" && !f.fs.Changed("name") {
		f.name = file.Name
	}
	if file.StateDir != "" && !f.fs.Changed("state-dir") {
		f.stateDir = file.StateDir
	}
	return nil
}

func (f *nodeFlags) config(command []string) (sandbox.Config, error) {
	if err := f.load(); err != nil {
		return sandbox.Config{}, err
	}
	cfg := sandbox.Config{Name: f.name, StateDir: f.stateDir, Command: command}
	return cfg, cfg.Defaults(os.Getenv)
}

func init() {
	register(func() *cobra.Command {
		sb := &cobra.Command{
			Use:   "sandbox",
			Short: "Run commands in the node's sandbox without the node (for development)",
		}
		var nf nodeFlags
		var netDriver string
		var ports []string
		var allowLoopback bool
		var mtu int
		var pf portFlags
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
				cfg, err := nf.config(args)
				if err != nil {
					return err
				}
				cfg.Net = netDriver
				cfg.NetOptions.AllowHostLoopback = allowLoopback
				cfg.NetOptions.MTU = mtu
				cfg.PortOptions = nf.portOptions(pf)
				if cfg.Ports, err = parsePorts(ports); err != nil {
					return err
				}
				opt, err := sandboxOpt(cfg, c.ErrOrStderr())
				if err != nil {
					return err
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
		nf.add(run.Flags())
		run.Flags().StringVar(&netDriver, "net", drivers.Default, "network driver: "+netDriverNames())
		run.Flags().StringArrayVarP(&ports, "publish", "p", nil, "forward a host port into the node: [HOST_IP:]HOST_PORT:NODE_PORT[/tcp|udp] (HOST_IP defaults to 127.0.0.1)")
		run.Flags().BoolVar(&allowLoopback, "allow-host-loopback", false, "let the node reach the host's 127.0.0.1 (off: pods must not reach host-local services)")
		run.Flags().IntVar(&mtu, "mtu", 0, "MTU of the node's interface (0: the driver's default)")
		pf.add(run.Flags())
		sb.AddCommand(run)
		return sb
	})
	register(func() *cobra.Command {
		var nf nodeFlags
		c := &cobra.Command{
			Use:   "enter [flags] [-- COMMAND [ARG...]]",
			Short: "Run a shell or COMMAND inside a running node's namespaces, as its root",
			RunE: func(c *cobra.Command, args []string) error {
				cfg, err := nf.config([]string{"-"})
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
		nf.add(c.Flags())
		return c
	})
}
