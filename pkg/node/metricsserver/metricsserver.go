// Package metricsserver runs metrics-server (sigs.k8s.io/metrics-server)
// on a control plane started with --metrics, so that `kubectl top` and
// the HorizontalPodAutoscaler have the resource metrics API.
//
// Like CoreDNS it is a supervised process of the node, not a pod: no
// registry is reachable for its image, and a process needs no service
// account, so it gets its own identity from the cluster CA instead
// (pki.MetricsServerUser), as a client certificate in a kubeconfig.
//
//   - It listens on the node's IP (DefaultPort) with a serving certificate
//     from the cluster CA (pki.PKI.MetricsServer) that names the Service
//     metrics-server.kube-system.svc, which is what kube-apiserver's
//     aggregator checks; the APIService's caBundle is the cluster CA.
//   - The Service kube-system/metrics-server has no selector; usernode
//     writes its EndpointSlice, the node's IP and DefaultPort, which both
//     kube-proxy and the aggregator's availability check read (1.37's
//     kube-aggregator looks up EndpointSlices only, by the service-name
//     label and the port's name).
//   - kube-apiserver (already configured with --requestheader-* and its
//     front-proxy client certificate) proxies to it; metrics-server takes
//     the user from those headers, trusting the front-proxy CA for the
//     CN front-proxy-client only, and asks kube-apiserver whether the user
//     may (system:auth-delegator).
//   - It scrapes each kubelet's /metrics/resource with the same client
//     certificate and checks the kubelet's serving certificate against the
//     cluster CA (--kubelet-certificate-authority), never
//     --kubelet-insecure-tls: usernode's kubelets serve certificates from
//     the cluster CA (pki on a control plane, an approved CSR on a worker).
//     The kubelet's webhook authorizer grants nodes/metrics and nodes/stats
//     through the ClusterRole system:metrics-server.
//   - It dials each kubelet at the address types kube-apiserver uses for
//     exec and logs (InternalIP on a single node; ExternalIP first on a
//     multi-node control plane, the host IP with 10250 forwarded), at the
//     port the Node's status gives.
package metricsserver

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/pki"
)

// Defaults and names.
const (
	// DefaultPort is where metrics-server serves on the node's IP: the
	// port of upstream's manifests. Its own default, 10250, is the
	// kubelet's; no other component of the node uses 4443.
	DefaultPort = 4443
	// DefaultResolution is how often it scrapes the kubelets: upstream's
	// manifests' 15 s, so `kubectl top` has figures within a minute of
	// `up` (its built-in default is 60 s).
	DefaultResolution = 15 * time.Second

	Namespace   = pki.MetricsServerNamespace
	ServiceName = pki.MetricsServerService
	// APIServiceName is the resource metrics API's registration.
	APIServiceName = "v1beta1.metrics.k8s.io"
	// ClusterRoleName holds what metrics-server reads; ReaderRoleName
	// what `kubectl top` needs, aggregated into view, edit and admin as
	// upstream's manifests do.
	ClusterRoleName = "system:metrics-server"
	ReaderRoleName  = "system:aggregated-metrics-reader"
	// FieldManager is the server-side apply manager of the objects.
	FieldManager = component.FieldManager
	// ManagedBy marks the EndpointSlice as usernode's.
	ManagedBy = "usernode"

	// ObjectsName and KubeconfigName are the files written into
	// Options.Dir.
	ObjectsName    = "metrics-server.yaml"
	KubeconfigName = "metrics-server.kubeconfig"
)

// Options say where metrics-server serves and how it reaches the cluster.
type Options struct {
	// NodeName is the EndpointSlice endpoint's nodeName (required).
	NodeName string
	// NodeIP is where it listens and what the endpoints name (required).
	NodeIP netip.Addr
	// Port at NodeIP. Default DefaultPort.
	Port uint16
	// KubeletAddressTypes are the Node address types tried in order:
	// kube-apiserver's --kubelet-preferred-address-types (required).
	KubeletAddressTypes string
	// Resolution is the scrape interval. Default DefaultResolution.
	Resolution time.Duration
	// PKI is the cluster's (paths inside the node; required). CAPEM is
	// its CA certificate, the APIService's caBundle (required).
	PKI   *pki.PKI
	CAPEM []byte
	// Kubeconfig is metrics-server's own, with pki.MetricsServerClient
	// (required).
	Kubeconfig string

	// For Steps only: the binaries, the admin kubeconfig that applies
	// the objects, and the directory the objects go in.
	Binary, Kubectl, AdminKubeconfig, Dir string
}

