package cluster

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/k8sversion"
)

// Env is what Resolve checks a config against: the host and the registries.
// A nil list skips its check (unit tests of one field).
type Env struct {
	Getenv func(string) string
	// HostAddrs are the host's interface addresses: a node subnet that
	// overlaps one would hide that network from the node.
	HostAddrs []netip.Prefix
	// Networks, Runtimes and CNIs are the names the registries know.
	Networks, Runtimes, CNIs []string
	// OwnAddress lists the network drivers that take the node's address
	// from the host (lxc-user-nic: the host bridge's network), to which
	// NodeSubnet does not apply.
	OwnAddress []string
	// DefaultRouteIP is the host's address on its default route: a
	// worker's host IP when the user names none.
	DefaultRouteIP netip.Addr
	// MTUs are the MTUs of the host's interfaces, by address: the host
	// IP's is the uplink's, which bounds the pod network's across hosts.
	MTUs map[netip.Addr]int
}

// FieldError is one bad value, named by its place in config.yaml and by
// its flag, with what to do about it.
type FieldError struct {
	Field, Value, Problem string
}

func (e *FieldError) Error() string {
	name := e.Field
	if f := flagOf[e.Field]; f != "" {
		name += " (--" + f + ")"
	}
	return fmt.Sprintf("%s %q: %s", name, e.Value, e.Problem)
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Resolve checks c (defaulted with SetDefaults) against env and returns the
// model. Every bad value is reported, each naming its field.
func (c *Config) Resolve(env Env) (*Cluster, error) {
	v := validator{}
	cl := &Cluster{Name: c.Name, NodeCIDRMaskSize: c.Cluster.NodeCIDRMaskSize, DNSDomain: c.Cluster.DNSDomain}
	n := Node{Name: c.Name, Role: c.Role, APIPort: c.APIPort, KubeletPort: c.KubeletPort, CRI: c.CRI, CNI: c.CNI}

	if !labelRE.MatchString(c.Name) {
		v.fail("name", c.Name, "use lower-case letters, digits and '-', at most 63, as in a DNS label")
	}
	var server Endpoint
	switch c.Role {
	case ControlPlane:
		if c.Server != "" {
			v.fail("server", c.Server, "only a worker joins a server; a control-plane node is its own (drop server, or use `usernode join`)")
		}
	case Worker:
		server = v.server(c.Server)
	default:
		v.fail("role", string(c.Role), "must be control-plane or worker")
	}
	v.known("net", c.Net, "network driver", env.Networks)
	v.known("cri", c.CRI, "container runtime", env.Runtimes)
	multiNode := c.Role == Worker || !strings.HasPrefix(c.HostIP, "127.")
	if n.CNI == "" {
		n.CNI = DefaultCNI
		if multiNode {
			n.CNI = DefaultMultiNodeCNI
		}
	}
	v.known("cni", n.CNI, "CNI", env.CNIs)

	if c.Cluster.KubernetesVersion != "" {
		if _, err := k8sversion.Parse(c.Cluster.KubernetesVersion); err != nil {
			v.fail("cluster.kubernetesVersion", c.Cluster.KubernetesVersion, err.Error())
		}
		cl.KubernetesVersion = c.Cluster.KubernetesVersion
	}

	// Service CIDR: kube-apiserver refuses ranges wider than /12, and the
	// DNS IP is its 10th address.
	cl.ServiceCIDR = v.prefix("cluster.serviceCIDR", c.Cluster.ServiceCIDR, 12, 28)
	podCIDR := c.Cluster.PodCIDR
	if podCIDR == "" {
		podCIDR = DefaultPodCIDR
		if multiNode {
			podCIDR = DefaultMultiNodePodCIDR
		}
	}
	cl.PodCIDR = v.prefix("cluster.podCIDR", podCIDR, 8, 28)
	if cl.ServiceCIDR.IsValid() && cl.PodCIDR.IsValid() && cl.ServiceCIDR.Overlaps(cl.PodCIDR) {
		what := "overlaps cluster.serviceCIDR " + cl.ServiceCIDR.String()
		if cl.PodCIDR.Bits() <= cl.ServiceCIDR.Bits() {
			what = "contains cluster.serviceCIDR " + cl.ServiceCIDR.String()
		}
		v.fail("cluster.podCIDR", c.Cluster.PodCIDR, what+": pods and Services need ranges of their own")
	}
	if m := c.Cluster.NodeCIDRMaskSize; cl.PodCIDR.IsValid() && (m <= cl.PodCIDR.Bits() || m > 28 || m-cl.PodCIDR.Bits() > 16) {
		v.fail("cluster.nodeCIDRMaskSize", fmt.Sprint(m), fmt.Sprintf("each node's share of cluster.podCIDR %s must be longer than /%d, at most /28 and at most 16 bits longer (the controller-manager's limit)", cl.PodCIDR, cl.PodCIDR.Bits()))
	}
	if cl.ServiceCIDR.IsValid() {
		cl.APIServerIP = cl.ServiceCIDR.Addr().Next()
		cl.DNSIP = nthAddr(cl.ServiceCIDR, dnsHostPart)
	}
	if c.Cluster.DNSIP != "" {
		ip, err := netip.ParseAddr(c.Cluster.DNSIP)
		switch {
		case err != nil || !ip.Is4():
			v.fail("cluster.dnsIP", c.Cluster.DNSIP, "not an IPv4 address")
		case cl.ServiceCIDR.IsValid() && (!cl.ServiceCIDR.Contains(ip) || ip == cl.ServiceCIDR.Addr() || ip == cl.APIServerIP):
			v.fail("cluster.dnsIP", c.Cluster.DNSIP, fmt.Sprintf("must be an address of cluster.serviceCIDR %s other than its first two (the network and the `kubernetes` Service)", cl.ServiceCIDR))
		default:
			cl.DNSIP = ip
		}
	}
	if !dnsNameOK(c.Cluster.DNSDomain) {
		v.fail("cluster.dnsDomain", c.Cluster.DNSDomain, "not a DNS domain such as cluster.local")
	}

	// The node's own network: its .100 is the node; slirp4netns and pasta
	// put the host at .2 and DNS at .3.
	subnet := c.NodeSubnet
	if subnet == "" {
		subnet = DefaultNodeSubnet
		if !slices.Contains(env.OwnAddress, c.Net) {
			// Nodes of one cluster on different hosts each get their own
			// subnet, from their names, so that their InternalIPs differ.
			first := 2
			if multiNode {
				first = nameOctet(c.Name)
			}
			subnet = fmt.Sprintf("10.0.%d.0/24", freeThirdOctet(env.HostAddrs, first))
		}
	}
	n.Subnet = v.prefix("nodeSubnet", subnet, 8, 25)
	if n.Subnet.IsValid() {
		n.IP = nthAddr(n.Subnet, NodeHostPart)
		for _, other := range []struct {
			field string
			p     netip.Prefix
		}{{"cluster.serviceCIDR", cl.ServiceCIDR}, {"cluster.podCIDR", cl.PodCIDR}} {
			if other.p.IsValid() && other.p.Overlaps(n.Subnet) {
				v.fail("nodeSubnet", c.NodeSubnet, fmt.Sprintf("overlaps %s %s: choose another, such as %s", other.field, other.p, DefaultNodeSubnet))
			}
		}
		if !slices.Contains(env.OwnAddress, c.Net) {
			for _, a := range env.HostAddrs {
				if a.Overlaps(n.Subnet) && !a.Addr().IsLoopback() {
					v.fail("nodeSubnet", c.NodeSubnet, fmt.Sprintf("overlaps the host's own network %s: the node could not reach it; choose another, such as 10.0.%d.0/24", a.Masked(), freeThirdOctet(env.HostAddrs, 2)))
					break
				}
			}
		}
	}

	hostIP := c.HostIP
	auto := hostIP == AutoHostIP || hostIP == "" && c.Role == Worker
	if auto && env.DefaultRouteIP.IsValid() {
		hostIP = env.DefaultRouteIP.String()
	}
	ip, err := netip.ParseAddr(hostIP)
	switch {
	case auto && !env.DefaultRouteIP.IsValid():
		v.fail("hostIP", c.HostIP, "this host has no default route: name the address the cluster's other hosts reach this one at")
	case c.Role == Worker && err == nil && ip.IsLoopback():
		v.fail("hostIP", hostIP, "a worker is reached by the cluster's other hosts: name an address of this host they reach")
	case err != nil || !ip.Is4():
		v.fail("hostIP", c.HostIP, "not an IPv4 address")
	case ip.IsUnspecified():
		v.fail("hostIP", c.HostIP, "name one address (127.0.0.1, or one of the host's): clients and certificates need a real one")
	case !ip.IsLoopback() && env.HostAddrs != nil && !slices.ContainsFunc(env.HostAddrs, func(p netip.Prefix) bool { return p.Addr() == ip }):
		v.fail("hostIP", c.HostIP, "is not an address of this host (`ip -4 addr` lists them)")
	default:
		n.HostIP = ip
		n.UplinkMTU = DefaultUplinkMTU
		if m := env.MTUs[ip]; m > 0 && !ip.IsLoopback() {
			n.UplinkMTU = m
		}
	}
	// The API and kubelet ports forwarded from a non-loopback host IP keep
	// their clients' addresses under --keep-source-ip, and kube-proxy's
	// KUBE-FIREWALL rule drops connections from a non-loopback source to
	// the node's 127.0.0.1, where the forwarder dials them: `up` would hang
	// until its timeout. Refused until the forwarder dials those otherwise.
	if c.KeepSourceIP && n.HostIP.IsValid() && !n.HostIP.IsLoopback() {
		v.fail("keepSourceIP", "true", "cannot be used with a hostIP other than 127.0.0.1 yet: kube-proxy in the node drops the API's and kubelet's forwarded connections that keep a non-loopback source; drop --keep-source-ip or --host-ip")
	}
	if pub, err := netip.ParseAddr(c.PublishAddress); err != nil || pub.Zone() != "" {
		v.fail("publishAddress", c.PublishAddress, "not an IP address: 127.0.0.1 (this host only), 0.0.0.0 (every address) or one of the host's")
	} else if !pub.IsLoopback() && !pub.IsUnspecified() && env.HostAddrs != nil && !slices.ContainsFunc(env.HostAddrs, func(p netip.Prefix) bool { return p.Addr() == pub }) {
		v.fail("publishAddress", c.PublishAddress, "is not an address of this host (`ip addr` lists them)")
	} else {
		n.PublishIP = pub
	}
	if c.APIPort == c.KubeletPort {
		v.fail("kubeletPort", fmt.Sprint(c.KubeletPort), "is also apiPort: each needs its own host port")
	}
	cl.VXLANPort = c.Cluster.VXLANPort
	if !slices.Contains([]string{"deny", "warn", "off"}, c.VolumeGuard) {
		v.fail("volumeGuard", c.VolumeGuard, "must be deny (refuse pods and volumes with nfs, iscsi and other network storage), warn (admit them with a warning) or off")
	}
	cl.VolumeGuard = c.VolumeGuard
	// One metrics-server, on the control plane, scrapes every node's
	// kubelet; a second on a worker would register the same APIService
	// over the first.
	if c.Metrics && c.Role == Worker {
		v.fail("metrics", "true", "metrics-server runs on the control plane and scrapes every node from there: drop --metrics (or metrics: true) on this worker and give it to the control plane's `usernode up`")
	}
	n.Metrics = c.Metrics && c.Role == ControlPlane
	if multiNode && c.Role == ControlPlane {
		n.DNSPort = c.DNSPort
		if c.DNSPort == c.Cluster.VXLANPort {
			v.fail("cluster.vxlanPort", fmt.Sprint(c.Cluster.VXLANPort), "is also dnsPort, whose UDP side it would take: each needs its own host port")
		}
		if c.DNSPort == c.APIPort || c.DNSPort == c.KubeletPort {
			v.fail("dnsPort", fmt.Sprint(c.DNSPort), "is also apiPort or kubeletPort: each needs its own host port")
		}
	}

	o := Options{Net: c.Net, StateDir: c.StateDir, BinDir: c.BinDir, Containerd: c.Containerd, KeepSourceIP: c.KeepSourceIP, WriteKubeconfig: c.WriteKubeconfig}
	if d, err := time.ParseDuration(c.PortBusyPoll); err != nil || d < 0 {
		v.fail("portBusyPoll", c.PortBusyPoll, `not a duration such as "50us" ("0" turns it off)`)
	} else {
		o.PortBusyPoll = d
		if d == 0 {
			o.PortBusyPoll = -1 // the forwarder's "off"; zero is its default
		}
	}
	if d, err := time.ParseDuration(c.ReadyTimeout); err != nil || d <= 0 {
		v.fail("readyTimeout", c.ReadyTimeout, `not a positive duration such as "5m"`)
	} else {
		o.ReadyTimeout = d
	}
	if o.StateDir == "" && env.Getenv != nil {
		if o.StateDir = DefaultStateDir(c.Name, env.Getenv); o.StateDir == "" {
			v.fail("stateDir", "", "neither XDG_DATA_HOME nor HOME is set: name a state dir")
		}
	}
	// Absolute, so that the detached run and the systemd unit mean the
	// same files whatever their working directory.
	for field, p := range map[string]*string{"stateDir": &o.StateDir, "binDir": &o.BinDir, "containerd": &o.Containerd, "writeKubeconfig": &o.WriteKubeconfig} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			v.fail(field, *p, err.Error())
		}
		*p = abs
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	cl.Options = o
	cl.API = Endpoint{Host: n.HostIP, Port: n.APIPort}
	if n.Role == Worker {
		cl.API = server
	}
	cl.Nodes = []Node{n}
	return cl, nil
}

