// Package cluster is usernode's one cluster model. Everything a node is
// built from starts here:
//
//	config.yaml ─┐
//	flags ───────┼─ Load ─> Config ─ SetDefaults ─ Resolve(Env) ─> *Cluster ──> every renderer
//	(--detach and install re-run the same command line)
//
// Config is what the user writes (the file, and the flags of `up`, which
// win over it); it holds strings so that a bad value is reported with the
// field that holds it. Resolve checks it against the host (Env) and turns
// it into a Cluster: typed addresses, every default filled, the values
// derived from others (the node's IP from its subnet, the DNS IP from the
// service CIDR). The renderers (pki, kubeconfig, kubelet, kube-proxy, the
// control plane, CoreDNS, CNI, the network driver) take their values from
// a Cluster and hold no default of their own.
//
// Defaults live in default.go and validation in validate.go, in the style
// of kind's config package.
package cluster

import (
	"net/netip"
	"time"
)

// Role is what a node runs.
type Role string

// Roles. A control-plane node runs etcd, the control plane and CoreDNS as
// well as the node components; a worker (`usernode join`) runs only the
// node components.
const (
	ControlPlane Role = "control-plane"
	Worker       Role = "worker"
)

// Config is usernode's config file, $XDG_CONFIG_HOME/usernode/config.yaml
// (or --config), merged with the command line. The node's fields sit at the
// top level; the cluster-wide ones under `cluster:`.
type Config struct {
	// Name is the node's name (a DNS label), which also names its state
	// and runtime dirs. Default "usernode".
	Name string `json:"name,omitempty"`
	// StateDir holds the node's persistent state. Default
	// $XDG_DATA_HOME/usernode/NAME.
	StateDir string `json:"stateDir,omitempty"`
	// BinDir holds kubelet, kube-apiserver, ..., etcd and coredns.
	// Default: $USERNODE_BIN_DIR, the `make k8s` cache, then PATH.
	BinDir string `json:"binDir,omitempty"`
	// Net is the network driver. Default slirp4netns.
	Net string `json:"net,omitempty"`
	// Role is control-plane (the default) or worker, which `usernode
	// join` sets (with Server) in the state dir's join.yaml.
	Role Role `json:"role,omitempty"`
	// Server is the API of the cluster a worker belongs to
	// (https://HOST:PORT, as `usernode token create` prints it).
	Server string `json:"server,omitempty"`
	// CRI is the container runtime. Default containerd.
	CRI string `json:"cri,omitempty"`
	// Containerd is the containerd binary to run (a 2.x build, say) when
	// CRI is containerd; its ctr and shim are looked for beside it first.
	// Default: containerd in PATH.
	Containerd string `json:"containerd,omitempty"`
	// CNI is the pod network plugin. Default bridge for a single node,
	// flannel for a worker or a control plane with a host IP other than
	// 127.0.0.1.
	CNI string `json:"cni,omitempty"`
	// NodeSubnet is the node namespace's own network (the network driver's
	// side); the node's IP is its .100. Default 10.0.2.0/24, slirp4netns's.
	NodeSubnet string `json:"nodeSubnet,omitempty"`
	// HostIP is the host address the node's ports are forwarded from:
	// an address of this host, or "auto", the address of its default
	// route. Default 127.0.0.1 for a control plane (a cluster of this
	// host only), "auto" for a worker.
	HostIP string `json:"hostIP,omitempty"`
	// PublishAddress is where NodePorts, LoadBalancer ports and hostPorts
	// bind on the host: 127.0.0.1 (the default: this host only), 0.0.0.0
	// (every address: the network reaches them), or one address of the
	// host. The API and kubelet ports follow HostIP instead.
	PublishAddress string `json:"publishAddress,omitempty"`
	// APIPort and KubeletPort are the host ports that reach
	// kube-apiserver's 6443 and the kubelet's 10250 in the node; two nodes
	// on one host need different ones. Default 6443 and 10250.
	APIPort     uint16 `json:"apiPort,omitempty"`
	KubeletPort uint16 `json:"kubeletPort,omitempty"`
	// DNSPort is the host port that reaches the cluster's DNS on a
	// multi-node control plane (pods on every host query it there).
	// Default 10053.
	DNSPort uint16 `json:"dnsPort,omitempty"`
	// PortBusyPoll is how long the port forwarder keeps polling after a
	// small message, such as "50us"; "0" (the default) turns it off.
	PortBusyPoll string `json:"portBusyPoll,omitempty"`
	// KeepSourceIP makes servers in the node see clients' addresses.
	KeepSourceIP bool `json:"keepSourceIP,omitempty"`
	// ReadyTimeout bounds `up`'s wait for the node: "5m" by default.
	ReadyTimeout string `json:"readyTimeout,omitempty"`
	// WriteKubeconfig is a kubeconfig to merge the node's context into.
	WriteKubeconfig string `json:"writeKubeconfig,omitempty"`
	// VolumeGuard is what a control plane does with pods and
	// PersistentVolumes that use network storage a rootless node cannot
	// mount (nfs, iscsi, fc, rbd, cephfs, glusterfs): deny (the default),
	// warn, or off.
	VolumeGuard string `json:"volumeGuard,omitempty"`
	// Metrics runs metrics-server on a control plane (for `kubectl top`
	// and the HorizontalPodAutoscaler). Default false. A worker refuses
	// it: the control plane's metrics-server scrapes every node.
	Metrics bool `json:"metrics,omitempty"`

	Cluster ClusterConfig `json:"cluster,omitempty"`
}