func (o *Options) defaults() error {
	if o.NodeName == "" || !o.NodeIP.IsValid() {
		return errors.New("metrics-server: NodeName and NodeIP are required (the cluster model has them)")
	}
	if o.PKI == nil || len(o.CAPEM) == 0 || o.Kubeconfig == "" || o.KubeletAddressTypes == "" {
		return errors.New("metrics-server: PKI, CAPEM, Kubeconfig and KubeletAddressTypes are required")
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Resolution == 0 {
		o.Resolution = DefaultResolution
	}
	// metrics-server refuses less than 10 s.
	if o.Resolution < 10*time.Second {
		return fmt.Errorf("metrics-server: resolution %v is below metrics-server's minimum of 10s", o.Resolution)
	}
	return nil
}

// Flags is metrics-server's command line.
func Flags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	p := o.PKI
	return []string{
		"--kubeconfig=" + o.Kubeconfig,
		// Not in a pod: no in-cluster config to fall back on for the
		// TokenReviews and SubjectAccessReviews of delegated auth.
		"--authentication-kubeconfig=" + o.Kubeconfig,
		"--authorization-kubeconfig=" + o.Kubeconfig,
		"--bind-address=" + o.NodeIP.String(),
		"--secure-port=" + strconv.Itoa(int(o.Port)),
		"--tls-cert-file=" + p.MetricsServer.Cert,
		"--tls-private-key-file=" + p.MetricsServer.Key,
		// Given here rather than read from kube-system's
		// extension-apiserver-authentication ConfigMap: the same files
		// kube-apiserver uses, so they cannot disagree. Only
		// kube-apiserver's front-proxy client may assert a user.
		"--client-ca-file=" + p.CA.Cert,
		"--requestheader-client-ca-file=" + p.FrontProxyCA.Cert,
		"--requestheader-allowed-names=" + pki.FrontProxyClientCN,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		// The kubelets' serving certificates are the cluster CA's.
		"--kubelet-certificate-authority=" + p.CA.Cert,
		"--kubelet-client-certificate=" + p.MetricsServerClient.Cert,
		"--kubelet-client-key=" + p.MetricsServerClient.Key,
		"--kubelet-preferred-address-types=" + o.KubeletAddressTypes,
		"--kubelet-use-node-status-port",
		"--metric-resolution=" + o.Resolution.String(),
	}, nil
}

// APIService is apiregistration.k8s.io/v1's, the fields usernode sets
// (kube-aggregator's types would pull in a module for five fields).
type APIService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              APIServiceSpec `json:"spec"`
}

// APIServiceSpec is the part of apiregistration.k8s.io/v1's spec used here.
type APIServiceSpec struct {
	Service              ServiceReference `json:"service"`
	Group                string           `json:"group"`
	Version              string           `json:"version"`
	CABundle             []byte           `json:"caBundle"`
	GroupPriorityMinimum int32            `json:"groupPriorityMinimum"`
	VersionPriority      int32            `json:"versionPriority"`
}

// ServiceReference names the Service an APIService is served by.
type ServiceReference struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port"`
}

// BootstrapObjects are what kube-apiserver must hold for the resource
// metrics API to reach metrics-server, and for it to read the cluster.
type BootstrapObjects struct {
	ClusterRoles        []rbacv1.ClusterRole
	ClusterRoleBindings []rbacv1.ClusterRoleBinding
	AuthReaderBinding   rbacv1.RoleBinding
	Service             corev1.Service
	EndpointSlice       discoveryv1.EndpointSlice
	APIService          APIService
}

