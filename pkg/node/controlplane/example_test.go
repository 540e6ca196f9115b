package controlplane_test

import (
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/usernode/usernode/pkg/node/cni"
	"github.com/usernode/usernode/pkg/node/containerd"
	"github.com/usernode/usernode/pkg/node/controlplane"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/kubeproxy"
	"github.com/usernode/usernode/pkg/node/pki"
)

// What `usernode up` does with these packages, inside the node's mount
// namespace, before it starts the processes (paths shortened to a root).
func Example() {
	root, _ := os.MkdirTemp("", "usernode-example")
	defer func() { _ = os.RemoveAll(root) }() // best effort; it is under /tmp
	etc := filepath.Join(root, "etc/usernode")
	const node, version, degraded = "dev", "v1.37.2", true

	p, err := pki.Ensure(filepath.Join(root, "var/lib/usernode/pki"), pki.Options{NodeName: node})
	if err != nil {
		log.Fatal(err)
	}
	kcs, err := kubeconfig.WriteComponents(etc, node, "", p)
	if err != nil {
		log.Fatal(err)
	}

	ctd, _ := containerd.Render(containerd.Options{Version: "1.6.20", Degraded: degraded})
	if err := os.WriteFile(filepath.Join(etc, "containerd.toml"), ctd, 0o644); err != nil {
		log.Fatal(err)
	}
	// The pod CIDR is the one the API server gave the Node.
	if _, err := cni.Install(filepath.Join(root, "etc/cni/net.d"), cni.Options{Subnet: netip.MustParsePrefix("10.88.0.0/24")}); err != nil {
		log.Fatal(err)
	}

	kl := kubelet.Options{Version: version, NodeName: node, Degraded: degraded,
		ClientCAFile: p.CA.Cert, TLSCertFile: p.Kubelet.Cert, TLSPrivateKeyFile: p.Kubelet.Key,
		KubeconfigPath: kcs.Kubelet, ConfigPath: filepath.Join(etc, "kubelet.yaml")}
	klYAML, _ := kubelet.Render(kl)
	if err := os.WriteFile(kl.ConfigPath, klYAML, 0o644); err != nil {
		log.Fatal(err)
	}
	kubeletFlags, _ := kubelet.Flags(kl)

	kp := kubeproxy.Options{Version: version, NodeName: node, KubeconfigPath: kcs.KubeProxy, ConfigPath: filepath.Join(etc, "kube-proxy.yaml")}
	kpYAML, _ := kubeproxy.Render(kp)
	if err := os.WriteFile(kp.ConfigPath, kpYAML, 0o644); err != nil {
		log.Fatal(err)
	}
	proxyFlags, _ := kubeproxy.Flags(kp)

	cp := controlplane.Options{Version: version, NodeName: node, PKI: p, Kubeconfigs: &kcs}
	etcdFlags, _ := controlplane.EtcdFlags(cp)
	apiFlags, _ := controlplane.APIServerFlags(cp)
	kcmFlags, _ := controlplane.ControllerManagerFlags(cp)
	schedFlags, _ := controlplane.SchedulerFlags(cp)
	// Start etcd, kube-apiserver (ready: GET /readyz with kcs.Admin),
	// then apply controlplane.RenderBootstrap(...) with kcs.Admin, start
	// the controller-manager, scheduler, containerd, kubelet, kube-proxy.
	_, _, _, _, _, _ = etcdFlags, apiFlags, kcmFlags, schedFlags, kubeletFlags, proxyFlags

	// The host user's kubeconfig; merged into ~/.kube/config only on request.
	host, _ := kubeconfig.FromPKI(kubeconfig.ContextName(node), "https://127.0.0.1:6443", p, p.Admin)
	if err := kubeconfig.Write(filepath.Join(root, "kubeconfig"), host); err != nil {
		log.Fatal(err)
	}
}
