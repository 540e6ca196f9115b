// Package controlplane gives the command lines of the node's control plane:
// etcd (3.6), kube-apiserver, kube-controller-manager and kube-scheduler,
// run as plain processes by the supervisor inside the node's namespaces
// (no static pods: they start sooner and do not depend on the kubelet).
//
// Everything listens inside the node's network namespace. Only
// kube-apiserver binds beyond loopback, because the kubelet reports, and
// kube-apiserver advertises, the node IP; the host reaches it through the
// port forwarder on 127.0.0.1:6443.
package controlplane

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/internal/k8sversion"
	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

const (
	defaultVersion = k8sversion.Default

	// DefaultSecurePort is kube-apiserver's port inside the node, which
	// the host's API port is forwarded to.
	DefaultSecurePort = 6443
	// DefaultEtcdDataDir is etcd's data dir: under /var/lib, so the
	// cluster's objects survive a restart of the node.
	DefaultEtcdDataDir = "/var/lib/etcd"
	// DefaultEtcdQuotaBackendBytes is 1 GiB, half etcd's default. It is a
	// ceiling on the database file in the user's home, not an allocation:
	// a one-developer cluster stays near 100 MiB since kube-apiserver
	// compacts every 5 minutes, so hitting the quota (etcd turns
	// read-only) means something is writing in a loop and should stop.
	DefaultEtcdQuotaBackendBytes = 1 << 30
	// EtcdName is the member's name. Fixed rather than the node's name: the
	// data dir outlives `down`, and a renamed member would no longer match
	// the cluster stored in it.
	EtcdName = "usernode"
)

// The control plane's addresses inside the node, and where the supervisor
// checks each component is up. etcd's metrics listener serves /health
// over plain HTTP with no data, which spares the probe a client
// certificate. kube-apiserver's needs one (anonymous auth is off): use the
// admin kubeconfig. The controller-manager's and scheduler's /healthz are
// open by default (--authorization-always-allow-paths).
const (
	EtcdHealthURL              = "http://127.0.0.1:2381/health"
	EtcdClientURL              = "https://127.0.0.1:2379"
	APIServerReadyzPath        = "/readyz"
	ControllerManagerHealthURL = "https://127.0.0.1:10257/healthz"
	SchedulerHealthURL         = "https://127.0.0.1:10259/healthz"

	etcdPeerURL    = "https://127.0.0.1:2380"
	etcdMetricsURL = "http://127.0.0.1:2381"
)

// DefaultPKI is the node's layout of certificates.
var DefaultPKI = pki.Paths(pki.DefaultDir)

// Options says what the control plane must be told.
type Options struct {
	Version     string     // Kubernetes version of the binaries; default v1.37.2
	ClusterName string     // required
	NodeName    string     // required
	NodeIP      netip.Addr // required
	// AdvertiseIP, when set, is the address kube-apiserver advertises (the
	// `kubernetes` Service's endpoint) instead of NodeIP, and the nodes'
	// ExternalIPs are the addresses it dials kubelets at: a multi-node
	// cluster's control plane gives its host IP, which every node reaches.
	AdvertiseIP netip.Addr
	// PKI gives every certificate and key path; default the layout under
	// /var/lib/usernode/pki (pki.Paths). Pass what pki.Ensure returned.
	PKI *pki.PKI
	// Kubeconfigs are the components' files (kubeconfig.WriteComponents);
	// default under /etc/usernode.
	Kubeconfigs *kubeconfig.Files

	// The topology, from the cluster model (required).
	ServiceCIDR      netip.Prefix
	ClusterCIDR      netip.Prefix // pods, all nodes
	NodeCIDRMaskSize int          // each node's share of ClusterCIDR
	ClusterDomain    string
	SecurePort       int // kube-apiserver's; default 6443

	EtcdDataDir           string // default /var/lib/etcd
	EtcdQuotaBackendBytes int64  // default 1 GiB
}

