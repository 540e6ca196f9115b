package flannel

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// The net-conf flanneld reads: VXLAN on 8472 over the cluster's pod CIDR,
// with the host uplink's MTU (flanneld takes 50 off), never slirp's 65520.
func TestConfig(t *testing.T) {
	c, err := Config(netip.MustParsePrefix("10.244.0.0/16"), 1500, 9472)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	be, _ := m["Backend"].(map[string]any)
	if m["Network"] != "10.244.0.0/16" || be["Type"] != "vxlan" || be["Port"] != float64(9472) || be["VNI"] != float64(1) || be["MTU"] != float64(1500) || m["EnableNFTables"] != false {
		t.Errorf("net-conf:\n%s", b)
	}
	for _, bad := range []struct {
		cidr string
		mtu  int
		want string
	}{{"fd00::/48", 1500, "IPv4"}, {"10.244.0.0/16", 600, "576"}} {
		if _, err := Config(netip.MustParsePrefix(bad.cidr), bad.mtu, 8472); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Config(%s, %d): %v", bad.cidr, bad.mtu, err)
		}
	}
}

// subnet.env as flanneld v0.28 writes it.
func TestParseLease(t *testing.T) {
	l, err := ParseLease([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.Masked().String() != "10.244.1.0/24" || l.Subnet.Addr().String() != "10.244.1.1" || l.MTU != 1450 || !l.IPMasq || l.Network.String() != "10.244.0.0/16" {
		t.Errorf("lease %+v", l)
	}
	for _, bad := range []string{"", "FLANNEL_SUBNET=10.244.1.1/24\n", "FLANNEL_SUBNET=x\nFLANNEL_MTU=1450"} {
		if _, err := ParseLease([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
