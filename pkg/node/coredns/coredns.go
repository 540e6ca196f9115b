// Package coredns gives the node its cluster DNS: CoreDNS as a supervised
// process of the node (not a pod: no registry is reachable to pull its
// image, and a process is serving before the kubelet even starts), and the
// objects that make kube-proxy send pods' queries to it.
//
//   - CoreDNS listens on the node's IP (10.0.2.100:53, UDP and TCP) in the
//     node's network namespace, where usernode is root of the owning user
//     namespace and may bind port 53. Its `kubernetes` plugin answers for
//     the cluster domain from the API (with its own client certificate,
//     pki.CoreDNSUser), and everything else goes to the node's
//     /etc/resolv.conf, which names the network driver's DNS.
//   - The Service kube-system/kube-dns has the kubelet's clusterDNS
//     (10.96.0.10) as its ClusterIP and no selector; an EndpointSlice that
//     usernode manages points it at the node's IP. kube-proxy DNATs pods'
//     queries to 10.96.0.10 to CoreDNS like for any other Service.
//   - RBAC: kubeadm's ClusterRole system:coredns, bound to the user
//     system:coredns (kubeadm binds it to the kube-system/coredns service
//     account, which nothing runs as here).
//
// The Corefile is kubeadm's, less what does not fit a process that usernode
// rewrites at each `up`: no `reload` (nothing edits it while it runs), no
// `health` lameduck (one replica: waiting 5 s on SIGTERM only slows `down`),
// no `prometheus` (nothing scrapes it); plus `bind`, so it serves on the node
// IP only.
package coredns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

// CoreDNS's defaults inside the node, and the names of its files and API
// objects.
const (
	// DefaultHealthAddr and DefaultReadyAddr are the `health` and `ready`
	// plugins' listeners, on loopback inside the node. Neither port is used
	// by another component there (kube-apiserver 6443, etcd 2379/2380/2381,
	// controller-manager 10257, scheduler 10259, kubelet 10248/10250,
	// kube-proxy 10249/10256).
	DefaultHealthAddr = "127.0.0.1:8080"
	DefaultReadyAddr  = "127.0.0.1:8181"
	// DefaultPort is where CoreDNS answers on the node's address: the
	// kube-dns Service's port, which pods reach without a translation.
	DefaultPort = 53
	// DefaultUpstream is where names outside the cluster go: the servers
	// the node's own resolv.conf lists.
	DefaultUpstream = "/etc/resolv.conf"

	// Namespace and ServiceName place the cluster DNS Service where
	// kubeadm does, so tools that look for kube-system/kube-dns find it.
	Namespace   = "kube-system"
	ServiceName = "kube-dns"
	// ClusterRoleName is kubeadm's; the binding is usernode's own, since
	// its subject is not kubeadm's.
	ClusterRoleName        = "system:coredns"
	ClusterRoleBindingName = "usernode:coredns"
	// ManagedBy marks the EndpointSlice as not the EndpointSlice
	// controller's (which only touches slices it manages, and the Service
	// has no selector anyway).
	ManagedBy = "usernode"
	// FieldManager is the server-side apply manager of the objects.
	FieldManager = component.FieldManager

	// CorefileName and ObjectsName are the files written into
	// Options.Dir: CoreDNS's configuration, and the API objects applied
	// before it starts.
	CorefileName = "Corefile"
	ObjectsName  = "coredns.yaml"
)

