package node

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/port"
)

func heldPort(t *testing.T) (net.Listener, port.Spec) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	return l, port.Spec{Proto: "tcp", HostIP: ap.Addr(), HostPort: ap.Port(), ChildPort: 6443}
}

func notStarted() error { return nil }

// Another up's Check holds a port for an instant: this one's finds it
// free once that is over, not "already in use".
func TestPortFreeOnceAnotherProbeLetsGo(t *testing.T) {
	l, p := heldPort(t)
	go func() {
		time.Sleep(200 * time.Millisecond)
		l.Close()
	}()
	if err := portFree(p, notStarted); err != nil {
		t.Fatalf("a port held for 200 ms: %v", err)
	}
}

func TestPortInUseNamesItsFix(t *testing.T) {
	l, p := heldPort(t)
	defer l.Close()
	err := portFree(p, notStarted)
	if err == nil {
		t.Fatal("a port held throughout was found free")
	}
	for _, want := range []string{p.HostIP.String(), "already in use", "ss -ltnp", "--api-port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// The node starting beside this up takes its ports: that is what the
// error says, as soon as it shows.
func TestPortTakenByTheNodeStarting(t *testing.T) {
	l, p := heldPort(t)
	defer l.Close()
	started := time.Now().Add(300 * time.Millisecond)
	running := errors.New(`node "n" is already running (starting)`)
	err := portFree(p, func() error {
		if time.Now().After(started) {
			return running
		}
		return nil
	})
	if !errors.Is(err, running) {
		t.Fatalf("got %v, want %v", err, running)
	}
}
