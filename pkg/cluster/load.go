package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// FlagSet chooses which of the config's flags a command takes.
type FlagSet int

// The flag groups.
const (
	// NodeFlags name a node: every command that acts on one.
	NodeFlags FlagSet = 1 << iota
	// NetFlags choose the network driver (`up`, `sandbox run`).
	NetFlags
	// PortFlags tune the port forwarder (`up`, `sandbox run`).
	PortFlags
	// UpFlags are the rest of `up`'s (and `install`'s).
	UpFlags
	// RuntimeFlags say which CRI runtime runs and where its binaries are
	// (`up`, and doctor, which looks for them as `up` would).
	RuntimeFlags
	// AllFlags are `up`'s.
	AllFlags = NodeFlags | NetFlags | PortFlags | UpFlags | RuntimeFlags
)

// flagDef binds one flag to one field. Each field has at most one flag, and
// its help text says what the field's doc says.
type flagDef struct {
	name, field, usage string
	set                FlagSet
	// path fields are made absolute when passed on (install's unit).
	path bool
	bind func(fs *pflag.FlagSet, c *Config, name, usage string)
}

func strFlag(p func(*Config) *string) func(*pflag.FlagSet, *Config, string, string) {
	return func(fs *pflag.FlagSet, c *Config, name, usage string) { fs.StringVar(p(c), name, *p(c), usage) }
}

func durationFlag(p func(*Config) *string) func(*pflag.FlagSet, *Config, string, string) {
	return func(fs *pflag.FlagSet, c *Config, name, usage string) { fs.Var((*durationValue)(p(c)), name, usage) }
}

func portFlag(p func(*Config) *uint16) func(*pflag.FlagSet, *Config, string, string) {
	return func(fs *pflag.FlagSet, c *Config, name, usage string) { fs.Uint16Var(p(c), name, *p(c), usage) }
}

