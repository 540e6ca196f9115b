// Package kubelet renders the kubelet's configuration file
// (/etc/usernode/kubelet.yaml, regenerated at each `up`) and the
// command-line flags that have no config-file field.
//
// The settings come from the Kubernetes task page "Running Kubernetes Node
// Components as a Non-root User" and from what was measured on a node
// without delegated cgroups ("degraded mode"); each is explained where it
// is set.
package kubelet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	logsapi "k8s.io/component-base/logs/api/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/internal/k8sversion"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

// Defaults for Options; they match the layout inside the node's mount
// namespace.
const (
	DefaultVersion    = k8sversion.Default
	DefaultConfigPath = "/etc/usernode/kubelet.yaml"
	DefaultRootDir    = "/var/lib/kubelet"
	DefaultResolvConf = "/etc/resolv.conf"

	MinVersion = k8sversion.Min
	// UserNamespaceGateDefaultOn is the first release where
	// KubeletInUserNamespace is beta and on by default.
	UserNamespaceGateDefaultOn = "1.37.0"
	// failCgroupV1Since is the first release that knows failCgroupV1.
	failCgroupV1Since = "1.31.0"
)

// ClientCertCurrent is where a bootstrapped kubelet keeps its current
// client certificate and key (one PEM file) under the default cert dir:
// the worker's other components authenticate with it too.
const ClientCertCurrent = DefaultRootDir + "/pki/kubelet-client-current.pem"

// DefaultPKI and DefaultKubeconfig are the per-run layout the node uses.
var (
	DefaultPKI        = pki.Paths(pki.DefaultDir)
	DefaultKubeconfig = kubeconfig.Paths(kubeconfig.DefaultDir).Kubelet
)

// EvictionHard is the hard eviction thresholds. They replace the kubelet's
// defaults (10% disk, 15% image disk, 5% inodes), which a developer's
// machine routinely crosses: the node would be tainted DiskPressure at
// start and every pod would stay Pending with no hint why. 1% is not 0%
// (which kind uses) because the disk is the user's own home: evicting pods
// when it is nearly full is still better than filling it to the last byte
// and breaking the user's desktop session. memory.available is the
// kubelet's own default, listed because a partial evictionHard zeroes the
// keys it leaves out.
var EvictionHard = map[string]string{
	"memory.available":   "100Mi",
	"nodefs.available":   "1%",
	"nodefs.inodesFree":  "1%",
	"imagefs.available":  "1%",
	"imagefs.inodesFree": "1%",
}

