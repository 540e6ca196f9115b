package builtin

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A client on this machine gets the unpaced congestion control; the
// check runs on a real accepted socket, as the forwarder sees it.
func TestLocalClientUnpaced(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, _ := a.(*net.TCPConn).SyscallConn()
	var local bool
	var cc string
	if cerr := rc.Control(func(fd uintptr) {
		_, local = peer(int(fd))
		unpace(int(fd))
		cc, err = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); cerr != nil {
		t.Fatal(cerr)
	}
	if !local {
		t.Errorf("a client on 127.0.0.1 is not taken as local")
	}
	if err != nil || strings.TrimRight(cc, "\x00") != "reno" {
		t.Errorf("congestion control after unpace: %q, %v; want reno", cc, err)
	}
}