func (o *Options) defaults() error {
	if o.Version == "" {
		o.Version = defaultVersion
	}
	if _, err := k8sversion.Parse(o.Version); err != nil {
		return err
	}
	if o.NodeName == "" {
		return errors.New("control plane: NodeName is required")
	}
	if o.ClusterName == "" || !o.NodeIP.IsValid() || !o.ServiceCIDR.IsValid() || !o.ClusterCIDR.IsValid() || o.NodeCIDRMaskSize == 0 || o.ClusterDomain == "" {
		return errors.New("control plane: ClusterName, NodeIP, ServiceCIDR, ClusterCIDR, NodeCIDRMaskSize and ClusterDomain are required (the cluster model has them)")
	}
	if o.PKI == nil {
		o.PKI = DefaultPKI
	}
	if o.Kubeconfigs == nil {
		f := kubeconfig.Paths(kubeconfig.DefaultDir)
		o.Kubeconfigs = &f
	}
	if o.NodeCIDRMaskSize < o.ClusterCIDR.Bits() {
		return fmt.Errorf("node CIDR mask /%d is larger than the cluster CIDR %v", o.NodeCIDRMaskSize, o.ClusterCIDR)
	}
	if o.ClusterCIDR.Overlaps(o.ServiceCIDR) {
		return fmt.Errorf("pod CIDR %v overlaps service CIDR %v", o.ClusterCIDR, o.ServiceCIDR)
	}
	if o.SecurePort == 0 {
		o.SecurePort = DefaultSecurePort
	}
	if o.EtcdDataDir == "" {
		o.EtcdDataDir = DefaultEtcdDataDir
	}
	if o.EtcdQuotaBackendBytes == 0 {
		o.EtcdQuotaBackendBytes = DefaultEtcdQuotaBackendBytes
	}
	return nil
}

// EtcdFlags is etcd's command line.
//
// etcd serves TLS with client-certificate auth on 127.0.0.1 only, with its
// own CA, rather than plain HTTP on loopback. Loopback is not private to
// the control plane: every hostNetwork pod shares the node's network
// namespace, and PodSecurity's default (privileged) level admits them.
// Unauthenticated etcd would let any such pod read every Secret and
// rewrite RBAC. A separate CA keeps certificates that
// kube-controller-manager signs from CSRs (with the cluster CA) out.
func EtcdFlags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	p := o.PKI
	return []string{
		"--name=" + EtcdName,
		"--data-dir=" + o.EtcdDataDir,
		"--listen-client-urls=" + EtcdClientURL,
		"--advertise-client-urls=" + EtcdClientURL,
		// A single member still needs a peer listener; it is
		// certificate-protected like the client one.
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=" + EtcdName + "=" + etcdPeerURL,
		// Only read when the data dir is empty.
		"--initial-cluster-state=new",
		"--listen-metrics-urls=" + etcdMetricsURL,
		"--cert-file=" + p.EtcdServer.Cert,
		"--key-file=" + p.EtcdServer.Key,
		"--client-cert-auth=true",
		"--trusted-ca-file=" + p.EtcdCA.Cert,
		"--peer-cert-file=" + p.EtcdPeer.Cert,
		"--peer-key-file=" + p.EtcdPeer.Key,
		"--peer-client-cert-auth=true",
		"--peer-trusted-ca-file=" + p.EtcdCA.Cert,
		// 3.6's default, explicit: the raft log kept in memory between
		// snapshots; 3.5's 100000 cost hundreds of MB.
		"--snapshot-count=10000",
		"--quota-backend-bytes=" + strconv.FormatInt(o.EtcdQuotaBackendBytes, 10),
		// No --unsafe-no-fsync: it would cut write latency where fsync is
		// slow (a VM disk image, a busy laptop), but a crash could corrupt
		// the data dir, which is kept across `up`s: the cluster's state
		// would be lost.
	}, nil
}

// KubeletAddressTypes are the Node address types a client of the kubelets
// on the control plane tries, in order (kube-apiserver, metrics-server).
// In a multi-node cluster other nodes' InternalIPs are behind their hosts'
// NAT: their ExternalIP (host IP, with 10250 forwarded) is what answers.
func KubeletAddressTypes(multiNode bool) string {
	if multiNode {
		return "ExternalIP,InternalIP,Hostname"
	}
	return "InternalIP,Hostname"
}

