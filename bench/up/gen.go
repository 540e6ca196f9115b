package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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
)

// Paths inside RootlessKit's namespaces, the same as usernode's inside its
// sandbox, so that every generated file and flag is the one usernode uses.
const (
	insideConf = "/etc/usernode"
	insidePKI  = "/var/lib/usernode/pki"
	busyboxRef = "docker.io/library/busybox:usernode"
)

// slirp4netns gives the namespace 10.0.2.100 on tap0, as usernode's
// default network does.
var nodeIP = netip.MustParseAddr("10.0.2.100")

type genOptions struct {
	Name    string // node name
	State   string // hardway.sh's HW_STATE
	BinDir  string // kubelet, kube-apiserver, ... and etcd
	APIPort int    // host port for kube-apiserver, for the host kubeconfig
	Pause   string // a static binary that acts as pause; "": busybox's sleep
}

// gen writes the hard way's config dir, STATE/conf, with usernode's
// generators (as `usernode up` does inside its sandbox, pkg/node
// Prepare), the PKI under STATE/var/lib/usernode/pki (kept if it is
// there), and a host kubeconfig at STATE/kubeconfig. Run as the node's
// user.
func gen(o genOptions) error {
	conf := filepath.Join(o.State, "conf")
	etc := filepath.Join(conf, "etc/usernode")
	for _, d := range []string{etc, filepath.Join(conf, "images")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	version, err := k8sVersion(filepath.Join(o.BinDir, "kubelet"))
	if err != nil {
		return err
	}
	// The PKI is written on the host side; the configs name it by its
	// path inside, where hardway.sh binds STATE/var/lib/usernode.
	hostPKI, err := pki.Ensure(filepath.Join(o.State, "var/lib/usernode/pki"), pki.Options{NodeName: o.Name, NodeIP: nodeIP})
	if err != nil {
		return fmt.Errorf("PKI: %w", err)
	}
	if _, err := kubeconfig.WriteComponents(etc, o.Name, "https://127.0.0.1:6443", hostPKI); err != nil {
		return err
	}
	ps := pki.Paths(insidePKI)
	kcs := kubeconfig.Paths(insideConf)

	degraded := cgroup.Host{UID: os.Getuid(), PID: "self"}.Detect().Mode != cgroup.Full
	out, err := exec.Command("containerd", "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("containerd --version: %v: %s", err, out)
	}
	cver, err := containerd.ParseVersionOutput(string(out))
	if err != nil {
		return err
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return err
	}
	ctd, err := containerd.Render(containerd.Options{Version: cver, Degraded: degraded, OCIRuntime: runc, SandboxImage: images.PauseRef})
	if err != nil {
		return err
	}
	files := map[string][]byte{"containerd.toml": ctd}
	if _, err := cni.Install(filepath.Join(conf, "etc/cni/net.d"), cni.Options{}); err != nil {
		return err
	}

	klo := kubelet.Options{Version: version, NodeName: o.Name, NodeIP: nodeIP, Degraded: degraded}
	if files["kubelet.yaml"], err = kubelet.Render(klo); err != nil {
		return err
	}
	klFlags, err := kubelet.Flags(klo)
	if err != nil {
		return err
	}
	kpo := kubeproxy.Options{Version: version, NodeName: o.Name, NodeIP: nodeIP}
	if files["kube-proxy.yaml"], err = kubeproxy.Render(kpo); err != nil {
		return err
	}
	kpFlags, err := kubeproxy.Flags(kpo)
	if err != nil {
		return err
	}
	cpo := controlplane.Options{Version: version, NodeName: o.Name, NodeIP: nodeIP, PKI: ps, Kubeconfigs: &kcs}
	flags := map[string][]string{"kubelet": klFlags, "kube-proxy": kpFlags}
	for name, f := range map[string]func(controlplane.Options) ([]string, error){
		"etcd":                    controlplane.EtcdFlags,
		"kube-apiserver":          controlplane.APIServerFlags,
		"kube-controller-manager": controlplane.ControllerManagerFlags,
		"kube-scheduler":          controlplane.SchedulerFlags,
	} {
		if flags[name], err = f(cpo); err != nil {
			return err
		}
	}
	for name, fl := range flags {
		for _, f := range fl {
			if strings.Contains(f, "\n") {
				return fmt.Errorf("%s: flag %q has a newline", name, f)
			}
		}
		files[name+".args"] = []byte(strings.Join(fl, "\n") + "\n")
	}
	if files["bootstrap.yaml"], err = controlplane.RenderBootstrap(); err != nil {
		return err
	}
	// CoreDNS, as usernode runs it (pkg/node/coredns.Steps): its Corefile
	// and the objects to apply once kube-apiserver is ready.
	dns := coredns.Options{NodeName: o.Name, NodeIP: nodeIP}
	if files[coredns.CorefileName], err = coredns.Corefile(dns); err != nil {
		return err
	}
	if files[coredns.ObjectsName], err = coredns.RenderObjects(dns); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(etc, name), b, 0o600); err != nil {
			return err
		}
	}

	for _, mk := range []func() (images.Image, error){
		func() (images.Image, error) { return images.Pause(o.Pause) },
		func() (images.Image, error) { return images.Busybox(busyboxRef) },
	} {
		img, err := mk()
		if err != nil {
			return err
		}
		name := strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref) + ".tar"
		f, err := os.Create(filepath.Join(conf, "images", name))
		if err != nil {
			return err
		}
		err = images.WriteArchive(f, img)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}

	host, err := kubeconfig.FromPKI(kubeconfig.ContextName(o.Name), fmt.Sprintf("https://127.0.0.1:%d", o.APIPort), hostPKI, hostPKI.Admin)
	if err != nil {
		return err
	}
	return kubeconfig.Write(filepath.Join(o.State, "kubeconfig"), host)
}

// k8sVersion is the vX.Y.Z that `kubelet --version` prints.
func k8sVersion(kubeletBin string) (string, error) {
	out, err := exec.Command(kubeletBin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", kubeletBin, err, out)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "v1.") {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s --version: no version in %q", kubeletBin, out)
}
