package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/images"
	"github.com/usernode/usernode/pkg/node/cni"
	"github.com/usernode/usernode/pkg/node/containerd"
	"github.com/usernode/usernode/pkg/node/controlplane"
	"github.com/usernode/usernode/pkg/node/coredns"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/kubeproxy"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/sandbox"
	"github.com/usernode/usernode/pkg/supervise"
)

// Paths inside the node. /var/lib persists across runs; /etc and /run are
// made afresh by each `up`.
const (
	Entry          = "usernode-node"
	DataDir        = "/var/lib/usernode"
	PKIDir         = DataDir + "/pki"
	ImageDir       = DataDir + "/images"
	ConfigDir      = "/etc/usernode"
	LogDir         = "/var/log/usernode"
	SpecFile       = sandbox.RuntimeDirInside + "/node.json"
	StatusFile     = sandbox.RuntimeDirInside + "/status.json"
	containerdSock = "/run/containerd/containerd.sock"
	APIServer      = "https://127.0.0.1:6443"
)

// Spec is what the host side hands the node side.
type Spec struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	Binaries Binaries `json:"binaries"`
}

func init() { reexec.Register(Entry, insideMain) }

func insideMain() {
	// The host writes the spec once the sandbox is up, which is after this
	// process started.
	var b []byte
	var err error
	for i := 0; i < 300; i++ {
		if b, err = os.ReadFile(SpecFile); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var spec Spec
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "usernode-node: reading the node spec:", err)
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	plan, err := Prepare(spec)
	if err != nil {
		writeFailed(err)
		fmt.Fprintln(os.Stderr, "usernode:", err)
		os.Exit(1)
	}
	// Certificates and image archives were made in memory; this process
	// now only supervises for as long as the node runs.
	debug.FreeOSMemory()
	if err := supervise.New(*plan, os.Stderr).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "usernode:", err)
		os.Exit(1)
	}
}

func writeFailed(err error) {
	b, _ := json.Marshal(supervise.Status{Phase: "failed", Error: err.Error()})
	os.WriteFile(StatusFile, b, 0o600)
}

// nodeIP is the address of the node's interface, whichever driver made it.
func nodeIP() (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				ip, _ := netip.AddrFromSlice(n.IP.To4())
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("the node has no non-loopback IPv4 address: start it with a network driver (--net slirp4netns)")
}