type validator struct{ errs []error }

func (v *validator) fail(field, value, problem string) {
	v.errs = append(v.errs, &FieldError{Field: field, Value: value, Problem: problem})
}

func (v *validator) err() error {
	switch len(v.errs) {
	case 0:
		return nil
	case 1:
		return v.errs[0]
	}
	return &Errors{v.errs}
}

// Errors are all the bad values of one config, one a line.
type Errors struct{ Errs []error }

func (e *Errors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the config has %d problems:", len(e.Errs))
	for _, err := range e.Errs {
		b.WriteString("\n  - " + err.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find each FieldError.
func (e *Errors) Unwrap() []error { return e.Errs }

func (v *validator) known(field, value, what string, names []string) {
	if names != nil && !slices.Contains(names, value) {
		v.fail(field, value, fmt.Sprintf("no such %s; known: %s", what, strings.Join(names, ", ")))
	}
}

// prefix parses an IPv4 CIDR whose length is within [minBits, maxBits].
func (v *validator) prefix(field, s string, minBits, maxBits int) netip.Prefix {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4():
		v.fail(field, s, "not an IPv4 CIDR such as 10.96.0.0/16")
	case p != p.Masked():
		v.fail(field, s, fmt.Sprintf("has host bits set: did you mean %s?", p.Masked()))
	case p.Bits() < minBits || p.Bits() > maxBits:
		v.fail(field, s, fmt.Sprintf("must be between /%d and /%d", minBits, maxBits))
	default:
		return p
	}
	return netip.Prefix{}
}

// nthAddr is the n-th address of p (n=0 is p's own).
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a
}

func dnsNameOK(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !labelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// freeThirdOctet is the first N from first (wrapping past 254 to 2) whose
// 10.0.N.0/24 none of addrs (but loopback) is in.
func freeThirdOctet(addrs []netip.Prefix, first int) int {
	for i := range 253 {
		n := 2 + (first-2+i)%253
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(n), 0}), 24)
		if !slices.ContainsFunc(addrs, func(a netip.Prefix) bool { return !a.Addr().IsLoopback() && a.Overlaps(p) }) {
			return n
		}
	}
	return first
}

// nameOctet is a node name's own third octet, 2 to 254 (FNV-1a): stable
// across runs and hosts, and different for different names but for 1 in
// 253 pairs, which `join` refuses (the cluster's nodes are checked).
func nameOctet(name string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name)) // a hash.Hash never fails
	return 2 + int(h.Sum32()%253)
}

// server parses a worker's server: https://IPv4:PORT.
func (v *validator) server(s string) Endpoint {
	u, err := url.Parse(s)
	if s == "" {
		v.fail("server", s, "a worker needs the API of the cluster it joins: `usernode join https://HOST:PORT ...`, as `usernode token create` prints it")
		return Endpoint{}
	}
	if err != nil || u.Scheme != "https" || u.Port() == "" || u.Path != "" && u.Path != "/" {
		v.fail("server", s, "not https://HOST:PORT, as `usernode token create` prints it")
		return Endpoint{}
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil || !ip.Is4() || ip.IsUnspecified() {
		v.fail("server", s, "name the control plane's host by its IPv4 address, as `usernode token create` prints it")
		return Endpoint{}
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || port == 0 {
		v.fail("server", s, "the port must be 1 to 65535")
		return Endpoint{}
	}
	return Endpoint{Host: ip, Port: uint16(port)}
}