// ClusterConfig is what every node of a cluster shares: Config's cluster
// section.
type ClusterConfig struct { //nolint:revive // stutters on purpose: cluster.Config is the whole file, this its cluster: section

	// KubernetesVersion, when set, is the version the binaries must be
	// ("v1.37.2"); empty takes whatever they are.
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// ServiceCIDR is the Services' range. Default 10.96.0.0/16.
	ServiceCIDR string `json:"serviceCIDR,omitempty"`
	// PodCIDR is the pods' range, all nodes'. Default 10.88.0.0/16 for a
	// single node, 10.244.0.0/16 (Flannel's own) for a multi-node cluster.
	PodCIDR string `json:"podCIDR,omitempty"`
	// NodeCIDRMaskSize is each node's share of PodCIDR. Default 24.
	NodeCIDRMaskSize int `json:"nodeCIDRMaskSize,omitempty"`
	// DNSDomain is the cluster's DNS domain. Default cluster.local.
	DNSDomain string `json:"dnsDomain,omitempty"`
	// DNSIP is the cluster DNS Service's IP. Default the 10th address of
	// ServiceCIDR (10.96.0.10).
	DNSIP string `json:"dnsIP,omitempty"`
	// VXLANPort is the UDP port VXLAN between the hosts' nodes uses, on
	// every host of a multi-node cluster: each node's is forwarded from
	// its host IP. Default 8472 (Flannel's and the kernel's).
	VXLANPort uint16 `json:"vxlanPort,omitempty"`
}

// SharedConfigMap is where a control plane publishes Cluster.Shared, in
// kube-public under the key SharedKey, for the workers that join it (their
// bootstrap token may read it, as it may cluster-info).
const (
	SharedConfigMap = "usernode-cluster"
	SharedKey       = "cluster.yaml"
)

// HostIPAnnotation carries a node's host IP on its Node, set by the node
// itself: the control plane's usernode makes it the node's ExternalIP.
const HostIPAnnotation = "usernode.io/host-ip"

// Ports inside the node's network namespace. They are fixed: the host
// ports (Node.APIPort, Node.KubeletPort) are what moves.
const (
	APIServerPort = 6443
	KubeletPort   = 10250
)

// Cluster is the resolved model: every value typed, defaulted, checked.
type Cluster struct {
	Name              string       `json:"name"`
	KubernetesVersion string       `json:"kubernetesVersion"`
	ServiceCIDR       netip.Prefix `json:"serviceCIDR"`
	PodCIDR           netip.Prefix `json:"podCIDR"`
	NodeCIDRMaskSize  int          `json:"nodeCIDRMaskSize"`
	DNSDomain         string       `json:"dnsDomain"`
	DNSIP             netip.Addr   `json:"dnsIP"`
	// VXLANPort is the UDP port of VXLAN between hosts.
	VXLANPort uint16 `json:"vxlanPort"`
	// VolumeGuard is deny, warn or off (Config.VolumeGuard).
	VolumeGuard string `json:"volumeGuard"`
	// APIServerIP is the `kubernetes` Service's ClusterIP (the first
	// address of ServiceCIDR), which pods use to reach kube-apiserver.
	APIServerIP netip.Addr `json:"apiServerIP"`
	// API is where the host (and other nodes) reach kube-apiserver.
	API   Endpoint `json:"api"`
	Nodes []Node   `json:"nodes"`
	// Options are how `up` runs this host's node.
	Options Options `json:"options"`
}

