package port

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DefaultHostIP is where a spec without a host IP listens. Loopback is the
// safe default: a forwarded kubelet or apiserver port must not appear on
// every interface of the host (and so on the network) just because the user
// wrote `-p 10250:10250`. Write 0.0.0.0:PORT:PORT to mean every interface.
var DefaultHostIP = netip.MustParseAddr("127.0.0.1")

const specForm = "[hostIP:]hostPort:childPort[/tcp|/udp], e.g. 8080:80 or 0.0.0.0:8443:443/tcp"

func (s Spec) String() string {
	if s.ChildIP.IsValid() {
		return fmt.Sprintf("%s/%s->%s", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto, netip.AddrPortFrom(s.ChildIP, s.ChildPort))
	}
	return fmt.Sprintf("%s/%s->%d", netip.AddrPortFrom(s.HostIP, s.HostPort), s.Proto, s.ChildPort)
}

// ParseSpec parses a docker-style port spec:
// [hostIP:]hostPort:childPort[/tcp|udp]. The host IP defaults to
// DefaultHostIP and the protocol to tcp.
func ParseSpec(s string) (Spec, error) {
	orig := s
	sp := Spec{Proto: "tcp", HostIP: DefaultHostIP}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		sp.Proto = strings.ToLower(s[i+1:])
		s = s[:i]
		if sp.Proto != "tcp" && sp.Proto != "udp" {
			return Spec{}, fmt.Errorf("port spec %q: protocol %q is not supported (only tcp and udp); the form is %s", orig, orig[i+1:], specForm)
		}
	}
	var host, hp, cp string
	// An IPv6 host IP is written in brackets: [::1]:8080:80.
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return Spec{}, fmt.Errorf("port spec %q: unclosed [ in the host IP; the form is %s", orig, specForm)
		}
		host, s = s[1:end], s[end+2:]
	}
	parts := strings.Split(s, ":")
	switch {
	case host != "" && len(parts) == 2:
		hp, cp = parts[0], parts[1]
	case host == "" && len(parts) == 3:
		host, hp, cp = parts[0], parts[1], parts[2]
	case host == "" && len(parts) == 2:
		hp, cp = parts[0], parts[1]
	default:
		return Spec{}, fmt.Errorf("port spec %q: want a host port and a child port; the form is %s", orig, specForm)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return Spec{}, fmt.Errorf("port spec %q: host IP %q is not an IP address; the form is %s", orig, host, specForm)
		}
		sp.HostIP = a.Unmap()
	}
	var err error
	if sp.HostPort, err = parsePort(orig, "host", hp); err != nil {
		return Spec{}, err
	}
	if sp.ChildPort, err = parsePort(orig, "child", cp); err != nil {
		return Spec{}, err
	}
	if err := sp.Validate(); err != nil {
		return Spec{}, err
	}
	return sp, nil
}

func parsePort(orig, which, p string) (uint16, error) {
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0, fmt.Errorf("port spec %q: %s port %q is not a number; the form is %s", orig, which, p, specForm)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port spec %q: %s port %d is out of range 1-65535; the form is %s", orig, which, n, specForm)
	}
	return uint16(n), nil
}

// UnprivilegedPortStart reads net.ipv4.ip_unprivileged_port_start: ports
// below it need CAP_NET_BIND_SERVICE in the host's user namespace, which a
// rootless node does not have.
func UnprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}

// Validate checks what ParseSpec checks, for specs built by hand.
func (s Spec) Validate() error {
	if s.Proto != "tcp" && s.Proto != "udp" {
		return fmt.Errorf("port %s: protocol %q is not supported (only tcp and udp)", s, s.Proto)
	}
	if !s.HostIP.IsValid() {
		return fmt.Errorf("port %s: no host IP", s)
	}
	if s.HostPort == 0 || s.ChildPort == 0 {
		return fmt.Errorf("port %s: ports must be 1-65535", s)
	}
	if start := UnprivilegedPortStart(); int(s.HostPort) < start {
		return fmt.Errorf("port %s: host port %d is privileged (below net.ipv4.ip_unprivileged_port_start=%d) and a rootless node cannot bind it: use a host port >= %d, or as root lower it with `sysctl net.ipv4.ip_unprivileged_port_start=%d`", s, s.HostPort, start, start, s.HostPort)
	}
	return nil
}
