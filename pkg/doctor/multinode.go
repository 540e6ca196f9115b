package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/usernode/usernode/pkg/cluster"
)

// The multi-node checks: what a node needs to serve other hosts (`up
// --host-ip`) or to join one (`usernode join`). A single-node cluster
// needs none of it, so a gap here is a WARN, never a FAIL.

// vxlanOverhead is what VXLAN over IPv4 takes from each packet.
const vxlanOverhead = 50

func checkHostIP(_ context.Context, r *run) Result {
	if r.sys.Uplink == nil {
		return Result{Status: Skip, Found: "no network lookup was given to doctor"}
	}
	up, ok := r.sys.Uplink()
	if !ok {
		return Result{Status: Warn, Found: "no IPv4 default route: `--host-ip auto` and `usernode join` have no address to take",
			Why: "Other hosts reach a node at its host IP; without a default route usernode cannot guess it. A node of this host only needs none.",
			Fix: same("# name the address the other hosts reach: usernode up --host-ip IP, usernode join ... --host-ip IP")}
	}
	found := fmt.Sprintf("%s on %s (MTU %d): `--host-ip auto` and `usernode join` use it; pods get MTU %d across hosts", up.IP, up.Dev, up.MTU, up.MTU-vxlanOverhead)
	if up.MTU-vxlanOverhead < 1280 {
		return Result{Status: Warn, Found: found,
			Why: "VXLAN between hosts takes 50 bytes of each packet: pods would get less than IPv6's minimum MTU of 1280, and some software fails with that."}
	}
	return Result{Status: Pass, Found: found}
}

// multiNodePorts are the host ports a multi-node node takes on its host
// IP by default, each with the flag that moves it.
var multiNodePorts = []struct {
	proto, flag string
	port        uint16
}{
	{"tcp", "--api-port", cluster.DefaultAPIPort},
	{"tcp", "--kubelet-port", cluster.DefaultKubeletPort},
	{"udp", "--vxlan-port", cluster.DefaultVXLANPort},
	{"udp", "--dns-port", cluster.DefaultDNSPort},
	{"tcp", "--dns-port", cluster.DefaultDNSPort},
}

func checkMultiNodePorts(_ context.Context, r *run) Result {
	if r.sys.Uplink == nil || r.sys.PortFree == nil {
		return Result{Status: Skip, Found: "no network lookup was given to doctor"}
	}
	up, ok := r.sys.Uplink()
	if !ok {
		return Result{Status: Skip, Found: "no default route (see multinode.host-ip)"}
	}
	var free, taken []string
	for _, p := range multiNodePorts {
		name := fmt.Sprintf("%d/%s", p.port, p.proto)
		if err := r.sys.PortFree(p.proto, netip.AddrPortFrom(up.IP, p.port)); err != nil {
			taken = append(taken, name+" ("+p.flag+")")
			continue
		}
		free = append(free, name)
	}
	if len(taken) == 0 {
		return Result{Status: Pass, Found: fmt.Sprintf("free on %s: %s", up.IP, strings.Join(free, ", "))}
	}
	return Result{Status: Warn, Found: fmt.Sprintf("in use on %s: %s", up.IP, strings.Join(taken, ", ")),
		Why: "A multi-node node forwards these from its host IP. If a node of yours runs already, it holds them, and that is as it should be; otherwise another program does (`ss -lntup` names it): give the node other ports with the flags named, or another --host-ip."}
}

func checkVXLANTrial(ctx context.Context, r *run) Result {
	if r.sys.VXLANTrial == nil {
		return Result{Status: Skip, Found: "no VXLAN trial was given to doctor"}
	}
	if res, ok := r.results["trial.namespaces"]; ok && res.Status == Fail {
		return Result{Status: Skip, Found: "the namespace trial failed"}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.sys.VXLANTrial(ctx, cluster.DefaultVXLANPort); err != nil {
		return Result{Status: Warn, Found: fmt.Sprintf("in a user+network namespace, making a VXLAN device or setting rp_filter failed: %v", err),
			Why: "A multi-node node's Flannel does exactly this in the node's namespace; without it pods cannot reach pods on other hosts. A node of this host only does not need it.",
			Fix: &Fix{Debian: "modprobe vxlan\necho vxlan > /etc/modules-load.d/usernode-vxlan.conf", Fedora: "modprobe vxlan\necho vxlan > /etc/modules-load.d/usernode-vxlan.conf"}, Root: true}
	}
	return Result{Status: Pass, Found: fmt.Sprintf("made a VXLAN device on UDP %d and set rp_filter=2 in a user+network namespace, as Flannel does in a multi-node node", cluster.DefaultVXLANPort)}
}
