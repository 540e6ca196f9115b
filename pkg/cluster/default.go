package cluster

import "path/filepath"

// The defaults, each in one place. Renderers have none of their own.
const (
	DefaultName = "usernode"
	DefaultNet  = "slirp4netns"
	DefaultCRI  = "containerd"
	DefaultCNI  = "bridge"
	// DefaultMultiNodeCNI is the CNI of a node whose cluster spans hosts:
	// Flannel's VXLAN carries pod traffic between them.
	DefaultMultiNodeCNI = "flannel"
	// DefaultUplinkMTU is the host uplink's MTU when it cannot be read.
	DefaultUplinkMTU      = 1500
	DefaultRole           = ControlPlane
	DefaultHostIP         = "127.0.0.1"
	DefaultPublishAddress = "127.0.0.1"
	DefaultVolumeGuard    = "deny"
	DefaultAPIPort        = APIServerPort
	DefaultKubeletPort    = KubeletPort
	DefaultDNSPort        = 10053
	// DefaultPortBusyPoll is off: on the 2-vCPU machine this project
	// measures on, loaded by other work, a forwarder thread that polls
	// held a vCPU its client and server needed, and three 5-round
	// bench-net runs (docs/benchmarks.md, issue 16) gave a median added
	// RTT of +29.5 to +61.3 µs with the 50 µs poll against +10.7 to
	// +12.1 without (Go client; RootlessKit 1.1: +12.5 to +14.3).
	DefaultPortBusyPoll = "0"
	DefaultReadyTimeout = "5m"
	DefaultServiceCIDR  = "10.96.0.0/16"
	DefaultPodCIDR      = "10.88.0.0/16"
	// DefaultMultiNodePodCIDR is Flannel's own default, which its users
	// know and its docs assume.
	DefaultMultiNodePodCIDR = "10.244.0.0/16"
	DefaultVXLANPort        = 8472
	// AutoHostIP as the host IP is the address of the host's default
	// route: the one other hosts most likely reach.
	AutoHostIP              = "auto"
	DefaultNodeCIDRMaskSize = 24
	DefaultDNSDomain        = "cluster.local"
	// DefaultNodeSubnet is slirp4netns's own default network: the node is
	// 10.0.2.100, the gateway (the host) .2 and the DNS forwarder .3. On a
	// host that is itself on 10.0.2.0/24 (qemu's and VirtualBox's NAT)
	// Resolve takes the first free 10.0.N.0/24 instead.
	DefaultNodeSubnet = "10.0.2.0/24"
	// NodeHostPart is the node's address within its subnet: slirp4netns
	// always gives the namespace .100.
	NodeHostPart = 100
	// dnsHostPart is the DNS Service's address within the service CIDR,
	// as kubeadm and kind choose it (10.96.0.10).
	dnsHostPart = 10
)

// Default is a config with every static default set: what `up` does with
// no file and no flags (StateDir is left to Resolve, which knows the
// environment).
func Default() Config {
	var c Config
	SetDefaults(&c)
	return c
}

// SetDefaults fills what c leaves empty. What depends on other values or
// on the host is filled by Resolve: the DNS IP (from the service CIDR),
// the pod CIDR (a multi-node cluster's differs) and the node's subnet
// (DefaultNodeSubnet unless the host uses it).
func SetDefaults(c *Config) {
	str := func(p *string, d string) {
		if *p == "" {
			*p = d
		}
	}
	str(&c.Name, DefaultName)
	str(&c.Net, DefaultNet)
	str(&c.CRI, DefaultCRI)
	str(&c.PortBusyPoll, DefaultPortBusyPoll)
	str(&c.PublishAddress, DefaultPublishAddress)
	str(&c.VolumeGuard, DefaultVolumeGuard)
	str(&c.ReadyTimeout, DefaultReadyTimeout)
	if c.Role == "" {
		c.Role = DefaultRole
	}
	// A worker's host IP must be one other hosts reach: Resolve takes the
	// default route's address when the user names none.
	if c.Role != Worker {
		str(&c.HostIP, DefaultHostIP)
	}
	if c.APIPort == 0 {
		c.APIPort = DefaultAPIPort
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = DefaultKubeletPort
	}
	if c.DNSPort == 0 {
		c.DNSPort = DefaultDNSPort
	}
	cc := &c.Cluster
	str(&cc.ServiceCIDR, DefaultServiceCIDR)
	str(&cc.DNSDomain, DefaultDNSDomain)
	if cc.NodeCIDRMaskSize == 0 {
		cc.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
	if cc.VXLANPort == 0 {
		cc.VXLANPort = DefaultVXLANPort
	}
}

// DefaultStateDir is where a node keeps its state when the user names no
// dir: $XDG_DATA_HOME/usernode/NAME, or ~/.local/share/usernode/NAME.
func DefaultStateDir(name string, getenv func(string) string) string {
	data := getenv("XDG_DATA_HOME")
	if data == "" {
		home := getenv("HOME")
		if home == "" {
			return ""
		}
		data = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(data, "usernode", name)
}

// DefaultConfigFile is where usernode looks when --config is not given.
func DefaultConfigFile(getenv func(string) string) string {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if getenv("HOME") == "" {
			return ""
		}
		dir = filepath.Join(getenv("HOME"), ".config")
	}
	return filepath.Join(dir, "usernode", "config.yaml")
}

// DefaultCluster is the model of `up` with no file and no flags, less the
// state dir (which depends on the environment): what the renderers' tests
// and examples start from.
func DefaultCluster() *Cluster {
	c := Default()
	cl, err := c.Resolve(Env{})
	if err != nil {
		panic("cluster: the defaults do not validate: " + err.Error())
	}
	return cl
}