// Objects builds them for o. The roles are upstream's manifests' (v0.8.0,
// manifests/base/rbac.yaml), plus nodes/stats as the kubelet's older
// summary API needs; the bindings name the user pki.MetricsServerUser
// instead of upstream's service account.
func Objects(o Options) (*BootstrapObjects, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	tm := func(kind string) metav1.TypeMeta {
		return metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: kind}
	}
	user := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: pki.MetricsServerUser}}
	bind := func(name, role string) rbacv1.ClusterRoleBinding {
		return rbacv1.ClusterRoleBinding{TypeMeta: tm("ClusterRoleBinding"), ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}, Subjects: user}
	}
	labels := map[string]string{"k8s-app": "metrics-server"}
	port := int32(o.Port)
	ready := true
	addrType := discoveryv1.AddressTypeIPv4
	if o.NodeIP.Is6() {
		addrType = discoveryv1.AddressTypeIPv6
	}
	return &BootstrapObjects{
		ClusterRoles: []rbacv1.ClusterRole{
			{
				TypeMeta: tm("ClusterRole"),
				ObjectMeta: metav1.ObjectMeta{Name: ReaderRoleName, Labels: map[string]string{
					"k8s-app": "metrics-server",
					"rbac.authorization.k8s.io/aggregate-to-admin": "true",
					"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
					"rbac.authorization.k8s.io/aggregate-to-view":  "true",
				}},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}}},
			},
			{
				TypeMeta:   tm("ClusterRole"),
				ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName, Labels: labels},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"nodes/metrics", "nodes/stats"}, Verbs: []string{"get"}},
					{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}},
				},
			},
		},
		ClusterRoleBindings: []rbacv1.ClusterRoleBinding{
			bind("usernode:metrics-server", ClusterRoleName),
			// TokenReviews and SubjectAccessReviews for delegated auth.
			bind("usernode:metrics-server:system:auth-delegator", "system:auth-delegator"),
		},
		AuthReaderBinding: rbacv1.RoleBinding{
			TypeMeta:   tm("RoleBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: "usernode:metrics-server-auth-reader", Namespace: Namespace},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"},
			Subjects:   user,
		},
		Service: corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: Namespace, Labels: labels},
			Spec: corev1.ServiceSpec{
				Type:  corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(port)}},
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
				Addresses:  []string{o.NodeIP.String()},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				NodeName:   &o.NodeName,
			}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("https"), Protocol: ptr(corev1.ProtocolTCP), Port: &port}},
		},
		APIService: APIService{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apiregistration.k8s.io/v1", Kind: "APIService"},
			ObjectMeta: metav1.ObjectMeta{Name: APIServiceName, Labels: labels},
			Spec: APIServiceSpec{
				Service:  ServiceReference{Namespace: Namespace, Name: ServiceName, Port: 443},
				Group:    "metrics.k8s.io",
				Version:  "v1beta1",
				CABundle: o.CAPEM,
				// Upstream's values.
				GroupPriorityMinimum: 100,
				VersionPriority:      100,
			},
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
	var all []any
	for i := range objs.ClusterRoles {
		all = append(all, &objs.ClusterRoles[i])
	}
	for i := range objs.ClusterRoleBindings {
		all = append(all, &objs.ClusterRoleBindings[i])
	}
	all = append(all, &objs.AuthReaderBinding, &objs.Service, &objs.EndpointSlice, &objs.APIService)
	return component.YAMLStream(all...)
}

// Steps writes the objects into o.Dir with write and returns the
// supervisor's steps: a one-shot apply of the objects, then
// metrics-server, ready once /livez answers over TLS checked against the
// cluster CA. Not /readyz: that waits for a first scrape, up to
// Resolution, and `up` need not wait for it.
func Steps(o Options, write func(path string, b []byte) error) ([]supervise.Step, error) {
	if o.Binary == "" || o.Kubectl == "" || o.AdminKubeconfig == "" || o.Dir == "" {
		return nil, errors.New("metrics-server: Binary, Kubectl, AdminKubeconfig and Dir are required")
	}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	flags, err := Flags(o)
	if err != nil {
		return nil, err
	}
	objs, err := RenderObjects(o)
	if err != nil {
		return nil, err
	}
	objPath := filepath.Join(o.Dir, ObjectsName)
	if err := write(objPath, objs); err != nil {
		return nil, err
	}
	return []supervise.Step{
		{Name: "metrics-server-objects", Oneshot: true, Argv: []string{o.Kubectl, "--kubeconfig", o.AdminKubeconfig,
			"apply", "--server-side", "--field-manager=" + FieldManager, "--force-conflicts", "-f", objPath},
			// HOME is the host's /root in the node: no kuberc to read there.
			Env: []string{"KUBERC=off"}},
		{Name: "metrics-server", Argv: append([]string{o.Binary}, flags...),
			Ready: &supervise.Probe{URL: "https://" + netip.AddrPortFrom(o.NodeIP, o.Port).String() + "/livez", CA: o.PKI.CA.Cert}},
	}, nil
}
