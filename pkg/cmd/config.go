package cmd

import (
	"net"
	"net/netip"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/usernode/usernode/internal/hostnet"
	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/sandbox"
)

// configFlags are the config file and the model's flags a command takes;
// pkg/cluster does the loading, merging and checking.
type configFlags struct {
	path string
	fs   *pflag.FlagSet
	// join is the server of `usernode join`, which makes the node a worker,
	// and shared the cluster section its control plane publishes.
	join   string
	shared *cluster.ClusterConfig
}

func (f *configFlags) add(fs *pflag.FlagSet, set cluster.FlagSet) {
	f.fs = fs
	cluster.BindFlags(fs, set)
	fs.StringVar(&f.path, "config", "", "usernode's config file (default $XDG_CONFIG_HOME/usernode/config.yaml, if it exists)")
}

// load is the config file with the command line over it.
func (f *configFlags) load() (*cluster.Config, error) {
	path, explicit := f.path, f.path != ""
	if !explicit {
		path = cluster.DefaultConfigFile(os.Getenv)
	}
	return cluster.Load(cluster.Source{Path: path, Explicit: explicit, Flags: f.fs, Getenv: os.Getenv, Join: f.join, Shared: f.shared})
}

// resolve is the checked model.
func (f *configFlags) resolve() (*cluster.Cluster, error) {
	c, err := f.load()
	if err != nil {
		return nil, err
	}
	return c.Resolve(hostEnv())
}

// node is the sandbox of the node the command names: its name and state
// dir are all that commands other than `up` need, so a config that `up`
// would refuse still lets the user stop or inspect a node.
func (f *configFlags) node() (sandbox.Config, error) {
	c, err := f.load()
	if err != nil {
		return sandbox.Config{}, err
	}
	cfg := sandbox.Config{Name: c.Name, StateDir: c.StateDir, Command: []string{"-"}}
	return cfg, cfg.Defaults(os.Getenv)
}

// hostEnv is what a config is checked against here: this host's addresses
// and the registries.
func hostEnv() cluster.Env {
	env := cluster.Env{Getenv: os.Getenv, Networks: network.Names(),
		Runtimes: node.Runtimes.Names(), CNIs: node.CNIs.Names()}
	for _, n := range env.Networks {
		if d, err := network.Lookup(n); err == nil && d.OwnAddress {
			env.OwnAddress = append(env.OwnAddress, n)
		}
	}
	// One pass over the interfaces: each address, and its interface's MTU.
	if ifs, err := net.Interfaces(); err == nil {
		env.MTUs = map[netip.Addr]int{}
		for _, i := range ifs {
			addrs, _ := i.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						ones, _ := n.Mask.Size()
						env.HostAddrs = append(env.HostAddrs, netip.PrefixFrom(ip.Unmap(), ones))
						env.MTUs[ip.Unmap()] = i.MTU
					}
				}
			}
		}
	}
	if up, ok := hostnet.DefaultRoute(); ok {
		env.DefaultRouteIP = up.IP
	}
	return env
}

// newLogger is what a command tells the user through: its stderr, at the
// root's -v level.
func newLogger(c *cobra.Command) *log.Logger {
	v, _ := c.Flags().GetInt("verbose")
	return log.New(c.ErrOrStderr(), v)
}