// APIServerFlags is kube-apiserver's command line.
func APIServerFlags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	p := o.PKI
	advertise, addrTypes := o.NodeIP, KubeletAddressTypes(o.AdvertiseIP.IsValid())
	if o.AdvertiseIP.IsValid() {
		advertise = o.AdvertiseIP
	}
	return []string{
		"--advertise-address=" + advertise.String(),
		// Inside the node's netns: the node IP for the node's own
		// components and pods (via the kubernetes Service), loopback for the
		// host's forwarded port.
		"--bind-address=0.0.0.0",
		"--secure-port=" + strconv.Itoa(o.SecurePort),
		// The chain (leaf, then the CA): a joining host checks the CA's
		// pin before it trusts the server (pkg/join).
		"--tls-cert-file=" + p.APIServerChain,
		"--tls-private-key-file=" + p.APIServer.Key,
		"--client-ca-file=" + p.CA.Cert,
		// Every request carries a client certificate or a token; health
		// probes too (see APIServerReadyzPath).
		"--anonymous-auth=false",
		"--authorization-mode=Node,RBAC",
		// Added to the default plugins: a kubelet may only change its own
		// Node and the pods bound to it.
		"--enable-admission-plugins=NodeRestriction",
		// Joining hosts authenticate with a bootstrap token (a Secret in
		// kube-system) until they have their own certificate; what a
		// token may do is the RBAC in NodeBootstrapObjects.
		"--enable-bootstrap-token-auth=true",
		// Pods that need host access (CNI or storage daemonsets) are a
		// normal part of a dev cluster; the node is the user's anyway.
		"--allow-privileged=true",
		"--service-cluster-ip-range=" + o.ServiceCIDR.String(),

		"--etcd-servers=" + EtcdClientURL,
		"--etcd-cafile=" + p.EtcdCA.Cert,
		"--etcd-certfile=" + p.APIServerEtcdClient.Cert,
		"--etcd-keyfile=" + p.APIServerEtcdClient.Key,

		"--kubelet-client-certificate=" + p.APIServerKubeletClient.Cert,
		"--kubelet-client-key=" + p.APIServerKubeletClient.Key,
		// Verify the kubelet's serving cert (signed by the cluster CA by
		// pki) instead of trusting whatever answers on 10250.
		"--kubelet-certificate-authority=" + p.CA.Cert,
		// The node name does not resolve inside the node; its InternalIP
		// does (measured: kubectl exec/logs fail without this).
		"--kubelet-preferred-address-types=" + addrTypes,

		"--service-account-issuer=https://kubernetes.default.svc." + o.ClusterDomain,
		"--service-account-key-file=" + p.ServiceAccount.Public,
		"--service-account-signing-key-file=" + p.ServiceAccount.Private,

		// Aggregated APIs (metrics-server and the like): the apiserver
		// proxies to them with this identity, from its own CA.
		"--proxy-client-cert-file=" + p.FrontProxyClient.Cert,
		"--proxy-client-key-file=" + p.FrontProxyClient.Key,
		"--requestheader-client-ca-file=" + p.FrontProxyCA.Cert,
		"--requestheader-allowed-names=" + pki.FrontProxyClientCN,
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
	}, nil
}

// ControllerManagerFlags is kube-controller-manager's command line.
func ControllerManagerFlags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	p, kc := o.PKI, o.Kubeconfigs.ControllerManager
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--client-ca-file=" + p.CA.Cert,
		"--requestheader-client-ca-file=" + p.FrontProxyCA.Cert,
		"--cluster-name=" + o.ClusterName,
		// Approved CSRs (kubectl certificate approve, in-cluster signers)
		// are signed by the cluster CA.
		"--cluster-signing-cert-file=" + p.CA.Cert,
		"--cluster-signing-key-file=" + p.CA.Key,
		"--root-ca-file=" + p.CA.Cert,
		"--service-account-private-key-file=" + p.ServiceAccount.Private,
		// Each controller acts as its own service account, so RBAC shows
		// (and limits) which one did what.
		"--use-service-account-credentials=true",
		// Plus the two that are off by default: bootstrapsigner signs
		// cluster-info with each bootstrap token, tokencleaner deletes
		// expired ones.
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + o.ClusterCIDR.String(),
		"--node-cidr-mask-size=" + strconv.Itoa(o.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + o.ServiceCIDR.String(),
		// One replica: with leader election, a restart waits for the
		// previous run's lease (kept in etcd across `down`) to expire,
		// up to 15 s, before any controller starts.
		"--leader-elect=false",
	}, nil
}