var flagDefs = []flagDef{
	{name: "name", field: "name", set: NodeFlags, usage: "node name (a DNS label); each node has its own state and runtime dir",
		bind: strFlag(func(c *Config) *string { return &c.Name })},
	{name: "state-dir", field: "stateDir", set: NodeFlags, path: true, usage: "where the node's persistent state lives (default $XDG_DATA_HOME/usernode/NAME)",
		bind: strFlag(func(c *Config) *string { return &c.StateDir })},
	{name: "net", field: "net", set: NetFlags, usage: "network driver",
		bind: strFlag(func(c *Config) *string { return &c.Net })},
	{name: "port-busy-poll", field: "portBusyPoll", set: PortFlags, usage: "how long the port forwarder keeps polling after a small message instead of sleeping, such as 50us: lower latency for some CPU where CPUs are to spare (0: off)",
		bind: durationFlag(func(c *Config) *string { return &c.PortBusyPoll })},
	{name: "keep-source-ip", field: "keepSourceIP", set: PortFlags, usage: "servers in the node see the client's IPv4 address instead of 127.0.0.1 (adds policy routing and an nft table in the node; needs nft)",
		bind: func(fs *pflag.FlagSet, c *Config, name, usage string) {
			fs.BoolVar(&c.KeepSourceIP, name, c.KeepSourceIP, usage)
		}},
	{name: "bin-dir", field: "binDir", set: RuntimeFlags, path: true, usage: "directory with kubelet, kube-apiserver, ..., etcd and coredns (default: $USERNODE_BIN_DIR, the 'make k8s' cache, then PATH)",
		bind: strFlag(func(c *Config) *string { return &c.BinDir })},
	{name: "cri", field: "cri", set: RuntimeFlags, usage: "container runtime",
		bind: strFlag(func(c *Config) *string { return &c.CRI })},
	{name: "containerd", field: "containerd", set: RuntimeFlags, path: true, usage: "the containerd binary to run, e.g. a 2.x build (default: containerd in PATH; its ctr and shim are looked for beside it first)",
		bind: strFlag(func(c *Config) *string { return &c.Containerd })},
	{name: "cni", field: "cni", set: UpFlags, usage: "pod network (CNI)",
		bind: strFlag(func(c *Config) *string { return &c.CNI })},
	{name: "host-ip", field: "hostIP", set: UpFlags, usage: "host address the API and kubelet ports are forwarded from (and the API server's certificate names): 127.0.0.1 serves this host only; an address of this host, or auto (its default route's), lets other hosts join",
		bind: strFlag(func(c *Config) *string { return &c.HostIP })},
	{name: "publish-address", field: "publishAddress", set: UpFlags, usage: "where NodePorts, LoadBalancer ports and hostPorts bind on the host: 127.0.0.1 (this host only), 0.0.0.0 (the network reaches them), or an address of this host",
		bind: strFlag(func(c *Config) *string { return &c.PublishAddress })},
	{name: "api-port", field: "apiPort", set: UpFlags, usage: "host port for kube-apiserver",
		bind: portFlag(func(c *Config) *uint16 { return &c.APIPort })},
	{name: "kubelet-port", field: "kubeletPort", set: UpFlags, usage: "host port for the kubelet's API",
		bind: portFlag(func(c *Config) *uint16 { return &c.KubeletPort })},
	{name: "dns-port", field: "dnsPort", set: UpFlags, usage: "host port for the cluster's DNS on a multi-node control plane (pods on every host query it there)",
		bind: portFlag(func(c *Config) *uint16 { return &c.DNSPort })},
	{name: "node-subnet", field: "nodeSubnet", set: UpFlags, usage: "the node namespace's network; the node is its .100 (default 10.0.2.0/24, or the first 10.0.N.0/24 the host does not use)",
		bind: strFlag(func(c *Config) *string { return &c.NodeSubnet })},
	{name: "service-cidr", field: "cluster.serviceCIDR", set: UpFlags, usage: "Services' range; the cluster DNS is its 10th address",
		bind: strFlag(func(c *Config) *string { return &c.Cluster.ServiceCIDR })},
	{name: "pod-cidr", field: "cluster.podCIDR", set: UpFlags, usage: "pods' range; each node gets a /cluster.nodeCIDRMaskSize (24) of it (default 10.88.0.0/16, or 10.244.0.0/16 for a multi-node cluster)",
		bind: strFlag(func(c *Config) *string { return &c.Cluster.PodCIDR })},
	{name: "vxlan-port", field: "cluster.vxlanPort", set: UpFlags, usage: "UDP port of VXLAN between the hosts of a multi-node cluster (a worker takes its cluster's)",
		bind: portFlag(func(c *Config) *uint16 { return &c.Cluster.VXLANPort })},
	{name: "cluster-domain", field: "cluster.dnsDomain", set: UpFlags, usage: "the cluster's DNS domain",
		bind: strFlag(func(c *Config) *string { return &c.Cluster.DNSDomain })},
	{name: "timeout", field: "readyTimeout", set: UpFlags, usage: "how long to wait for the node to be Ready",
		bind: durationFlag(func(c *Config) *string { return &c.ReadyTimeout })},
	{name: "volume-guard", field: "volumeGuard", set: UpFlags, usage: "pods and PersistentVolumes with network storage a rootless node cannot mount (nfs, iscsi, fc, rbd, cephfs, glusterfs): deny, warn or off",
		bind: strFlag(func(c *Config) *string { return &c.VolumeGuard })},
	{name: "metrics", field: "metrics", set: UpFlags, usage: "run metrics-server on the control plane, for kubectl top and the HorizontalPodAutoscaler",
		bind: func(fs *pflag.FlagSet, c *Config, name, usage string) {
			fs.BoolVar(&c.Metrics, name, c.Metrics, usage)
		}},
	{name: "write-kubeconfig", field: "writeKubeconfig", set: UpFlags, path: true, usage: "also merge the node's context into this kubeconfig (e.g. ~/.kube/config) and make it current",
		bind: strFlag(func(c *Config) *string { return &c.WriteKubeconfig })},
}

// flagOf maps a field to its flag, for error messages.
var flagOf = func() map[string]string {
	m := map[string]string{}
	for _, d := range flagDefs {
		m[d.field] = d.name
	}
	return m
}()