// Options says what the kubelet must be told. The topology (node name and
// IP, cluster DNS and domain, the runtime's endpoint) comes from the cluster
// model and is required; the paths default to the node's layout.
type Options struct {
	// Version is the kubelet's version, "v1.37.2" or "1.37.2".
	Version  string
	NodeName string // required
	// NodeIP is the node's address in its network namespace; the kubelet
	// reports it as the node's InternalIP, which kube-apiserver dials.
	NodeIP netip.Addr
	// Degraded is true when the node has no delegated cgroup v2 tree (hybrid
	// or v1 hosts, no systemd delegation): the kubelet cannot create
	// cgroups, so QoS cgroups and node-allocatable enforcement are off and
	// pod limits are not enforced.
	Degraded bool

	ClusterDNS    netip.Addr // required: the DNS Service's IP
	ClusterDomain string     // required

	// ClientCAFile verifies client certs on the kubelet's API (the
	// apiserver's); TLSCertFile/TLSPrivateKeyFile are its serving pair.
	// Defaults: the cluster CA and kubelet.{crt,key} under DefaultPKI.
	ClientCAFile      string
	TLSCertFile       string
	TLSPrivateKeyFile string

	// BootstrapKubeconfig, when set, makes the kubelet get its identity
	// by TLS bootstrap (a worker): it asks for a client certificate with
	// the bootstrap token in that file, writes KubeconfigPath itself, and
	// asks the cluster for its serving certificate too (approved by the
	// control plane's usernode), rotating both. TLSCertFile is then unused.
	BootstrapKubeconfig string
	// CertDir is where a bootstrapping kubelet keeps its certificates.
	// Default RootDir/pki.
	CertDir string
	// ExternalCloudProvider is for a node of a multi-node cluster: the
	// kubelet leaves the node's addresses to usernode on the control plane,
	// which adds the host IP as ExternalIP (the only address other hosts
	// reach a node at) and then lifts the uninitialized taint.
	ExternalCloudProvider bool

	KubeconfigPath           string // default DefaultKubeconfig
	ConfigPath               string // where Render's output is written; default DefaultConfigPath
	RootDir                  string // default /var/lib/kubelet
	ContainerRuntimeEndpoint string // required: the CRI runtime's socket
	ResolvConf               string // default /etc/resolv.conf

	// LocalStorageCapacityIsolation defaults to true. It is also what
	// makes the kubelet's cAdvisor collect filesystem usage at all
	// (DiskUsageMetrics): off, /stats/summary fails with "failed to get
	// rootFs stats: cannot find filesystem info for device /dev/vda", so
	// the eviction manager, metrics-server and `kubectl top` have nothing
	// (issue 14; kind #3359). Rootless kind and Usernetes turn it off
	// because cAdvisor could not find the device under /var/lib/kubelet
	// inside a user namespace; in usernode's sandbox it can (the node sees
	// the host's /dev and mountinfo names the device): measured on kernel
	// 6.18, ext4, degraded mode, the kubelet starts, /stats/summary gives
	// rootfs, imagefs and per-pod ephemeral storage, and ephemeral-storage
	// limits and emptyDir sizeLimit work.
	LocalStorageCapacityIsolation *bool

	// FeatureGates are added to (and override) the ones set here.
	FeatureGates map[string]bool

	// OOMScoreAdj, when set, is the oom_score_adj the kubelet gives
	// itself: the one it inherits (InheritedOOMScoreAdj). Its default,
	// -999, is lower than a process outside the initial user namespace
	// may set, so the kubelet logged "failed to apply oom score -999 ...
	// permission denied" at its start and every 5 minutes after, in both
	// modes (seen in the fault suite's and the VM's kubelet logs).
	OOMScoreAdj *int32
}