// SchedulerFlags is kube-scheduler's command line.
func SchedulerFlags(o Options) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	kc := o.Kubeconfigs.Scheduler
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		// As for the controller-manager: no lease to wait for on restart.
		"--leader-elect=false",
	}, nil
}

// BootstrapObjects are the objects the supervisor must apply (with the
// admin kubeconfig) once kube-apiserver is ready. Applying them again is
// harmless.
//
// The one binding lets kube-apiserver use the kubelet's API (exec, logs,
// port-forward, metrics). Its client certificate is not in system:masters,
// so the kubelet's webhook authorization asks RBAC, and
// system:kubelet-api-admin is the built-in role for exactly this; without
// the binding `kubectl exec` and `kubectl logs` are Forbidden.
func BootstrapObjects() []rbacv1.ClusterRoleBinding {
	return []rbacv1.ClusterRoleBinding{{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "usernode:kube-apiserver-kubelet-api-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: pki.APIServerKubeletClientUser}},
	}}
}

// defaultServiceAccount is applied up front: the controller that makes it
// starts ~5 s after the controller-manager on a fresh cluster
// (--use-service-account-credentials), and pods wait for it.
var defaultServiceAccount = corev1.ServiceAccount{
	TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
	ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "default"},
}

// ControllerServiceAccounts are the kube-system ServiceAccounts
// kube-controller-manager gives its controllers
// (--use-service-account-credentials), as v1.37.2 names them. It builds
// its controllers one after another, making each one's account first, and
// starts none until all are built: on a fresh cluster that took 5.5 s
// (measured: the accounts' creation times spread over 5 s, 0.13 s each),
// against 1.5 s when they existed. The node's pod CIDR, and so its
// Ready, waited for it. Applied with the bootstrap objects, beside the
// controller-manager's start, they mostly exist by the time it asks; one
// it makes that is not here (another release) it still makes itself, and
// one here that a release does not use is an unused account.
var ControllerServiceAccounts = []string{
	"attachdetach-controller", "bootstrap-signer", "certificate-controller",
	"clusterrole-aggregation-controller", "cronjob-controller", "daemon-set-controller",
	"deployment-controller", "device-taint-eviction-controller", "disruption-controller",
	"endpoint-controller", "endpointslice-controller", "endpointslicemirroring-controller",
	"ephemeral-volume-controller", "expand-controller", "generic-garbage-collector",
	"horizontal-pod-autoscaler", "job-controller", "kube-apiserver-serving-clustertrustbundle-publisher",
	"legacy-service-account-token-cleaner", "namespace-controller", "node-controller",
	"persistent-volume-binder", "pod-garbage-collector", "podcertificaterequestcleaner",
	"pv-protection-controller", "pvc-protection-controller", "replicaset-controller",
	"replication-controller", "resource-claim-controller", "resourcequota-controller",
	"root-ca-cert-publisher", "service-account-controller", "service-cidrs-controller",
	"statefulset-controller", "storage-version-migrator-controller", "token-cleaner",
	"ttl-after-finished-controller", "ttl-controller", "validatingadmissionpolicy-status-controller",
	"volumeattributesclass-protection-controller",
}

func controllerServiceAccounts() []any {
	var out []any
	for _, n := range ControllerServiceAccounts {
		out = append(out, corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "kube-system"},
		})
	}
	return out
}