// BindFlags adds the chosen flags to fs. Their defaults, shown in --help,
// are the model's.
func BindFlags(fs *pflag.FlagSet, set FlagSet) {
	c := Default()
	for _, d := range flagDefs {
		if d.set&set != 0 {
			d.bind(fs, &c, d.name, d.usage)
		}
	}
}

// durationValue is a duration flag over a string field, so that the file
// and the flag hold the same text and Resolve checks both the same way.
type durationValue string

func (d *durationValue) String() string { return string(*d) }
func (d *durationValue) Type() string   { return "duration" }
func (d *durationValue) Set(s string) error {
	if _, err := time.ParseDuration(s); err != nil {
		return fmt.Errorf("not a duration such as 50us, 5m: %w", err)
	}
	*d = durationValue(s)
	return nil
}

// Source is where a config comes from.
type Source struct {
	// Path is the config file; Explicit says the user named it (a missing
	// default file is no error, a missing named one is).
	Path     string
	Explicit bool
	// Flags is the parsed command line: the flags it set win over the file.
	Flags *pflag.FlagSet
	// Getenv finds the node's state dir, whose JoinFile (a worker's) is
	// read under the file. Nil skips it.
	Getenv func(string) string
	// Join is the server `usernode join` names: the node is its worker.
	Join string
	// Shared is the cluster section of the cluster the node joins, as its
	// control plane publishes it: a worker takes it over its own file.
	Shared *ClusterConfig
}

// JoinFile is what `usernode join` leaves in a worker's state dir: the
// cluster it joined (role, server) and the host IP the user named, as a
// config that the file and the flags override, so that a plain `up`
// later starts the same worker.
const JoinFile = "join.yaml"

// WriteJoin records in stateDir that the node there is a worker of c's
// server.
func WriteJoin(stateDir string, c *Config) error {
	b, err := yaml.Marshal(Config{Role: Worker, Server: c.Server, HostIP: c.HostIP, Name: c.Name, Cluster: c.Cluster})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, JoinFile), b, 0o600)
}

// applyJoin fills what c leaves empty from the join record in its state
// dir, if there is one.
func applyJoin(c *Config, getenv func(string) string) error {
	dir := c.StateDir
	if dir == "" {
		name := c.Name
		if name == "" {
			name = DefaultName
		}
		dir = DefaultStateDir(name, getenv)
	}
	if dir == "" {
		return nil
	}
	path := filepath.Join(dir, JoinFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var j Config
	if err := yaml.UnmarshalStrict(b, &j); err != nil {
		return fmt.Errorf("%s, which `usernode join` wrote, is not valid: %v; run the join again", path, err)
	}
	if c.Role == "" {
		c.Role = j.Role
	}
	if c.Server == "" && c.Role == j.Role {
		c.Server = j.Server
	}
	if c.HostIP == "" {
		c.HostIP = j.HostIP
	}
	if c.Role == j.Role {
		if err := c.adopt(j.Cluster, path); err != nil {
			return err
		}
	}
	return nil
}

// adopt takes the cluster section a worker's cluster has (from): what c
// leaves empty is filled, and a value c sets otherwise is an error, since
// a node that disagrees with its cluster on an address range breaks it.
func (c *Config) adopt(from ClusterConfig, source string) error {
	m := &c.Cluster
	return errors.Join(
		adoptField("cluster.serviceCIDR", &m.ServiceCIDR, from.ServiceCIDR, source),
		adoptField("cluster.podCIDR", &m.PodCIDR, from.PodCIDR, source),
		adoptField("cluster.nodeCIDRMaskSize", &m.NodeCIDRMaskSize, from.NodeCIDRMaskSize, source),
		adoptField("cluster.dnsDomain", &m.DNSDomain, from.DNSDomain, source),
		adoptField("cluster.dnsIP", &m.DNSIP, from.DNSIP, source),
		adoptField("cluster.vxlanPort", &m.VXLANPort, from.VXLANPort, source),
	)
}

func adoptField[T comparable](field string, dst *T, src T, source string) error {
	var zero T
	switch {
	case src == zero:
	case *dst == zero:
		*dst = src
	case *dst != src:
		return &FieldError{Field: field, Value: fmt.Sprint(*dst), Problem: fmt.Sprintf("the cluster this worker joins uses %v (%s): a worker takes its cluster's; drop yours", src, source)}
	}
	return nil
}

// Load reads the file, lays the command line's flags over it and fills
// the defaults: the one way every command gets its config.
func Load(src Source) (*Config, error) {
	c := &Config{}
	if src.Path != "" {
		if err := readFile(src.Path, src.Explicit, c); err != nil {
			return nil, err
		}
	}
	if src.Flags != nil {
		if err := applyFlags(c, src.Flags); err != nil {
			return nil, err
		}
	}
	if src.Getenv != nil {
		if err := applyJoin(c, src.Getenv); err != nil {
			return nil, err
		}
	}
	if src.Join != "" {
		if c.Role == Worker && c.Server != "" && c.Server != src.Join {
			return nil, fmt.Errorf("node %q already joined %s: `usernode down --purge --name %s` forgets that cluster, or give this one another --name", c.Name, c.Server, c.Name)
		}
		c.Role, c.Server = Worker, src.Join
	}
	if src.Shared != nil {
		if err := c.adopt(*src.Shared, "its control plane says so"); err != nil {
			return nil, err
		}
	}
	SetDefaults(c)
	return c, nil
}

func readFile(path string, explicit bool, c *Config) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return fmt.Errorf("config file %s is not valid: %v; fix it (fields: %s) or move it away", path, err, strings.Join(FileFields(), ", "))
	}
	return nil
}