// InheritedOOMScoreAdj is the oom_score_adj of this process, which the
// kubelet it starts inherits; nil if it cannot be read.
func InheritedOOMScoreAdj(readFile func(string) ([]byte, error)) *int32 {
	b, err := readFile("/proc/self/oom_score_adj")
	if err != nil {
		return nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || v < -1000 || v > 1000 {
		return nil
	}
	i := int32(v)
	return &i
}

func (o *Options) defaults() (*version.Version, error) {
	v, err := ParseVersion(o.Version)
	if err != nil {
		return nil, err
	}
	if o.NodeName == "" {
		return nil, errors.New("kubelet: NodeName is required")
	}
	if !o.NodeIP.IsValid() || !o.ClusterDNS.IsValid() || o.ClusterDomain == "" || o.ContainerRuntimeEndpoint == "" {
		return nil, errors.New("kubelet: NodeIP, ClusterDNS, ClusterDomain and ContainerRuntimeEndpoint are required (the cluster model has them)")
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.ClientCAFile, DefaultPKI.CA.Cert)
	def(&o.TLSCertFile, DefaultPKI.Kubelet.Cert)
	def(&o.TLSPrivateKeyFile, DefaultPKI.Kubelet.Key)
	def(&o.KubeconfigPath, DefaultKubeconfig)
	def(&o.ConfigPath, DefaultConfigPath)
	def(&o.RootDir, DefaultRootDir)
	def(&o.ResolvConf, DefaultResolvConf)
	def(&o.CertDir, o.RootDir+"/pki")
	return v, nil
}

// ParseVersion parses a Kubernetes version ("v1.37.2", "1.37.2",
// "v1.37.2-rc.0") and rejects releases older than MinVersion. An empty
// string is DefaultVersion.
func ParseVersion(s string) (*version.Version, error) { return k8sversion.Parse(s) }

// Config is the kubelet's configuration for o.
func Config(o Options) (*kubeletv1beta1.KubeletConfiguration, error) {
	v, err := o.defaults()
	if err != nil {
		return nil, err
	}
	yes, no := true, false
	i32 := func(i int32) *int32 { return &i }

	c := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: kubeletv1beta1.SchemeGroupVersion.String(), Kind: "KubeletConfiguration"},

		// Only kube-apiserver (and the user through it) talks to the kubelet:
		// no anonymous requests, client certs from the cluster CA, and every
		// request authorized by asking kube-apiserver (SubjectAccessReview).
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: &no},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: &yes},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: o.ClientCAFile},
		},
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		// The unauthenticated read-only API stays off (it is the v1beta1
		// default; explicit here so no older default can slip in).
		ReadOnlyPort: 0,
		// The CA-signed serving pair from pki, so kube-apiserver can verify
		// the kubelet (--kubelet-certificate-authority) for exec and logs.
		TLSCertFile:       o.TLSCertFile,
		TLSPrivateKeyFile: o.TLSPrivateKeyFile,

		// The task page: cgroupfs, because no systemd manages the node's
		// cgroups from inside its namespaces.
		CgroupDriver:             "cgroupfs",
		ContainerRuntimeEndpoint: o.ContainerRuntimeEndpoint,

		ClusterDNS:    []string{o.ClusterDNS.String()},
		ClusterDomain: o.ClusterDomain,
		// The node's own copy (the sandbox rewrites it when the host's points
		// at a loopback resolver that pods could not reach).
		ResolverConfig: &o.ResolvConf,

		// No static pods: the control plane runs as plain processes under
		// the supervisor, which starts faster and survives a kubelet crash.
		StaticPodPath: "",

		// The bridge CNI plugin sets hairpin mode on each pod's veth
		// (hairpinMode in the conflist), so a pod can reach itself through
		// its own Service. This value names that mode; with a CRI runtime
		// the kubelet does not touch the interfaces itself.
		HairpinMode: kubeletv1beta1.HairpinVeth,

		// Swap is common on developer machines; a kubelet that refuses to
		// start over it helps no one here.
		FailSwapOn: &no,

		// Image GC off (100 disables it), as kind does. There is often no
		// registry to pull from again: images are built and imported
		// locally, and containerd 1.6 does not pin the sandbox (pause)
		// image, so a collected pause image would stop every new pod.
		ImageGCHighThresholdPercent: i32(100),
		ImageGCLowThresholdPercent:  i32(80),
		// The thresholds stop the periodic GC only: under disk pressure
		// the eviction manager deletes every unused image regardless of
		// them. make test-faults' full disk saw it delete the pause image
		// once the pods were evicted, and no pod could start again after
		// the space was freed (containerd 1.6 tried to pull it from
		// registry.k8s.io). An image younger than this minimum age is
		// never deleted (the age counts from the kubelet's start), so a
		// full disk evicts pods but keeps the images.
		ImageMinimumGCAge: metav1.Duration{Duration: 365 * 24 * time.Hour},
		EvictionHard:      clone(EvictionHard),
		// The kubelet holds a pressure condition for this long after the
		// signal clears (default 5 min, against flapping between nodes that
		// a scheduler balances). A user who frees disk space on a
		// one-host node expects its pods back soon after, not in 5 min
		// (measured in make test-faults' full-disk case).
		EvictionPressureTransitionPeriod: metav1.Duration{Duration: 30 * time.Second},
		// How often the kubelet measures each pod's volumes, emptyDirs
		// included (default 1 min, and a new pod is first measured at
		// the next tick after it starts). The eviction manager ranks pods
		// by what was last measured: a pod that filled its emptyDir
		// within that minute counted as empty, and under disk pressure
		// the kubelet evicted the node's other pods before it (measured:
		// both pods of a Deployment, then the one filling the disk). The
		// walks cost nothing measurable: with 20 pods of a 20 MB emptyDir
		// each, the kubelet's CPU over 2 idle minutes was 201 and 203
		// ticks at 10 s against 218 and 208 at 1 min (alternated).
		VolumeStatsAggPeriod: metav1.Duration{Duration: 10 * time.Second},

		LocalStorageCapacityIsolation: o.LocalStorageCapacityIsolation,
	}
	if c.LocalStorageCapacityIsolation == nil {
		yes := true
		c.LocalStorageCapacityIsolation = &yes
	}

	gates := map[string]bool{}
	// Before 1.37 the gate is alpha and off: without it the kubelet fails
	// on sysctls it may not set in a user namespace and on /dev/kmsg
	// (measured on 1.34: "open /dev/kmsg: operation not permitted"). From
	// 1.37 it is beta and on by default, so it is left out.
	if v.LessThan(version.MustParseGeneric(UserNamespaceGateDefaultOn)) {
		gates["KubeletInUserNamespace"] = true
	}
	for k, b := range o.FeatureGates {
		gates[k] = b
	}
	if len(gates) > 0 {
		c.FeatureGates = gates
	}

	if o.BootstrapKubeconfig != "" {
		// No pair on disk: the serving certificate comes from a CSR the
		// control plane approves, for the addresses the Node reports,
		// and both certificates are renewed before they expire.
		c.TLSCertFile, c.TLSPrivateKeyFile = "", ""
		c.ServerTLSBootstrap = true
		c.RotateCertificates = true
	}

	if o.Degraded {
		// No writable cgroup: with the defaults the kubelet fails
		// "mkdir /sys/fs/cgroup/kubepods: permission denied". Node
		// allocatable enforcement must be empty (not omitted, which means
		// ["pods"]) when QoS cgroups are off, or validation fails.
		c.CgroupsPerQOS = &no
		c.EnforceNodeAllocatable = []string{}
		// A hybrid host shows the kubelet a cgroup v1 view, which it refuses
		// by default since 1.35 (the field exists since 1.31).
		if !v.LessThan(version.MustParseGeneric(failCgroupV1Since)) {
			c.FailCgroupV1 = &no
		}
	} else {
		c.CgroupsPerQOS = &yes
	}
	if o.OOMScoreAdj != nil {
		c.OOMScoreAdj = o.OOMScoreAdj
	}
	return c, nil
}