// ClusterInfo is what a joining host learns from kube-public/cluster-info:
// where the API is (as other hosts reach it) and the CA, which it trusts
// only if the CA's key matches the pin in its join command.
type ClusterInfo struct {
	Server string
	CA     []byte // PEM
	// Shared is the cluster section every node must agree on (address
	// ranges, DNS, the VXLAN port): a worker takes it when it joins.
	Shared cluster.ClusterConfig
}

// NodeBootstrapObjects are kubeadm's node-bootstrap objects, bound to
// usernode's token group (bootstraptoken.Group): a token may create a node
// client CSR (system:node-bootstrapper), which is approved automatically,
// as are a node's renewals of its own certificate; and it may read
// cluster-info and usernode's cluster section. Anonymous requests are off,
// so both are readable by the bootstrappers, not by everyone as
// cluster-info is in kubeadm.
func NodeBootstrapObjects(ci ClusterInfo) ([]any, error) {
	crb := func(name, role string, subject rbacv1.Subject) rbacv1.ClusterRoleBinding {
		return rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{subject},
		}
	}
	group := func(name string) rbacv1.Subject {
		return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: name}
	}
	info := kubeconfig.New(kubeconfig.Options{Name: "", Server: ci.Server, CAData: ci.CA})
	info.AuthInfos, info.Contexts, info.CurrentContext = nil, nil, ""
	kc, _ := kubeconfig.Render(info) // a config of plain strings always marshals
	shared, err := yaml.Marshal(ci.Shared)
	if err != nil {
		return nil, err
	}
	return []any{
		crb("usernode:kubelet-bootstrap", "system:node-bootstrapper", group(bootstraptoken.Group)),
		crb("usernode:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group(bootstraptoken.Group)),
		crb("usernode:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group("system:nodes")),
		// A worker's kube-proxy authenticates with its kubelet's rotated
		// client certificate (system:node:NAME), so nothing but the join
		// token has to reach the worker; this lets that identity read the
		// Services and EndpointSlices it programs, and nothing more.
		crb("usernode:node-proxier", "system:node-proxier", group("system:nodes")),
		// `usernode join` checks, with its token, that no node has its
		// name or address yet (kubeadm's kubeadm:get-nodes does the same
		// for the name). Node names and addresses are all it can read.
		rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: "usernode:get-nodes"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}}},
		},
		crb("usernode:get-nodes", "usernode:get-nodes", group(bootstraptoken.Group)),
		corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: bootstraptoken.ClusterInfo, Namespace: bootstraptoken.ClusterInfoNS},
			Data:       map[string]string{"kubeconfig": string(kc)},
		},
		corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: cluster.SharedConfigMap, Namespace: bootstraptoken.ClusterInfoNS},
			Data:       map[string]string{cluster.SharedKey: string(shared)},
		},
		rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{Name: "usernode:bootstrap-signer-clusterinfo", Namespace: bootstraptoken.ClusterInfoNS},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"},
				ResourceNames: []string{bootstraptoken.ClusterInfo, cluster.SharedConfigMap}, Verbs: []string{"get"}}},
		},
		rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: "usernode:bootstrap-signer-clusterinfo", Namespace: bootstraptoken.ClusterInfoNS},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "usernode:bootstrap-signer-clusterinfo"},
			Subjects:   []rbacv1.Subject{group("system:bootstrappers")},
		},
	}, nil
}

// RenderBootstrap is the default ServiceAccount, BootstrapObjects,
// NodeBootstrapObjects and the volume guard (VolumeGuardObjects of
// guard) as a multi-document YAML stream, for `kubectl apply -f -`.
func RenderBootstrap(ci ClusterInfo, guard string) ([]byte, error) {
	objs := append([]any{defaultServiceAccount}, controllerServiceAccounts()...)
	for _, b := range BootstrapObjects() {
		objs = append(objs, b)
	}
	nodeObjs, err := NodeBootstrapObjects(ci)
	if err != nil {
		return nil, err
	}
	objs = append(objs, nodeObjs...)
	objs = append(objs, VolumeGuardObjects(guard)...)
	return component.YAMLStream(objs...)
}
