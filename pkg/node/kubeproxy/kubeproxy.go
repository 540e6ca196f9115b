// Package kubeproxy renders kube-proxy's configuration file
// (/etc/usernode/kube-proxy.yaml, regenerated at each `up`) and its flags.
//
// No feature gate is needed at any supported version: the one userns
// workaround kube-proxy ever had (ignoring a failing RLIMIT_NOFILE) lived in
// the userspace proxier, removed in 1.26. In iptables mode the only steps a
// user namespace refuses are the conntrack sysctls, which the zeros below
// skip. The node's network namespace is its own, so kube-proxy's rules and
// its route_localnet sysctl stay inside it.
package kubeproxy

import (
	"errors"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbasev1alpha1 "k8s.io/component-base/config/v1alpha1"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/internal/k8sversion"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
)

const (
	// DefaultConfigPath is where kube-proxy's configuration file is
	// written, inside the node.
	DefaultConfigPath = "/etc/usernode/kube-proxy.yaml"
	// MetricsBindAddress keeps metrics on the node's loopback: nothing
	// outside the node scrapes them, and the node netns's 0.0.0.0 includes
	// the interface the host's forwarded ports reach.
	MetricsBindAddress = "127.0.0.1:10249"
	// HealthzBindAddress is where the supervisor checks kube-proxy is up.
	HealthzBindAddress = "127.0.0.1:10256"

	defaultVersion = k8sversion.Default
)

// DefaultKubeconfig is kube-proxy's kubeconfig in the node's layout.
var DefaultKubeconfig = kubeconfig.Paths(kubeconfig.DefaultDir).KubeProxy

// Options says what kube-proxy must be told.
type Options struct {
	Version  string     // kube-proxy's version; default v1.37.2
	NodeName string     // required: kube-proxy reads its Node object by this name
	NodeIP   netip.Addr // required
	// ClusterCIDR is the pods' range (all nodes'): traffic from it is
	// "local" and is not masqueraded to Services. Required.
	ClusterCIDR    netip.Prefix
	KubeconfigPath string // default /etc/usernode/kube-proxy.kubeconfig
	ConfigPath     string // default /etc/usernode/kube-proxy.yaml
	// NodePortAddresses limits which local addresses serve NodePorts.
	// Default: the node IP, where other nodes and the node's own
	// processes reach it, and 127.0.0.1, because the host's port forwarder
	// dials 127.0.0.1 inside the node's namespace (kube-proxy then sets
	// route_localnet=1 in that namespace only).
	NodePortAddresses []string
	FeatureGates      map[string]bool
}

func (o *Options) defaults() error {
	if o.Version == "" {
		o.Version = defaultVersion
	}
	if _, err := k8sversion.Parse(o.Version); err != nil {
		return err
	}
	if o.NodeName == "" {
		return errors.New("kube-proxy: NodeName is required")
	}
	if !o.NodeIP.IsValid() || !o.ClusterCIDR.IsValid() {
		return errors.New("kube-proxy: NodeIP and ClusterCIDR are required (the cluster model has them)")
	}
	if o.KubeconfigPath == "" {
		o.KubeconfigPath = DefaultKubeconfig
	}
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.NodePortAddresses == nil {
		o.NodePortAddresses = []string{
			netip.PrefixFrom(o.NodeIP, o.NodeIP.BitLen()).String(),
			"127.0.0.1/32",
		}
	}
	return nil
}

// Config is kube-proxy's configuration for o.
func Config(o Options) (*kubeproxyv1alpha1.KubeProxyConfiguration, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	zero := int32(0)
	c := &kubeproxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:         metav1.TypeMeta{APIVersion: kubeproxyv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		ClientConnection: componentbasev1alpha1.ClientConnectionConfiguration{Kubeconfig: o.KubeconfigPath},
		// Names the Node object kube-proxy reads for its IPs and topology;
		// must equal the kubelet's --hostname-override.
		HostnameOverride:   o.NodeName,
		MetricsBindAddress: MetricsBindAddress,
		HealthzBindAddress: HealthzBindAddress,
		// The task page: iptables mode. (nftables needs nft and a newer
		// kernel API than every host here has been checked for.)
		Mode:              kubeproxyv1alpha1.ProxyMode("iptables"),
		ClusterCIDR:       o.ClusterCIDR.String(),
		NodePortAddresses: o.NodePortAddresses,
		// The task page's zeros: the conntrack table size and timeouts are
		// global sysctls (nf_conntrack_max, the module's hashsize) that a user
		// namespace may not write; 0 means "leave as is" (pointers: nil
		// would mean "use the default", which kube-proxy would try to set).
		Conntrack: kubeproxyv1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore:            &zero,
			TCPEstablishedTimeout: &metav1.Duration{Duration: 0 * time.Second},
			TCPCloseWaitTimeout:   &metav1.Duration{Duration: 0 * time.Second},
		},
	}
	if len(o.FeatureGates) > 0 {
		c.FeatureGates = o.FeatureGates
	}
	return c, nil
}

// Render is Config(o) as YAML, written to o.ConfigPath. Every field is
// written, as kubeadm writes it: kube-proxy's types have no omitempty, and
// the zeros that matter (conntrack) are told apart from absent ones only by
// the pointer.
func Render(o Options) ([]byte, error) {
	c, err := Config(o)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(c)
}

// Flags are kube-proxy's command-line flags: everything else is in the file.
func Flags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	return []string{"--config=" + o.ConfigPath}, nil
}
