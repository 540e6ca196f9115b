// Package pki keeps the node's certificates and keys under one directory
// (/var/lib/usernode/pki inside the node): three CAs, the leaves each
// component needs, and the service-account signing key.
//
// Ensure is run at every `usernode up`. The directory outlives `down`, so
// Ensure keeps whatever is still right (same CA, same serials: kubeconfigs
// the user merged into ~/.kube/config keep working) and rewrites only what
// is missing, broken, about to expire, or no longer matches the options
// (a new node IP changes the serving certs' SANs and nothing else).
//
// Only crypto/x509 from the standard library: the whole job is a dozen
// templates, and cfssl or client-go's certutil would add dependencies for
// less control over what is kept across runs.
//
// Layout, named as kubeadm names it so that anyone who knows kubeadm finds
// their way:
//
//	ca.{crt,key}                       cluster CA: API clients, kubelet serving
//	apiserver.{crt,key}                kube-apiserver serving
//	apiserver-kubelet-client.{crt,key} kube-apiserver -> kubelet
//	apiserver-etcd-client.{crt,key}    kube-apiserver -> etcd (etcd CA)
//	kubelet.{crt,key}                  kubelet serving (port 10250)
//	kubelet-client.{crt,key}           kubelet -> kube-apiserver
//	admin, controller-manager, scheduler, kube-proxy .{crt,key}
//	coredns.{crt,key}                  CoreDNS -> kube-apiserver (not kubeadm's:
//	                                   kubeadm runs CoreDNS as a pod)
//	front-proxy-ca.{crt,key}, front-proxy-client.{crt,key}
//	etcd/ca.{crt,key}, etcd/server.{crt,key}, etcd/peer.{crt,key}
//	sa.key, sa.pub                     service-account token signing
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/atomicfile"
)

// DefaultDir is where the node keeps its PKI, as the node sees it: under
// /var/lib, so it is kept across `up`s.
const DefaultDir = "/var/lib/usernode/pki"

const (
	// CAValidity is long because regenerating the CA invalidates every
	// kubeconfig the user has copied out of the node.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity follows kubeadm. Ensure runs at every `up` and renews a
	// leaf once less than RenewBefore is left, so a node that is restarted
	// now and then never sees an expired certificate.
	LeafValidity = 365 * 24 * time.Hour
	// RenewBefore is how much validity a leaf must have left for Ensure
	// to keep it.
	RenewBefore = 90 * 24 * time.Hour

	// Clock skew allowance: a cert made just now must already be valid for
	// a component whose clock is a little behind.
	backdate = 5 * time.Minute
)

// Identities the control plane's RBAC needs to know about.
const (
	// APIServerKubeletClientUser is the user kube-apiserver presents to the
	// kubelet (exec, logs, port-forward). It is deliberately not in
	// system:masters: the kubelet asks kube-apiserver (webhook authz)
	// whether this user may use the kubelet API, and a ClusterRoleBinding to
	// system:kubelet-api-admin says yes (see controlplane.BootstrapObjects).
	APIServerKubeletClientUser = "kube-apiserver-kubelet-client"
	// FrontProxyClientCN is the only CN kube-apiserver accepts identity
	// headers from (--requestheader-allowed-names).
	FrontProxyClientCN = "front-proxy-client"
	// CoreDNSUser is CoreDNS's identity: it runs as a process of the node,
	// not as a pod with the kube-system/coredns service account kubeadm
	// uses, so it gets a client certificate and a ClusterRoleBinding of
	// this user to kubeadm's system:coredns ClusterRole (see
	// coredns.Objects).
	CoreDNSUser = "system:coredns"
	// MetricsServerUser is metrics-server's identity, to kube-apiserver
	// and to every kubelet it scrapes: like CoreDNS it is a process of
	// the node, with no service account to run as (see
	// metricsserver.Objects for its RBAC).
	MetricsServerUser = "system:metrics-server"
	// MetricsServerService and MetricsServerNamespace are the Service
	// kube-apiserver reaches metrics-server through: the aggregator checks
	// the serving certificate against <service>.<namespace>.svc.
	MetricsServerService   = "metrics-server"
	MetricsServerNamespace = "kube-system"
)