// Options says where CoreDNS serves and what it serves.
type Options struct {
	// NodeName is the EndpointSlice endpoint's nodeName (required).
	NodeName string
	// NodeIP is where CoreDNS listens and what the EndpointSlice points
	// at (required).
	NodeIP netip.Addr
	// ServiceIP is the kube-dns ClusterIP: the kubelet's clusterDNS
	// (required).
	ServiceIP netip.Addr
	// ClusterDomain is the kubernetes plugin's zone (required).
	ClusterDomain string
	// Port CoreDNS listens on at NodeIP (the Service's port is always 53).
	// Default 53; tests that cannot bind 53 use another.
	Port uint16
	// Endpoint, when set, is where the kube-dns Service sends queries
	// instead of NodeIP:Port: in a multi-node cluster, the control plane's
	// host IP and a port the host forwards to CoreDNS, which pods on every
	// host reach (the node's own address is behind its host's NAT). CoreDNS
	// then also listens on 127.0.0.1, where the forwarder delivers.
	Endpoint netip.AddrPort
	// HealthAddr, ReadyAddr: see DefaultHealthAddr.
	HealthAddr, ReadyAddr string
	// Upstream is where names outside the cluster go: a resolv.conf or
	// addresses, as the forward plugin takes them. Default /etc/resolv.conf.
	Upstream string
	// Kubeconfig is CoreDNS's own (kubeconfig.Files.CoreDNS). Default the
	// one kubeconfig.WriteComponents writes in kubeconfig.DefaultDir.
	Kubeconfig string

	// For Steps only.
	//
	// Binary is the coredns executable and Apply what applies the objects
	// (component.API's, both required by Steps); Dir (default
	// kubeconfig.DefaultDir) receives the Corefile and coredns.yaml.
	Binary string
	Apply  func(ctx context.Context, manifest []byte, fieldManager string) error
	Dir    string
}

func (o *Options) defaults() error {
	if o.NodeName == "" {
		return errors.New("coredns: NodeName is required")
	}
	if !o.NodeIP.IsValid() || !o.ServiceIP.IsValid() || o.ClusterDomain == "" {
		return errors.New("coredns: NodeIP, ServiceIP and ClusterDomain are required (the cluster model has them)")
	}
	if o.NodeIP.Is4() != o.ServiceIP.Is4() {
		return fmt.Errorf("coredns: node IP %v and service IP %v are not of the same family", o.NodeIP, o.ServiceIP)
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.HealthAddr, DefaultHealthAddr)
	def(&o.ReadyAddr, DefaultReadyAddr)
	def(&o.Upstream, DefaultUpstream)
	def(&o.Kubeconfig, kubeconfig.Paths(kubeconfig.DefaultDir).CoreDNS)
	def(&o.Dir, kubeconfig.DefaultDir)
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	// The Corefile is whitespace separated: a value with a space, brace or
	// newline would change its structure rather than fail.
	for name, v := range map[string]string{"ClusterDomain": o.ClusterDomain, "HealthAddr": o.HealthAddr,
		"ReadyAddr": o.ReadyAddr, "Upstream": o.Upstream, "Kubeconfig": o.Kubeconfig} {
		if strings.ContainsAny(v, " \t\r\n{}\"'#") {
			return fmt.Errorf("coredns: %s %q: no spaces, quotes, braces or # allowed", name, v)
		}
	}
	return nil
}

var corefileTmpl = template.Must(template.New("Corefile").Parse(`# Generated by usernode (pkg/node/coredns) at each ` + "`up`" + `; edits are lost.
.:{{.Port}} {
    bind {{.NodeIP}}{{if .Endpoint.IsValid}} 127.0.0.1{{end}}
    errors
    health {{.HealthAddr}}
    ready {{.ReadyAddr}}
    kubernetes {{.ClusterDomain}} in-addr.arpa ip6.arpa {
        kubeconfig {{.Kubeconfig}}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . {{.Upstream}} {
        max_concurrent 1000
    }
    cache 30 {
        disable success {{.ClusterDomain}}
        disable denial {{.ClusterDomain}}
    }
    loop
    loadbalance
}
`))