// Render is Config(o) as YAML, ready to be written to o.ConfigPath.
func Render(o Options) ([]byte, error) {
	c, err := Config(o)
	if err != nil {
		return nil, err
	}
	return Marshal(c)
}

// Marshal writes c as YAML with apiVersion and kind. An empty, non-nil
// enforceNodeAllocatable is written as [] (the Go type's omitempty would
// drop it, and the kubelet would default it to ["pods"]). Zero durations,
// an all-zero logging block and other zero values the kubelet defaults
// anyway are left out, so the file shows only what was chosen.
func Marshal(c *kubeletv1beta1.KubeletConfiguration) ([]byte, error) {
	j, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	if reflect.DeepEqual(c.Logging, logsapi.LoggingConfiguration{}) {
		delete(doc, "logging")
	}
	prune(doc)
	if c.EnforceNodeAllocatable != nil && len(c.EnforceNodeAllocatable) == 0 {
		doc["enforceNodeAllocatable"] = []any{}
	}
	j, err = json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(j)
}

// prune drops "0s" durations and the empty objects the Go types write for
// structs the kubelet defaults field by field (logging, memorySwap,
// crashLoopBackOff, webhook cache TTLs). Each dropped value is one the
// kubelet's defaulting treats exactly like an absent one. Numbers and
// booleans are kept: there false or 0 can be a choice.
func prune(m map[string]any) bool {
	for k, v := range m {
		switch x := v.(type) {
		case string:
			if x == "0s" || x == "" {
				delete(m, k)
			}
		case nil:
			delete(m, k)
		case map[string]any:
			if prune(x) {
				delete(m, k)
			}
		}
	}
	return len(m) == 0
}

// Flags are the kubelet's command-line flags that have no field in the
// config file, plus the two that point at the files.
func Flags(o Options) ([]string, error) {
	if _, err := o.defaults(); err != nil {
		return nil, err
	}
	var extra []string
	if o.BootstrapKubeconfig != "" {
		extra = append(extra, "--bootstrap-kubeconfig="+o.BootstrapKubeconfig, "--cert-dir="+o.CertDir)
	}
	if o.ExternalCloudProvider {
		extra = append(extra, "--cloud-provider=external")
	}
	return append([]string{
		"--config=" + o.ConfigPath,
		"--kubeconfig=" + o.KubeconfigPath,
		// Explicit, so that the node name does not follow the host's
		// hostname (the UTS namespace's) and matches the kubelet's cert.
		"--hostname-override=" + o.NodeName,
		// Without it the kubelet may pick another address; kube-apiserver
		// dials this one (InternalIP first) for exec, logs and port-forward.
		"--node-ip=" + o.NodeIP.String(),
		"--root-dir=" + o.RootDir,
	}, extra...), nil
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