// Options says what the certificates must name.
type Options struct {
	// NodeName is the Kubernetes node name (required). It is the kubelet's
	// identity (system:node:NodeName) and a SAN of the serving certs.
	NodeName string
	// NodeIP is the address of the node's interface in its network
	// namespace (slirp4netns tap0 or pasta eth0). Required.
	NodeIP netip.Addr
	// ServiceCIDR's first address is the `kubernetes` service's ClusterIP,
	// which pods use to reach kube-apiserver. Required.
	ServiceCIDR netip.Prefix
	// ClusterDomain names kubernetes.default.svc.<domain>. Required.
	ClusterDomain string
	// ExtraAPIServerSANs are more names or IPs for kube-apiserver's serving
	// cert, e.g. the host's name if the user forwards 6443 elsewhere.
	ExtraAPIServerSANs []string
	// ExtraKubeletIPs are more addresses the kubelet's serving cert names:
	// a multi-node cluster's kube-apiserver dials the node's ExternalIP
	// (its host IP).
	ExtraKubeletIPs []netip.Addr
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Pair is the paths of a certificate and its key.
type Pair struct {
	Cert string
	Key  string
}

// Load reads both files, PEM encoded, as kubeconfigs embed them.
func (p Pair) Load() (cert, key []byte, err error) {
	if cert, err = os.ReadFile(p.Cert); err != nil {
		return nil, nil, err
	}
	if key, err = os.ReadFile(p.Key); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// KeyPair is the service-account signing key: kube-apiserver and
// kube-controller-manager sign with Private, kube-apiserver verifies with
// Public. ECDSA P-256: kube-apiserver signs ES256 tokens with it
// (--service-account-signing-key-file accepts RSA or ECDSA) and publishes
// it in the OIDC JWKS.
type KeyPair struct {
	Private string
	Public  string
}

// PKI is where everything is. All paths are absolute under Dir.
type PKI struct {
	Dir string

	CA           Pair
	EtcdCA       Pair
	FrontProxyCA Pair

	APIServer Pair
	// APIServerChain is apiserver.crt followed by ca.crt: what
	// kube-apiserver serves, so that a joining host can check the CA
	// against the pin in its join command before it sends anything.
	APIServerChain         string
	APIServerKubeletClient Pair
	APIServerEtcdClient    Pair
	FrontProxyClient       Pair

	Kubelet       Pair // serving, port 10250
	KubeletClient Pair // system:node:NAME

	Admin             Pair
	ControllerManager Pair
	Scheduler         Pair
	KubeProxy         Pair
	CoreDNS           Pair
	// MetricsServer is metrics-server's serving certificate (for
	// kube-apiserver's aggregator, which checks it against the cluster CA
	// in the APIService's caBundle); MetricsServerClient its identity
	// toward kube-apiserver and the kubelets. Made on every control plane,
	// used only with --metrics: an existing state dir gets them at its
	// next `up` like any missing leaf.
	MetricsServer       Pair
	MetricsServerClient Pair

	EtcdServer Pair
	EtcdPeer   Pair

	ServiceAccount KeyPair

	// Regenerated names what this call wrote ("ca", "apiserver", "sa", ...),
	// in the order written; empty when everything was kept. The supervisor
	// logs it; a regenerated "ca" means kubeconfigs copied out earlier are
	// stale.
	Regenerated []string
}

// Paths returns the layout under dir without touching the disk.
func Paths(dir string) *PKI {
	p := func(name string) Pair {
		return Pair{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	}
	return &PKI{
		Dir:                    dir,
		CA:                     p("ca"),
		EtcdCA:                 p("etcd/ca"),
		FrontProxyCA:           p("front-proxy-ca"),
		APIServer:              p("apiserver"),
		APIServerChain:         filepath.Join(dir, "apiserver-chain.crt"),
		APIServerKubeletClient: p("apiserver-kubelet-client"),
		APIServerEtcdClient:    p("apiserver-etcd-client"),
		FrontProxyClient:       p("front-proxy-client"),
		Kubelet:                p("kubelet"),
		KubeletClient:          p("kubelet-client"),
		Admin:                  p("admin"),
		ControllerManager:      p("controller-manager"),
		Scheduler:              p("scheduler"),
		KubeProxy:              p("kube-proxy"),
		CoreDNS:                p("coredns"),
		MetricsServer:          p("metrics-server"),
		MetricsServerClient:    p("metrics-server-client"),
		EtcdServer:             p("etcd/server"),
		EtcdPeer:               p("etcd/peer"),
		ServiceAccount: KeyPair{
			Private: filepath.Join(dir, "sa.key"),
			Public:  filepath.Join(dir, "sa.pub"),
		},
	}
}

// APIServerServiceIP is the first address of the service CIDR: the ClusterIP
// the apiserver allocates to the `kubernetes` service.
func APIServerServiceIP(serviceCIDR netip.Prefix) (netip.Addr, error) {
	if !serviceCIDR.IsValid() {
		return netip.Addr{}, fmt.Errorf("service CIDR %v is not valid", serviceCIDR)
	}
	a := serviceCIDR.Masked().Addr().Next()
	if !a.IsValid() || !serviceCIDR.Contains(a) {
		return netip.Addr{}, fmt.Errorf("service CIDR %v has no room for the kubernetes service IP", serviceCIDR)
	}
	return a, nil
}

func (o *Options) defaults() error {
	if o.NodeName == "" {
		return errors.New("pki: NodeName is required")
	}
	if !o.NodeIP.IsValid() || !o.ServiceCIDR.IsValid() || o.ClusterDomain == "" {
		return errors.New("pki: NodeIP, ServiceCIDR and ClusterDomain are required (the cluster model has them)")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// spec is what one certificate must be.
type spec struct {
	name   string
	pair   Pair
	ca     *authority // nil for a CA itself
	cn     string
	orgs   []string
	usages []x509.ExtKeyUsage
	dns    []string
	ips    []net.IP
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var (
	serverUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	// etcd presents its serving cert as a client cert when its own
	// grpc-gateway dials the gRPC port with client-cert-auth on, and peers
	// use one cert both ways: kubeadm gives both usages for the same reason.
	bothUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// Ensure makes dir hold a complete, consistent PKI for o, creating what is
// missing and keeping what is still right. See the package comment.
func Ensure(dir string, o Options) (*PKI, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	svcIP, err := APIServerServiceIP(o.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		// MkdirAll leaves an existing dir's mode alone (and applies umask).
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, err
		}
	}

	p := Paths(dir)
	e := ensurer{now: o.Now(), p: p}

	// A CA regenerated in this call forces its leaves to be re-signed:
	// their signature no longer verifies, which leafOK notices by itself.
	ca := e.ca("ca", p.CA, "usernode-ca")
	etcdCA := e.ca("etcd/ca", p.EtcdCA, "usernode-etcd-ca")
	fpCA := e.ca("front-proxy-ca", p.FrontProxyCA, "usernode-front-proxy-ca")
	if e.err != nil {
		return nil, e.err
	}

	nodeIP := net.IP(o.NodeIP.AsSlice())

	loopback := net.IPv4(127, 0, 0, 1).To4()
	kubeletIPs := []net.IP{loopback, nodeIP}
	for _, ip := range o.ExtraKubeletIPs {
		kubeletIPs = append(kubeletIPs, net.IP(ip.AsSlice()))
	}

	apiDNS := []string{
		"localhost", o.NodeName,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + o.ClusterDomain,
	}
	// 127.0.0.1 is how the host reaches it (through the port forwarder),
	// NodeIP how the node's own components and hostNetwork pods do, and the
	// service IP how pods do. ::1 is left out: nothing dials it (the
	// forwarder listens on 127.0.0.1 and the host kubeconfig names the IP).
	apiIPs := []net.IP{loopback, nodeIP, net.IP(svcIP.AsSlice())}
	for _, s := range o.ExtraAPIServerSANs {
		if ip, err := netip.ParseAddr(s); err == nil {
			apiIPs = append(apiIPs, net.IP(ip.Unmap().AsSlice()))
		} else {
			apiDNS = append(apiDNS, s)
		}
	}
	// The aggregator dials the Service and verifies this name; loopback
	// and the node IP are for the supervisor's probe and curl inside the
	// node.
	msSvc := MetricsServerService + "." + MetricsServerNamespace + ".svc"
	msDNS := []string{"localhost", msSvc, msSvc + "." + o.ClusterDomain}
	etcdDNS := []string{"localhost"}
	etcdIPs := []net.IP{loopback}

	specs := []spec{
		{name: "apiserver", pair: p.APIServer, ca: ca, cn: "kube-apiserver", usages: serverUsage, dns: apiDNS, ips: apiIPs},
		// kubeadm's CN. No system:masters: see APIServerKubeletClientUser.
		{name: "apiserver-kubelet-client", pair: p.APIServerKubeletClient, ca: ca, cn: APIServerKubeletClientUser, usages: clientUsage},
		{name: "apiserver-etcd-client", pair: p.APIServerEtcdClient, ca: etcdCA, cn: "kube-apiserver-etcd-client", usages: clientUsage},
		{name: "front-proxy-client", pair: p.FrontProxyClient, ca: fpCA, cn: FrontProxyClientCN, usages: clientUsage},
		// Signed by the cluster CA (not self-signed as a bare kubelet would
		// make it) so that kube-apiserver can verify the kubelet it execs
		// into with --kubelet-certificate-authority. It dials the node's
		// InternalIP (--kubelet-preferred-address-types), hence the IP SAN.
		{name: "kubelet", pair: p.Kubelet, ca: ca, cn: o.NodeName, usages: serverUsage, dns: []string{o.NodeName, "localhost"}, ips: kubeletIPs},
		// The Node authorizer and NodeRestriction key on exactly this name
		// and group.
		{name: "kubelet-client", pair: p.KubeletClient, ca: ca, cn: "system:node:" + o.NodeName, orgs: []string{"system:nodes"}, usages: clientUsage},
		// system:masters rather than kubeadm's kubeadm:cluster-admins:
		// kubeadm moved away from it so that one leaked admin.conf can be
		// cut off by deleting a ClusterRoleBinding. Here the only user is
		// the machine's owner, who also owns ca.key in the same 0700
		// directory (anyone able to read admin.key can mint any identity),
		// so revocation buys nothing, while a binding would have to be
		// created by some other super-user before the first kubectl works.
		{name: "admin", pair: p.Admin, ca: ca, cn: "usernode-admin", orgs: []string{"system:masters"}, usages: clientUsage},
		{name: "controller-manager", pair: p.ControllerManager, ca: ca, cn: "system:kube-controller-manager", usages: clientUsage},
		{name: "scheduler", pair: p.Scheduler, ca: ca, cn: "system:kube-scheduler", usages: clientUsage},
		{name: "kube-proxy", pair: p.KubeProxy, ca: ca, cn: "system:kube-proxy", usages: clientUsage},
		{name: "coredns", pair: p.CoreDNS, ca: ca, cn: CoreDNSUser, usages: clientUsage},
		{name: "metrics-server", pair: p.MetricsServer, ca: ca, cn: MetricsServerService, usages: serverUsage, dns: msDNS, ips: []net.IP{loopback, nodeIP}},
		{name: "metrics-server-client", pair: p.MetricsServerClient, ca: ca, cn: MetricsServerUser, usages: clientUsage},
		{name: "etcd/server", pair: p.EtcdServer, ca: etcdCA, cn: "etcd-server", usages: bothUsages, dns: etcdDNS, ips: etcdIPs},
		{name: "etcd/peer", pair: p.EtcdPeer, ca: etcdCA, cn: "etcd-peer", usages: bothUsages, dns: etcdDNS, ips: etcdIPs},
	}
	for i := range specs {
		e.leaf(&specs[i])
	}
	e.serviceAccount()
	if e.err != nil {
		return nil, e.err
	}
	// Derived, so written every time: it follows either file.
	leaf, err := os.ReadFile(p.APIServer.Cert)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(p.CA.Cert)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(p.APIServerChain, append(leaf, caPEM...), 0o644); err != nil {
		return nil, err
	}
	p.Regenerated = e.regenerated
	return p, nil
}

type ensurer struct {
	now         time.Time
	p           *PKI
	regenerated []string
	err         error
}

func (e *ensurer) fail(name string, err error) {
	if e.err == nil {
		e.err = fmt.Errorf("pki %s: %w", name, err)
	}
}

// ca loads or creates one CA. It returns nil only with e.err set.
func (e *ensurer) ca(name string, pair Pair, cn string) *authority {
	if e.err != nil {
		return nil
	}
	if cert, key, err := loadPair(pair); err == nil && e.caOK(cert, key, cn) {
		return &authority{cert: cert, key: key}
	}
	key, err := newKey()
	if err != nil {
		e.fail(name, err)
		return nil
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             e.now.Add(-backdate),
		NotAfter:              e.now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: nobody gets to run an intermediate CA off this one.
		MaxPathLenZero: true,
	}
	cert, err := e.sign(tmpl, key, nil)
	if err != nil {
		e.fail(name, err)
		return nil
	}
	if err := writePair(pair, cert, key); err != nil {
		e.fail(name, err)
		return nil
	}
	e.regenerated = append(e.regenerated, name)
	return &authority{cert: cert, key: key}
}

func (e *ensurer) caOK(cert *x509.Certificate, key crypto.Signer, cn string) bool {
	return cert.IsCA && cert.BasicConstraintsValid &&
		cert.KeyUsage&x509.KeyUsageCertSign != 0 &&
		cert.Subject.CommonName == cn &&
		e.timeOK(cert) && keyMatches(cert, key) &&
		cert.CheckSignatureFrom(cert) == nil
}

func (e *ensurer) timeOK(cert *x509.Certificate) bool {
	return !e.now.Before(cert.NotBefore) && cert.NotAfter.Sub(e.now) > RenewBefore
}

func (e *ensurer) leaf(s *spec) {
	if e.err != nil {
		return
	}
	if cert, key, err := loadPair(s.pair); err == nil && e.leafOK(s, cert, key) {
		return
	}
	key, err := newKey()
	if err != nil {
		e.fail(s.name, err)
		return
	}
	notAfter := e.now.Add(LeafValidity)
	// Never outlive the issuer: verification would fail past its end anyway.
	if notAfter.After(s.ca.cert.NotAfter) {
		notAfter = s.ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:             e.now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           s.usages,
		BasicConstraintsValid: true,
		DNSNames:              s.dns,
		IPAddresses:           s.ips,
	}
	cert, err := e.sign(tmpl, key, s.ca)
	if err != nil {
		e.fail(s.name, err)
		return
	}
	if err := writePair(s.pair, cert, key); err != nil {
		e.fail(s.name, err)
		return
	}
	e.regenerated = append(e.regenerated, s.name)
}

// leafOK is true when the stored leaf is exactly what s asks for, signed by
// the current CA and not about to expire.
func (e *ensurer) leafOK(s *spec, cert *x509.Certificate, key crypto.Signer) bool {
	if cert.IsCA || !e.timeOK(cert) || !keyMatches(cert, key) {
		return false
	}
	if cert.CheckSignatureFrom(s.ca.cert) != nil {
		return false
	}
	if cert.Subject.CommonName != s.cn || !slices.Equal(cert.Subject.Organization, s.orgs) {
		return false
	}
	if !slices.Equal(cert.ExtKeyUsage, s.usages) {
		return false
	}
	return sameSet(cert.DNSNames, s.dns) && sameSet(ipStrings(cert.IPAddresses), ipStrings(s.ips))
}

func (e *ensurer) sign(tmpl *x509.Certificate, key crypto.Signer, ca *authority) (*x509.Certificate, error) {
	// 127 random bits: unique without keeping a serial counter on disk.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (e *ensurer) serviceAccount() {
	if e.err != nil {
		return
	}
	sa := e.p.ServiceAccount
	key, err := readKey(sa.Private)
	if err != nil {
		if key, err = newKey(); err != nil {
			e.fail("sa", err)
			return
		}
		if err := writeKey(sa.Private, key); err != nil {
			e.fail("sa", err)
			return
		}
		e.regenerated = append(e.regenerated, "sa")
	} else if err := os.Chmod(sa.Private, 0o600); err != nil {
		e.fail("sa", err)
		return
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		e.fail("sa", err)
		return
	}
	want := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if have, err := os.ReadFile(sa.Public); err == nil && bytes.Equal(have, want) {
		return
	}
	if err := atomicfile.Write(sa.Public, want, 0o644); err != nil {
		e.fail("sa", err)
		return
	}
	if !slices.Contains(e.regenerated, "sa") {
		e.regenerated = append(e.regenerated, "sa.pub")
	}
}

func newKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func loadPair(p Pair) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no CERTIFICATE block", p.Cert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p.Cert, err)
	}
	key, err := readKey(p.Key)
	if err != nil {
		return nil, nil, err
	}
	// An existing key kept as is must still be private.
	if err := os.Chmod(p.Key, 0o600); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var k any
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected PEM block %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot sign", path, k)
	}
	return s, nil
}

// writePair writes the key before the cert: a crash in between leaves a
// cert that does not match its key, which the next Ensure replaces.
func writePair(p Pair, cert *x509.Certificate, key crypto.Signer) error {
	if err := writeKey(p.Key, key); err != nil {
		return err
	}
	return atomicfile.Write(p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

func writeKey(path string, key crypto.Signer) error {
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("%s: only ECDSA keys are generated, got %T", path, key)
	}
	// SEC 1 ("EC PRIVATE KEY") as kubeadm writes them: every component and
	// openssl reads it.
	der, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// CAPEM returns the cluster CA certificate, for kubeconfigs and the
// kubelet's clientCAFile consumers that want the bytes.
func (p *PKI) CAPEM() ([]byte, error) { return os.ReadFile(p.CA.Cert) }

// String lists what was regenerated, for a log line.
func (p *PKI) String() string {
	if len(p.Regenerated) == 0 {
		return "pki " + p.Dir + ": kept"
	}
	return "pki " + p.Dir + ": wrote " + strings.Join(p.Regenerated, ", ")
}
