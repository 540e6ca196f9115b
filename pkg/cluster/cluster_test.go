package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// env is a host with one uplink in 192.0.2.0/24 (as the test machines
// have) and the registries' names.
var env = Env{
	Getenv:     func(k string) string { return map[string]string{"HOME": "/home/u"}[k] },
	HostAddrs:  []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("10.0.3.1/24")},
	Networks:   []string{"lxc-user-nic", "none", "pasta", "slirp4netns"},
	Runtimes:   []string{"containerd"},
	CNIs:       []string{"bridge", "flannel"},
	OwnAddress: []string{"lxc-user-nic"},
}

func resolve(t *testing.T, c Config) *Cluster {
	t.Helper()
	SetDefaults(&c)
	cl, err := c.Resolve(env)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestDefaults(t *testing.T) {
	cl := resolve(t, Config{})
	n := cl.Self()
	for _, c := range []struct{ name, got, want string }{
		{"name", cl.Name, "usernode"},
		{"node", n.Name, "usernode"},
		{"role", string(n.Role), "control-plane"},
		{"node IP", n.IP.String(), "10.0.2.100"},
		{"subnet", n.Subnet.String(), "10.0.2.0/24"},
		{"service CIDR", cl.ServiceCIDR.String(), "10.96.0.0/16"},
		{"API service IP", cl.APIServerIP.String(), "10.96.0.1"},
		{"DNS IP", cl.DNSIP.String(), "10.96.0.10"},
		{"pod CIDR", cl.PodCIDR.String(), "10.88.0.0/16"},
		{"domain", cl.DNSDomain, "cluster.local"},
		{"API", cl.API.URL(), "https://127.0.0.1:6443"},
		{"node API", cl.NodeAPIServer(n), "https://127.0.0.1:6443"},
		{"CRI", n.CRI, "containerd"},
		{"CNI", n.CNI, "bridge"},
		{"state", cl.Options.StateDir, "/home/u/.local/share/usernode/usernode"},
		{"net", cl.Options.Net, "slirp4netns"},
		{"busy poll off (negative)", fmt.Sprint(cl.Options.PortBusyPoll < 0), "true"},
		{"timeout", cl.Options.ReadyTimeout.String(), "5m0s"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
	if n.KubeletPort != 10250 || n.APIPort != 6443 || cl.NodeCIDRMaskSize != 24 {
		t.Errorf("ports %d %d, mask %d", n.APIPort, n.KubeletPort, cl.NodeCIDRMaskSize)
	}
}

func TestDerived(t *testing.T) {
	cl := resolve(t, Config{NodeSubnet: "10.0.7.0/24", HostIP: "192.0.2.2", APIPort: 7443,
		PortBusyPoll: "0", Cluster: ClusterConfig{ServiceCIDR: "10.100.0.0/20"}})
	if got := cl.Self().IP.String(); got != "10.0.7.100" {
		t.Errorf("node IP %s", got)
	}
	if cl.DNSIP.String() != "10.100.0.10" || cl.APIServerIP.String() != "10.100.0.1" {
		t.Errorf("DNS %s API %s", cl.DNSIP, cl.APIServerIP)
	}
	if cl.API.URL() != "https://192.0.2.2:7443" {
		t.Errorf("API %s", cl.API.URL())
	}
	if cl.Options.PortBusyPoll >= 0 {
		t.Errorf("busy poll 0 should mean off (negative), got %s", cl.Options.PortBusyPoll)
	}
	// lxc-user-nic takes its address from the host's bridge: the subnet
	// check does not apply to it.
	resolve(t, Config{Net: "lxc-user-nic", NodeSubnet: "10.0.3.0/24"})
}

// On a host that is itself on 10.0.2.0/24 (qemu's or VirtualBox's NAT),
// the default subnet moves to the first free 10.0.N.0/24; one the user
// names is refused instead.
func TestDefaultSubnetAvoidsTheHost(t *testing.T) {
	e := env
	e.HostAddrs = append([]netip.Prefix{netip.MustParsePrefix("10.0.2.15/24")}, env.HostAddrs...)
	c := Default()
	cl, err := c.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	// 10.0.3.0/24 is the host's lxcbr0 in env: the next free is 10.0.4.0.
	if got := cl.Self().Subnet.String(); got != "10.0.4.0/24" || cl.Self().IP.String() != "10.0.4.100" {
		t.Errorf("subnet %s IP %s, want 10.0.4.0/24 and .100", got, cl.Self().IP)
	}
	c.NodeSubnet = "10.0.2.0/24"
	if _, err := c.Resolve(e); err == nil || !strings.Contains(err.Error(), "10.0.4.0/24") {
		t.Errorf("a named colliding subnet: %v", err)
	}
}

// Every bad value gets an error naming its field (and flag) and the fix.
func TestBadValues(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"name", Config{Name: "My_Node"}, []string{"name (--name)", "DNS label"}},
		{"worker without server", Config{Role: Worker, HostIP: "192.0.2.2"}, []string{"server", "usernode join https://HOST:PORT"}},
		{"worker server by name", Config{Role: Worker, HostIP: "192.0.2.2", Server: "https://cp.example:6443"}, []string{"server", "IPv4 address"}},
		{"worker server not https", Config{Role: Worker, HostIP: "192.0.2.2", Server: "http://192.0.2.9:6443"}, []string{"server", "https://HOST:PORT"}},
		{"worker server no port", Config{Role: Worker, HostIP: "192.0.2.2", Server: "https://192.0.2.9"}, []string{"server", "https://HOST:PORT"}},
		{"worker on loopback", Config{Role: Worker, HostIP: "127.0.0.1", Server: "https://192.0.2.9:6443"}, []string{"hostIP", "other hosts"}},
		{"control plane with server", Config{Server: "https://192.0.2.9:6443"}, []string{"server", "only a worker"}},
		{"role", Config{Role: "boss"}, []string{"role", "control-plane or worker"}},
		{"net", Config{Net: "vpnkit"}, []string{"net (--net)", "known: lxc-user-nic, none, pasta, slirp4netns"}},
		{"cri", Config{CRI: "docker"}, []string{"cri (--cri)", "known: containerd"}},
		{"cni", Config{CNI: "calico"}, []string{"cni (--cni)", "known: bridge, flannel"}},
		{"service CIDR syntax", Config{Cluster: ClusterConfig{ServiceCIDR: "10.96.0.0/33"}}, []string{"cluster.serviceCIDR (--service-cidr) \"10.96.0.0/33\"", "not an IPv4 CIDR"}},
		{"service CIDR host bits", Config{Cluster: ClusterConfig{ServiceCIDR: "10.96.0.1/16"}}, []string{"cluster.serviceCIDR", "10.96.0.0/16?"}},
		{"service CIDR too wide", Config{Cluster: ClusterConfig{ServiceCIDR: "10.0.0.0/8"}}, []string{"cluster.serviceCIDR", "between /12 and /28"}},
		{"overlapping CIDRs", Config{Cluster: ClusterConfig{PodCIDR: "10.96.128.0/17"}}, []string{"cluster.podCIDR (--pod-cidr)", "overlaps cluster.serviceCIDR 10.96.0.0/16"}},
		{"pod CIDR contains service CIDR", Config{Cluster: ClusterConfig{PodCIDR: "10.0.0.0/8"}}, []string{"cluster.podCIDR", "contains cluster.serviceCIDR 10.96.0.0/16"}},
		{"mask", Config{Cluster: ClusterConfig{PodCIDR: "10.88.0.0/24"}}, []string{"cluster.nodeCIDRMaskSize", "longer than /24"}},
		{"DNS IP outside", Config{Cluster: ClusterConfig{DNSIP: "10.97.0.10"}}, []string{"cluster.dnsIP", "address of cluster.serviceCIDR"}},
		{"DNS IP is the API's", Config{Cluster: ClusterConfig{DNSIP: "10.96.0.1"}}, []string{"cluster.dnsIP"}},
		{"domain", Config{Cluster: ClusterConfig{DNSDomain: "Cluster..local"}}, []string{"cluster.dnsDomain (--cluster-domain)"}},
		{"version", Config{Cluster: ClusterConfig{KubernetesVersion: "v1.25.0"}}, []string{"cluster.kubernetesVersion", "not supported"}},
		{"node subnet vs host", Config{NodeSubnet: "192.0.2.0/25"}, []string{"nodeSubnet (--node-subnet)", "overlaps the host's own network 192.0.2.0/24", "10.0.2.0/24"}},
		{"node subnet vs host bridge", Config{NodeSubnet: "10.0.3.0/24"}, []string{"nodeSubnet", "overlaps the host's own network 10.0.3.0/24"}},
		{"node subnet vs pods", Config{NodeSubnet: "10.88.5.0/24"}, []string{"nodeSubnet", "overlaps cluster.podCIDR"}},
		{"node subnet too small", Config{NodeSubnet: "10.0.2.0/28"}, []string{"nodeSubnet", "between /8 and /25"}},
		{"host IP", Config{HostIP: "localhost"}, []string{"hostIP (--host-ip)", "not an IPv4 address"}},
		{"host IP any", Config{HostIP: "0.0.0.0"}, []string{"hostIP", "name one address"}},
		{"host IP not here", Config{HostIP: "198.51.100.7"}, []string{"hostIP", "not an address of this host"}},
		{"publish address", Config{PublishAddress: "all"}, []string{"publishAddress (--publish-address)", "not an IP address"}},
		{"volume guard", Config{VolumeGuard: "maybe"}, []string{"volumeGuard (--volume-guard) \"maybe\"", "deny", "warn", "off"}},
		{"publish address not here", Config{PublishAddress: "198.51.100.7"}, []string{"publishAddress", "not an address of this host"}},
		{"same ports", Config{APIPort: 7000, KubeletPort: 7000}, []string{"kubeletPort (--kubelet-port) \"7000\"", "also apiPort"}},
		{"source IP with a host IP", Config{KeepSourceIP: true, HostIP: "192.0.2.2"}, []string{"keepSourceIP (--keep-source-ip)", "--host-ip"}},
		{"metrics on a worker", Config{Role: Worker, HostIP: "192.0.2.2", Server: "https://192.0.2.9:6443", Metrics: true}, []string{"metrics (--metrics)", "control plane", "drop --metrics"}},
		{"busy poll", Config{PortBusyPoll: "fast"}, []string{"portBusyPoll (--port-busy-poll)", "50us"}},
		{"timeout", Config{ReadyTimeout: "-1m"}, []string{"readyTimeout (--timeout)", "positive"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			SetDefaults(&c.cfg)
			_, err := c.cfg.Resolve(env)
			if err == nil {
				t.Fatal("no error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is no FieldError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	c := Config{Name: "Bad", HostIP: "x", Cluster: ClusterConfig{ServiceCIDR: "y"}}
	SetDefaults(&c)
	_, err := c.Resolve(env)
	for _, w := range []string{"name", "hostIP", "cluster.serviceCIDR"} {
		if err == nil || !strings.Contains(err.Error(), w+" ") {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parse parses args with every flag bound, as `up` has them.
func parse(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	BindFlags(fs, AllFlags)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// Flags win over the file, the file over the defaults, and a flag left
// at its default does not undo the file.
func TestPrecedence(t *testing.T) {
	path := writeFile(t, `
name: filenode
net: pasta
apiPort: 7443
portBusyPoll: 10us
keepSourceIP: true
cluster:
  serviceCIDR: 10.100.0.0/16
  dnsDomain: file.local
`)
	fs := parse(t, "--api-port", "8443", "--service-cidr=10.200.0.0/16", "--keep-source-ip=false", "--net", "slirp4netns")
	c, err := Load(Source{Path: path, Explicit: true, Flags: fs})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "filenode" || c.APIPort != 8443 || c.Net != "slirp4netns" || c.KeepSourceIP ||
		c.PortBusyPoll != "10us" || c.Cluster.ServiceCIDR != "10.200.0.0/16" || c.Cluster.DNSDomain != "file.local" ||
		c.KubeletPort != 10250 || c.Cluster.PodCIDR != "" || c.Cluster.VXLANPort != DefaultVXLANPort {
		t.Errorf("merged config wrong: %+v", c)
	}
	// Without flags, the file; without a file, the defaults.
	c, err = Load(Source{Path: path, Explicit: true})
	if err != nil || c.APIPort != 7443 || !c.KeepSourceIP {
		t.Errorf("file alone: %+v %v", c, err)
	}
	c, err = Load(Source{Path: filepath.Join(t.TempDir(), "none.yaml"), Flags: parse(t)})
	if err != nil || *c != Default() {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestFileErrors(t *testing.T) {
	for _, c := range []struct{ name, file string }{
		{"unknown field", "apiPortt: 6443\n"},
		{"wrong type", "apiPort: lots\n"},
		{"port too big", "apiPort: 70000\n"},
		{"not yaml", "name: [\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, c.file)
			_, err := Load(Source{Path: p, Explicit: true})
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "cluster.serviceCIDR") {
				t.Errorf("error %v should name the file and list the fields", err)
			}
		})
	}
	if _, err := Load(Source{Path: "/nonexistent/config.yaml", Explicit: true}); err == nil {
		t.Error("a missing --config file is no error")
	}
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	BindFlags(fs, AllFlags)
	if err := fs.Parse([]string{"--timeout", "soon"}); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Errorf("--timeout soon: %v", err)
	}
}

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	fs := parse(t, "--state-dir", "st", "--api-port", "7443", "--timeout", "10m", "--net", "pasta")
	args, err := Args(fs)
	if err != nil {
		t.Fatal(err)
	}
	want := "--api-port=7443 --net=pasta --state-dir=" + filepath.Join(dir, "st") + " --timeout=10m"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args %q, want %q", got, want)
	}
	// What Args gives back means the same config when parsed again.
	c1, _ := Load(Source{Flags: fs})
	c2, _ := Load(Source{Flags: parse(t, args...)})
	c1.StateDir = filepath.Join(dir, "st")
	if *c1 != *c2 {
		t.Errorf("re-parsed %+v != %+v", c2, c1)
	}
	if d, _ := time.ParseDuration(c2.ReadyTimeout); d != 10*time.Minute {
		t.Errorf("timeout %s", c2.ReadyTimeout)
	}
}

func TestFileFields(t *testing.T) {
	got := strings.Join(FileFields(), " ")
	for _, f := range []string{"name", "stateDir", "apiPort", "portBusyPoll", "nodeSubnet", "cluster.serviceCIDR", "cluster.dnsIP", "cluster.kubernetesVersion"} {
		if !strings.Contains(" "+got+" ", " "+f+" ") {
			t.Errorf("FileFields lacks %s: %s", f, got)
		}
	}
}

// README's config section lists every field of config.yaml.
func TestREADMEListsFields(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skip("no README beside the module:", err)
	}
	for _, f := range FileFields() {
		if !strings.Contains(string(b), "`"+f+"`") {
			t.Errorf("README.md does not document config field `%s`", f)
		}
	}
}

// A persistent flag (`usernode port --name N add ...`) is parsed by the
// subcommand's flag set, but still counts.
func TestPersistentFlag(t *testing.T) {
	parent := pflag.NewFlagSet("port", pflag.ContinueOnError)
	BindFlags(parent, NodeFlags)
	child := pflag.NewFlagSet("add", pflag.ContinueOnError)
	child.AddFlagSet(parent)
	if err := child.Parse([]string{"--name", "tp"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(Source{Flags: parent})
	if err != nil || c.Name != "tp" {
		t.Errorf("name %q, %v", c.Name, err)
	}
}

// A worker: the cluster's API is the server it joins, its host IP the
// default route's, and its subnet (like any multi-node node's) comes from
// its name, so that two nodes' InternalIPs differ.
func TestWorker(t *testing.T) {
	e := env
	e.DefaultRouteIP = netip.MustParseAddr("192.0.2.2")
	c := Config{Name: "w1", Role: Worker, Server: "https://192.0.2.9:7443"}
	SetDefaults(&c)
	cl, err := c.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	n := cl.Self()
	if cl.API.URL() != "https://192.0.2.9:7443" || n.HostIP.String() != "192.0.2.2" || !cl.MultiNode() {
		t.Errorf("API %s host IP %s multi-node %v", cl.API.URL(), n.HostIP, cl.MultiNode())
	}
	if cl.NodeAPIServer(n) != "https://192.0.2.9:7443" {
		t.Errorf("a worker's components reach the API at %s", cl.NodeAPIServer(n))
	}
	w2 := Config{Name: "w2", Role: Worker, Server: c.Server}
	SetDefaults(&w2)
	cl2, err := w2.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	if n.Subnet == cl2.Self().Subnet || n.Subnet.String() == DefaultNodeSubnet {
		t.Errorf("workers w1 and w2 both on %s (default %s)", n.Subnet, DefaultNodeSubnet)
	}
	// The same name gives the same subnet on every run.
	if again, _ := c.Resolve(e); again.Self().Subnet != n.Subnet {
		t.Errorf("w1's subnet moved: %s, then %s", n.Subnet, again.Self().Subnet)
	}
	// With no default route and no host IP named, the error says what to do.
	e.DefaultRouteIP = netip.Addr{}
	if _, err := c.Resolve(e); err == nil || !strings.Contains(err.Error(), "hostIP (--host-ip)") {
		t.Errorf("no default route: %v", err)
	}
	// A single-node control plane stays on slirp4netns's own subnet.
	if s := resolve(t, Config{Name: "w1"}).Self().Subnet.String(); s != DefaultNodeSubnet {
		t.Errorf("single-node subnet %s", s)
	}
}

// `hostIP: auto` is the default route's address, and makes a control
// plane other hosts can join: Flannel, and Flannel's pod range.
func TestAutoHostIP(t *testing.T) {
	e := env
	e.DefaultRouteIP = netip.MustParseAddr("192.0.2.2")
	c := Config{Name: "cp", HostIP: AutoHostIP}
	SetDefaults(&c)
	cl, err := c.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	if n := cl.Self(); n.HostIP.String() != "192.0.2.2" || !cl.MultiNode() || n.CNI != DefaultMultiNodeCNI || cl.API.URL() != "https://192.0.2.2:6443" {
		t.Errorf("auto: host IP %s, multi-node %v, CNI %s, API %s", n.HostIP, cl.MultiNode(), n.CNI, cl.API.URL())
	}
	if cl.PodCIDR.String() != DefaultMultiNodePodCIDR || cl.VXLANPort != DefaultVXLANPort {
		t.Errorf("multi-node pod CIDR %s, VXLAN port %d", cl.PodCIDR, cl.VXLANPort)
	}
	if p := resolve(t, Config{Name: "one"}).PodCIDR.String(); p != DefaultPodCIDR {
		t.Errorf("single-node pod CIDR %s", p)
	}
	e.DefaultRouteIP = netip.Addr{}
	if _, err := c.Resolve(e); err == nil || !strings.Contains(err.Error(), "no default route") {
		t.Errorf("auto without a default route: %v", err)
	}
}

// A worker takes the cluster section its control plane publishes (when
// joining) and its join.yaml keeps (later ups): the values a user left
// out are filled, and one set otherwise is refused with the cluster's.
func TestWorkerAdoptsCluster(t *testing.T) {
	cpCfg := Config{Name: "cp", HostIP: "192.0.2.2", Cluster: ClusterConfig{ServiceCIDR: "10.112.0.0/16", VXLANPort: 9472}}
	SetDefaults(&cpCfg)
	e := env
	e.DefaultRouteIP = netip.MustParseAddr("192.0.2.2")
	cp, err := cpCfg.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	shared := cp.Shared()
	c, err := Load(Source{Join: "https://192.0.2.9:6443", Shared: &shared})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Resolve(e)
	if err != nil {
		t.Fatal(err)
	}
	if w.Shared() != shared || w.DNSIP.String() != "10.112.0.10" {
		t.Errorf("the worker's cluster section %+v, the cluster's %+v", w.Shared(), shared)
	}

	// What `join` records, a later `up` reads back.
	home := t.TempDir()
	getenv := func(k string) string { return map[string]string{"XDG_DATA_HOME": home}[k] }
	dir := DefaultStateDir(c.Name, getenv)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteJoin(dir, c); err != nil {
		t.Fatal(err)
	}
	again, err := Load(Source{Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	if again.Role != Worker || again.Cluster.ServiceCIDR != "10.112.0.0/16" || again.Cluster.VXLANPort != 9472 {
		t.Errorf("the worker's up read back %+v", again)
	}

	// A value of the user's own that differs: the field, the cluster's
	// value, and what to do.
	_, err = Load(Source{Getenv: getenv, Flags: parse(t, "--vxlan-port", "8472")})
	if err == nil || !strings.Contains(err.Error(), "cluster.vxlanPort (--vxlan-port)") || !strings.Contains(err.Error(), "uses 9472") {
		t.Errorf("a worker's own VXLAN port: %v", err)
	}
	_, err = Load(Source{Join: "https://192.0.2.9:6443", Shared: &shared, Flags: parse(t, "--pod-cidr", "10.88.0.0/16")})
	if err == nil || !strings.Contains(err.Error(), "uses "+DefaultMultiNodePodCIDR) {
		t.Errorf("joining with another pod CIDR: %v", err)
	}
}

// --metrics reaches the control plane's node in the model; it is off by
// default.
func TestMetricsFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--metrics"}, true}, {[]string{"--metrics=false"}, false}} {
		cfg, err := Load(Source{Flags: parse(t, c.args...)})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := cfg.Resolve(env)
		if err != nil {
			t.Fatal(err)
		}
		if got := cl.Self().Metrics; got != c.want {
			t.Errorf("%v: node's Metrics = %v, want %v", c.args, got, c.want)
		}
	}
}