// Prepare writes the PKI, the configs and the images inside the node, and
// returns the plan that starts it.
func Prepare(spec Spec) (*supervise.Plan, error) {
	ip, err := nodeIP()
	if err != nil {
		return nil, err
	}
	degraded := cgroup.Host{UID: 0, PID: "self"}.Detect().Mode != cgroup.Full
	bin := spec.Binaries
	for _, d := range []string{ConfigDir, ImageDir, LogDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ps, err := pki.Ensure(PKIDir, pki.Options{NodeName: spec.Name, NodeIP: ip})
	if err != nil {
		return nil, fmt.Errorf("PKI: %w", err)
	}
	kcs, err := kubeconfig.WriteComponents(ConfigDir, spec.Name, APIServer, ps)
	if err != nil {
		return nil, fmt.Errorf("kubeconfigs: %w", err)
	}

	out, err := runOut(bin.Containerd, "--version")
	if err != nil {
		return nil, err
	}
	cver, err := containerd.ParseVersionOutput(out)
	if err != nil {
		return nil, err
	}
	ctdCfg, err := containerd.Render(containerd.Options{Version: cver, Degraded: degraded, OCIRuntime: bin.OCIRuntime, CNIBinDir: bin.CNIDir, SandboxImage: images.PauseRef})
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	ctdPath := filepath.Join(ConfigDir, "containerd.toml")
	if err := os.WriteFile(ctdPath, ctdCfg, 0o600); err != nil {
		return nil, err
	}
	if _, err := cni.Install("/etc/cni/net.d", cni.Options{}); err != nil {
		return nil, fmt.Errorf("CNI config: %w", err)
	}

	klo := kubelet.Options{Version: spec.Version, NodeName: spec.Name, NodeIP: ip, Degraded: degraded}
	klCfg, err := kubelet.Render(klo)
	if err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	klFlags, _ := kubelet.Flags(klo)
	if err := os.WriteFile(kubelet.DefaultConfigPath, klCfg, 0o600); err != nil {
		return nil, err
	}
	kpo := kubeproxy.Options{Version: spec.Version, NodeName: spec.Name, NodeIP: ip}
	kpCfg, err := kubeproxy.Render(kpo)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy config: %w", err)
	}
	kpFlags, _ := kubeproxy.Flags(kpo)
	if err := os.WriteFile(kubeproxy.DefaultConfigPath, kpCfg, 0o600); err != nil {
		return nil, err
	}
	cpo := controlplane.Options{Version: spec.Version, NodeName: spec.Name, NodeIP: ip, PKI: ps, Kubeconfigs: &kcs}
	etcdFlags, err := controlplane.EtcdFlags(cpo)
	if err != nil {
		return nil, err
	}
	apiFlags, err := controlplane.APIServerFlags(cpo)
	if err != nil {
		return nil, err
	}
	cmFlags, _ := controlplane.ControllerManagerFlags(cpo)
	schedFlags, _ := controlplane.SchedulerFlags(cpo)
	bootstrap, err := controlplane.RenderBootstrap()
	if err != nil {
		return nil, err
	}
	// The default ServiceAccount up front: the controller that makes it
	// starts ~5 s after the controller-manager on a fresh cluster
	// (--use-service-account-credentials), and pods wait for it.
	bootstrap = append(bootstrap, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: default\n"...)
	bootPath := filepath.Join(ConfigDir, "bootstrap.yaml")
	if err := os.WriteFile(bootPath, bootstrap, 0o600); err != nil {
		return nil, err
	}
	dnsSteps, err := coredns.Steps(coredns.Options{NodeName: spec.Name, NodeIP: ip, Kubeconfig: kcs.CoreDNS,
		Binary: bin.Coredns, Kubectl: bin.Kubectl, AdminKubeconfig: kcs.Admin, Dir: ConfigDir})
	if err != nil {
		return nil, fmt.Errorf("CoreDNS: %w", err)
	}

	// The images every node needs, made here: no registry is reachable.
	// /proc/self/exe, not the binary's path: that may be under /tmp, which
	// the node cannot see.
	self := "/proc/self/exe"
	var imports [][]string
	for _, mk := range []func() (images.Image, error){
		func() (images.Image, error) { return images.Pause(self) },
		func() (images.Image, error) { return images.Busybox(BusyboxRef) },
	} {
		img, err := mk()
		if err != nil {
			return nil, err
		}
		name := strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref) + ".tar"
		path := filepath.Join(ImageDir, name)
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		err = images.WriteArchive(f, img)
		f.Close()
		if err != nil {
			return nil, err
		}
		imports = append(imports, []string{bin.Ctr, "--address", containerdSock, "--namespace", "k8s.io", "images", "import", path})
	}

	etcdProbe := &supervise.Probe{URL: "https://127.0.0.1:2379/health", CA: ps.EtcdCA.Cert, Cert: ps.APIServerEtcdClient.Cert, Key: ps.APIServerEtcdClient.Key}
	steps := []supervise.Step{
		{Name: "containerd", Argv: []string{bin.Containerd, "--config", ctdPath}, Ready: &supervise.Probe{Unix: containerdSock}},
	}
	for i, imp := range imports {
		steps = append(steps, supervise.Step{Name: fmt.Sprintf("image-import-%d", i), Oneshot: true, Argv: imp})
	}
	steps = append(steps,
		supervise.Step{Name: "etcd", Argv: append([]string{bin.Etcd}, etcdFlags...), Ready: etcdProbe},
		supervise.Step{Name: "kube-apiserver", Argv: append([]string{bin.APIServer}, apiFlags...),
			Ready: &supervise.Probe{URL: APIServer + "/readyz", CA: ps.CA.Cert, Cert: ps.Admin.Cert, Key: ps.Admin.Key}},
		supervise.Step{Name: "bootstrap-rbac", Oneshot: true, Argv: []string{bin.Kubectl, "--kubeconfig", kcs.Admin, "apply", "--server-side", "-f", bootPath}},
	)
	// Cluster DNS needs only the API; its Service exists before kube-proxy's
	// first sync.
	steps = append(steps, dnsSteps...)
	steps = append(steps,
		supervise.Step{Name: "kube-controller-manager", Argv: append([]string{bin.ControllerManager}, cmFlags...),
			Ready: &supervise.Probe{URL: "https://127.0.0.1:10257/healthz", Insecure: true}},
		supervise.Step{Name: "kube-scheduler", Argv: append([]string{bin.Scheduler}, schedFlags...),
			Ready: &supervise.Probe{URL: "https://127.0.0.1:10259/healthz", Insecure: true}},
		supervise.Step{Name: "kubelet", Argv: append([]string{bin.Kubelet}, klFlags...),
			Ready: &supervise.Probe{URL: "http://127.0.0.1:10248/healthz"}},
		supervise.Step{Name: "kube-proxy", Argv: append([]string{bin.KubeProxy}, kpFlags...),
			Ready: &supervise.Probe{URL: "http://127.0.0.1:10256/healthz"}},
	)
	return &supervise.Plan{LogDir: LogDir, StatusFile: StatusFile, Steps: steps}, nil
}

// BusyboxRef is the small userland image every node has, for tests and
// debugging without a registry.
const BusyboxRef = "docker.io/library/busybox:usernode"

func runOut(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := execCommand(ctx, bin, args...)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
	}
	return out, nil
}
