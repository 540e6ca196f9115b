package main

// The network namespaces, made by root: two "hosts" on a bridge for the
// usernode nodes (as internal/testutil's TwoHosts makes them), and two
// more on a bridge of their own for the bound, where root joins them with
// a VXLAN of its own. Every name starts with "unb-", so nothing here
// collides with the integration tests' "un-" namespaces.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

const nsPrefix = "unb-"

// netHost is one namespace with an address on its LAN.
type netHost struct {
	ns string // name under /run/netns
	ip string // on the LAN
}

func (h netHost) path() string { return "/run/netns/" + h.ns }

// in runs a command as root in the namespace, killed if ctx ends first
// (nsenter execs it: the kill reaches the command itself).
func (h netHost) in(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.path(), "--", name}, args...)...)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// lan makes namespace lanNS with a bridge (MTU 1500) and, for each host,
// a namespace with eth0 on it at the host's address (/24) and a default
// route through .254, which answers nothing: two machines on one LAN.
// undo removes what was made, also after a failure half way.
func lan(lanNS string, hosts []netHost, undo *undoStack) error {
	undo.push("netns "+lanNS, func() error { return ip("netns", "del", lanNS) })
	if err := ipAll([][]string{
		{"netns", "add", lanNS},
		{"-n", lanNS, "link", "set", "lo", "up"},
		{"-n", lanNS, "link", "add", "br0", "mtu", "1500", "type", "bridge"},
		{"-n", lanNS, "link", "set", "br0", "up"},
	}); err != nil {
		return err
	}
	for i, h := range hosts {
		undo.push("netns "+h.ns, func() error { return ip("netns", "del", h.ns) })
		peer := fmt.Sprintf("port%d", i)
		if err := ipAll([][]string{
			{"netns", "add", h.ns},
			{"-n", h.ns, "link", "set", "lo", "up"},
			{"-n", h.ns, "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", peer, "netns", lanNS},
			{"-n", lanNS, "link", "set", peer, "master", "br0", "up"},
			{"-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
			{"-n", h.ns, "link", "set", "eth0", "up"},
			{"-n", h.ns, "route", "add", "default", "via", "198.51.100.254"},
		}); err != nil {
			return err
		}
	}
	return nil
}

func ipAll(cmds [][]string) error {
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			return err
		}
	}
	return nil
}

// Overlay addresses of the bound's VXLAN.
var vxlanIP = [2]string{"10.250.0.1", "10.250.0.2"}

// rootVXLAN joins the two hosts with what root would make by hand: a
// VXLAN device each (VNI 1 and UDP 8472 as Flannel's, MTU 1450 as the
// pods' is: the LAN's 1500 minus VXLAN's 50), the peer as its fixed
// remote, and an address in 10.250.0.0/24.
func rootVXLAN(hosts [2]netHost) error {
	for i, h := range hosts {
		if err := ipAll([][]string{
			{"-n", h.ns, "link", "add", "vx0", "mtu", "1450", "type", "vxlan", "id", "1", "dstport", "8472",
				"local", h.ip, "remote", hosts[1-i].ip, "dev", "eth0"},
			{"-n", h.ns, "addr", "add", vxlanIP[i] + "/24", "dev", "vx0"},
			{"-n", h.ns, "link", "set", "vx0", "up"},
		}); err != nil {
			return err
		}
	}
	return nil
}

// staleNamespaces lists namespaces an earlier, killed run left behind.
func staleNamespaces() []string {
	ents, _ := os.ReadDir("/run/netns") // none at all is fine
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// udpCounters reads the namespace's UDP datagrams delivered and those
// dropped because a socket's receive buffer was full (RcvbufErrors):
// where a datagram relay that falls behind loses packets.
func (h netHost) udpCounters(ctx context.Context) (delivered, dropped int64, err error) {
	out, err := h.in(ctx, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/net/snmp in %s: %v", h.ns, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f // the first Udp: line names the second's columns
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			switch names[i] {
			case "InDatagrams":
				delivered = v
			case "RcvbufErrors":
				dropped = v
			}
		}
		return delivered, dropped, nil
	}
	return 0, 0, fmt.Errorf("no Udp: counters in /proc/net/snmp of %s", h.ns)
}