// applyFlags sets on c what the command line set: the fields are bound to
// a scratch flag set and the changed flags are replayed onto it.
func applyFlags(c *Config, cmdline *pflag.FlagSet) error {
	keep := *c
	fs := pflag.NewFlagSet("replay", pflag.ContinueOnError)
	for _, d := range flagDefs {
		d.bind(fs, c, d.name, d.usage) // binding writes each field's current value back
	}
	*c = keep
	var err error
	// VisitAll and Changed, not Visit: a persistent flag given to a
	// subcommand is marked on the shared Flag, but only the subcommand's
	// own flag set lists it as set.
	cmdline.VisitAll(func(f *pflag.Flag) {
		if !f.Changed || fs.Lookup(f.Name) == nil || err != nil {
			return
		}
		if e := fs.Set(f.Name, f.Value.String()); e != nil {
			err = fmt.Errorf("--%s: %w", f.Name, e)
		}
	})
	return err
}

// Args gives back the config flags the command line set, as
// --flag=value, with paths made absolute: what a re-run of `up`
// elsewhere (a systemd unit) needs to mean the same.
func Args(cmdline *pflag.FlagSet) ([]string, error) {
	var args []string
	var err error
	byName := map[string]flagDef{}
	for _, d := range flagDefs {
		byName[d.name] = d
	}
	cmdline.VisitAll(func(f *pflag.Flag) {
		d, ok := byName[f.Name]
		if !ok || !f.Changed {
			return
		}
		v := f.Value.String()
		if d.path && v != "" {
			abs, e := filepath.Abs(v)
			if e != nil && err == nil {
				err = e
			}
			v = abs
		}
		args = append(args, "--"+f.Name+"="+v)
	})
	return args, err
}

// FileFields lists config.yaml's fields, for error messages and the docs.
func FileFields() []string {
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out = append(out, prefix+k)
		}
	}
	c := Default()
	c.StateDir, c.BinDir, c.Containerd, c.WriteKubeconfig, c.NodeSubnet, c.KeepSourceIP, c.CNI, c.Server = "x", "x", "x", "x", "x", true, "x", "x"
	c.Metrics = true
	c.Cluster.KubernetesVersion, c.Cluster.DNSIP = "x", "x"
	b, _ := yaml.Marshal(c)
	var m map[string]any
	_ = yaml.Unmarshal(b, &m)
	walk("", m)
	sort.Strings(out)
	return out
}
