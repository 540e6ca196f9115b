package network

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestARPPackets(t *testing.T) {
	hw := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	src, gw := netip.MustParseAddr("10.0.2.100"), netip.MustParseAddr("10.0.2.2")
	req := arpRequest(hw, src, gw)
	// RFC 826: htype 1, ptype 0x0800, hlen 6, plen 4, op 1, sha, spa,
	// tha (zero), tpa.
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x64, 10, 0, 2, 100, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2}
	if !bytes.Equal(req, want) {
		t.Fatalf("request\n got %v\nwant %v", req, want)
	}
	if arpReplyFrom(req, gw) {
		t.Error("a request taken for a reply")
	}
	// The gateway's reply: op 2, its address as the sender.
	rep := []byte{0, 1, 8, 0, 6, 4, 0, 2, 0x52, 0x55, 10, 0, 2, 2, 10, 0, 2, 2, 2, 0, 0, 0, 0, 0x64, 10, 0, 2, 100}
	if !arpReplyFrom(rep, gw) {
		t.Error("the gateway's reply not recognised")
	}
	if arpReplyFrom(rep, src) {
		t.Error("a reply from the gateway taken for one from another address")
	}
	if arpReplyFrom(rep[:20], gw) {
		t.Error("a short packet taken for a reply")
	}
}

func TestMeasureNoInterface(t *testing.T) {
	h := Measure(&Config{Driver: "none"}, 0)
	if !h.OK() || h.Present {
		t.Errorf("no interface to measure: %+v", h)
	}
	h = Measure(&Config{Driver: "x", Interface: "usernode-no-such0"}, 0)
	if h.OK() || h.Present || len(h.Problems) != 1 {
		t.Errorf("a missing interface: %+v", h)
	}
}
