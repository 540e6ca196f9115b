package doctor

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/usernode/usernode/internal/hostnet"
)

// The multi-node checks over a described network: the uplink, which of
// its ports are taken, and what the VXLAN trial says.
func TestMultiNode(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.2")
	for _, c := range []struct {
		name   string
		uplink *hostnet.Uplink
		taken  map[netip.AddrPort]bool
		trial  error
		want   map[string]want
	}{
		{name: "ready", uplink: &hostnet.Uplink{IP: ip, Dev: "eth0", MTU: 1500}, want: map[string]want{
			"multinode.host-ip": {status: Pass, found: "198.51.100.2 on eth0 (MTU 1500): `--host-ip auto` and `usernode join` use it; pods get MTU 1450"},
			"multinode.ports":   {status: Pass, found: "free on 198.51.100.2: 6443/tcp, 10250/tcp, 8472/udp, 10053/udp, 10053/tcp"},
			"trial.vxlan":       {status: Pass, found: "made a VXLAN device on UDP 8472"},
		}},
		{name: "no default route", want: map[string]want{
			"multinode.host-ip": {status: Warn, found: "no IPv4 default route", debian: "--host-ip IP"},
			"multinode.ports":   {status: Skip, found: "no default route"},
		}},
		{name: "small MTU, ports taken, no vxlan", uplink: &hostnet.Uplink{IP: ip, Dev: "wg0", MTU: 1320},
			taken: map[netip.AddrPort]bool{netip.AddrPortFrom(ip, 8472): true, netip.AddrPortFrom(ip, 6443): true},
			trial: errors.New("creating a VXLAN device: operation not supported"), want: map[string]want{
				"multinode.host-ip": {status: Warn, found: "pods get MTU 1270"},
				"multinode.ports":   {status: Warn, found: "in use on 198.51.100.2: 6443/tcp (--api-port), 8472/udp (--vxlan-port)"},
				"trial.vxlan":       {status: Warn, found: "operation not supported", debian: "modprobe vxlan"},
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := thisVM().system(t)
			s.Uplink = func() (hostnet.Uplink, bool) {
				if c.uplink == nil {
					return hostnet.Uplink{}, false
				}
				return *c.uplink, true
			}
			s.PortFree = func(_ string, a netip.AddrPort) error {
				if c.taken[a] {
					return errors.New("address already in use")
				}
				return nil
			}
			s.VXLANTrial = func(context.Context, uint16) error { return c.trial }
			rep := Run(context.Background(), s, "multinode.host-ip", "multinode.ports", "trial.vxlan")
			for id, w := range c.want {
				r, ok := rep.Get(id)
				if !ok {
					t.Fatalf("no %s", id)
				}
				assertResult(t, r, w)
			}
		})
	}
}