// Node is one node of the cluster.
type Node struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// HostIP is the host address its ports are forwarded from; APIPort
	// and KubeletPort the host ports.
	HostIP      netip.Addr `json:"hostIP"`
	APIPort     uint16     `json:"apiPort"`
	KubeletPort uint16     `json:"kubeletPort"`
	// PublishIP is where the node's Services and hostPorts bind on the
	// host.
	PublishIP netip.Addr `json:"publishIP"`
	// DNSPort is set on a multi-node control plane: the host port of
	// CoreDNS (see coredns.Endpoint).
	DNSPort uint16 `json:"dnsPort,omitempty"`
	// Subnet is the node namespace's network and IP the node's address in
	// it: its InternalIP, where its components listen.
	Subnet netip.Prefix `json:"subnet"`
	IP     netip.Addr   `json:"ip"`
	CRI    string       `json:"cri"`
	CNI    string       `json:"cni"`
	// UplinkMTU is the MTU of the host's interface at HostIP: traffic
	// between hosts' pods fits it, less the VXLAN header (not the node
	// namespace's own link's, which slirp4netns makes 65520).
	UplinkMTU int `json:"uplinkMTU"`
	// Metrics: this control plane runs metrics-server (Config.Metrics).
	Metrics bool `json:"metrics,omitempty"`
}

// Options are how `up` runs the node on this host; nothing in the node's
// configuration depends on them.
type Options struct {
	StateDir        string        `json:"stateDir"`
	BinDir          string        `json:"binDir,omitempty"`
	Containerd      string        `json:"containerd,omitempty"`
	Net             string        `json:"net"`
	PortBusyPoll    time.Duration `json:"portBusyPoll"` // negative: off
	KeepSourceIP    bool          `json:"keepSourceIP,omitempty"`
	ReadyTimeout    time.Duration `json:"readyTimeout"`
	WriteKubeconfig string        `json:"writeKubeconfig,omitempty"`
}

// Endpoint is a host and port.
type Endpoint struct {
	Host netip.Addr `json:"host"`
	Port uint16     `json:"port"`
}

// URL is the https URL of the endpoint.
func (e Endpoint) URL() string { return "https://" + netip.AddrPortFrom(e.Host, e.Port).String() }

// Self is the node this host runs: the first one.
func (c *Cluster) Self() *Node { return &c.Nodes[0] }

// MultiNode says whether other hosts take part: this node is a worker, or
// a control plane that serves other hosts at a non-loopback host IP.
// Such a node is addressed by its host IP (its ExternalIP), since its own
// namespace's address is behind its host's NAT.
func (c *Cluster) MultiNode() bool {
	n := c.Self()
	return n.Role == Worker || !n.HostIP.IsLoopback()
}

// Shared is the cluster section every node of c's cluster must agree on,
// each value resolved: what a control plane publishes for the workers
// that join it (the KubernetesVersion is left to each host's binaries).
func (c *Cluster) Shared() ClusterConfig {
	return ClusterConfig{
		ServiceCIDR:      c.ServiceCIDR.String(),
		PodCIDR:          c.PodCIDR.String(),
		NodeCIDRMaskSize: c.NodeCIDRMaskSize,
		DNSDomain:        c.DNSDomain,
		DNSIP:            c.DNSIP.String(),
		VXLANPort:        c.VXLANPort,
	}
}

// NodeAPIServer is kube-apiserver's URL as n's own processes reach it: on
// a control-plane node the one beside them, on a worker the cluster's
// endpoint.
func (c *Cluster) NodeAPIServer(n *Node) string {
	if n.Role == ControlPlane {
		return Endpoint{Host: netip.AddrFrom4([4]byte{127, 0, 0, 1}), Port: APIServerPort}.URL()
	}
	return c.API.URL()
}