// Corefile is CoreDNS's configuration for o. See the package comment.
//
// `cache 30` caches what comes from upstream; answers for the cluster
// domain are not cached (as kubeadm does): the kubernetes plugin answers
// them from its informers, and a cached NXDOMAIN would hide a Service for
// 30 s after it is created. `loop` stops CoreDNS if the upstream resolves
// back to itself (a resolv.conf naming the node or the ClusterIP).
func Corefile(o Options) ([]byte, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := corefileTmpl.Execute(&b, o); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// BootstrapObjects are what kube-apiserver must hold for pods to reach
// CoreDNS and for CoreDNS to read the API.
type BootstrapObjects struct {
	ClusterRole        rbacv1.ClusterRole
	ClusterRoleBinding rbacv1.ClusterRoleBinding
	Service            corev1.Service
	EndpointSlice      discoveryv1.EndpointSlice
}

// Objects builds them for o.
//
// The EndpointSlice's endpoint is always ready: it is not tied to
// CoreDNS's health. CoreDNS is the supervisor's to restart, and there is
// no other replica to send queries to meanwhile.
func Objects(o Options) (*BootstrapObjects, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	labels := map[string]string{
		"k8s-app":                       "kube-dns",
		"kubernetes.io/cluster-service": "true",
		"kubernetes.io/name":            "CoreDNS",
	}
	ep := netip.AddrPortFrom(o.NodeIP, o.Port)
	if o.Endpoint.IsValid() {
		ep = o.Endpoint
	}
	ports := []corev1.ServicePort{
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(int32(ep.Port()))},
		{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(int32(ep.Port()))},
	}
	addrType := discoveryv1.AddressTypeIPv4
	if o.NodeIP.Is6() {
		addrType = discoveryv1.AddressTypeIPv6
	}
	ready := true
	var epPorts []discoveryv1.EndpointPort
	for _, p := range ports {
		epPorts = append(epPorts, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(int32(ep.Port()))})
	}
	return &BootstrapObjects{
		// kubeadm's rules (cmd/kubeadm/app/phases/addons/dns), verbatim.
		ClusterRole: rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{discoveryv1.GroupName}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			},
		},
		ClusterRoleBinding: rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleBindingName},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ClusterRoleName},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: pki.CoreDNSUser}},
		},
		Service: corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: Namespace, Labels: labels},
			Spec: corev1.ServiceSpec{
				// No selector: the EndpointSlice below is the endpoints.
				Type:      corev1.ServiceTypeClusterIP,
				ClusterIP: o.ServiceIP.String(),
				Ports:     ports,
			},
		},
		EndpointSlice: discoveryv1.EndpointSlice{
			TypeMeta: metav1.TypeMeta{APIVersion: discoveryv1.SchemeGroupVersion.String(), Kind: "EndpointSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: Namespace, Labels: map[string]string{
				discoveryv1.LabelServiceName: ServiceName,
				discoveryv1.LabelManagedBy:   ManagedBy,
			}},
			AddressType: addrType,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{ep.Addr().String()},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				NodeName:   ptr(o.NodeName),
			}},
			Ports: epPorts,
		},
	}, nil
}

func ptr[T any](v T) *T { return &v }

// RenderObjects is Objects as a multi-document YAML stream for
// `kubectl apply --server-side -f`.
func RenderObjects(o Options) ([]byte, error) {
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	return component.YAMLStream(&objs.ClusterRole, &objs.ClusterRoleBinding, &objs.Service, &objs.EndpointSlice)
}

// Steps writes the Corefile and the objects into o.Dir and returns the
// supervisor's steps: a one-shot server-side apply of the objects (it
// needs kube-apiserver), then CoreDNS, ready once its `ready`
// endpoint answers, which is after the kubernetes plugin has synced with
// the API.
//
// Applying the objects before kube-proxy starts means kube-proxy's first
// sync already programs kube-dns.
func Steps(o Options) ([]supervise.Step, error) {
	return steps(o, func(path string, b []byte) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		return os.WriteFile(path, b, 0o600)
	})
}

func steps(o Options, write func(path string, b []byte) error) ([]supervise.Step, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Binary == "" || o.Apply == nil {
		return nil, errors.New("coredns: Binary and Apply are required")
	}
	corefile, err := Corefile(o)
	if err != nil {
		return nil, err
	}
	objs, err := RenderObjects(o)
	if err != nil {
		return nil, err
	}
	cfPath, objPath := filepath.Join(o.Dir, CorefileName), filepath.Join(o.Dir, ObjectsName)
	if err := write(cfPath, corefile); err != nil {
		return nil, err
	}
	if err := write(objPath, objs); err != nil {
		return nil, err
	}
	return []supervise.Step{
		{Name: component.DNSObjectsStep, Oneshot: true, After: []string{component.APIServerStep},
			Run: func(ctx context.Context) error { return o.Apply(ctx, objs, FieldManager) }},
		// After its objects: its RBAC is among them, and without it
		// CoreDNS could not list the Services it answers for.
		{Name: "coredns", Argv: []string{o.Binary, "-conf", cfPath}, After: []string{component.DNSObjectsStep},
			Ready: &supervise.Probe{URL: "http://" + o.ReadyAddr + "/ready"}},
	}, nil
}
