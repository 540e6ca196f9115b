package port

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]Spec{
		"8080:80":              {"tcp", netip.MustParseAddr("127.0.0.1"), 8080, 80, netip.Addr{}},
		"0.0.0.0:8443:443/tcp": {"tcp", netip.MustParseAddr("0.0.0.0"), 8443, 443, netip.Addr{}},
		"10.0.0.1:5353:53/udp": {"udp", netip.MustParseAddr("10.0.0.1"), 5353, 53, netip.Addr{}},
		"[::1]:8080:80/UDP":    {"udp", netip.MustParseAddr("::1"), 8080, 80, netip.Addr{}},
	} {
		got, err := ParseSpec(in)
		if err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestParseSpecBad(t *testing.T) {
	start := UnprivilegedPortStart()
	cases := map[string][]string{
		"abc":                  {`"abc"`, "host port and a child port", "[hostIP:]hostPort:childPort"},
		"abc:80":               {"host port \"abc\" is not a number"},
		"70000":                {"[hostIP:]hostPort:childPort"},
		"8080:70000":           {"child port 70000 is out of range 1-65535"},
		"70000:80":             {"host port 70000 is out of range"},
		"127.0.0.1:80:80/sctp": {`protocol "sctp"`, "only tcp and udp"},
		"localhost:8080:80":    {`host IP "localhost" is not an IP address`},
		"1.2.3.4:5:6:7":        {"[hostIP:]hostPort:childPort"},
		"8080:0":               {"out of range"},
	}
	if start > 1 {
		cases["80:80"] = []string{"privileged", "net.ipv4.ip_unprivileged_port_start", ">= "}
	}
	for in, wants := range cases {
		_, err := ParseSpec(in)
		if err == nil {
			t.Errorf("ParseSpec(%q): no error", in)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseSpec(%q) = %v; want it to say %q", in, err, w)
			}
		}
	}
}
