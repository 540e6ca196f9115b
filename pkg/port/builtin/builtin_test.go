package builtin_test

import (
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/builtin"
	"github.com/usernode/usernode/pkg/port/testsuite"
)

func TestMain(m *testing.M) { testsuite.Main(m.Run) }

func TestConformance(t *testing.T) {
	testsuite.Run(t, "builtin", testsuite.Caps{}, func(netns string, idle time.Duration) (port.Forwarder, error) {
		return builtin.New(netns, builtin.Options{UDPIdleTimeout: idle})
	})
}

// The relay loops take another path when they sleep at once.
func TestConformanceNoBusyPoll(t *testing.T) {
	testsuite.Run(t, "builtin", testsuite.Caps{}, func(netns string, idle time.Duration) (port.Forwarder, error) {
		return builtin.New(netns, builtin.Options{UDPIdleTimeout: idle, BusyPoll: -1})
	})
}

// With KeepSourceIP the suite checks that servers inside, and one behind a
// DNAT like a NodePort's pod, see the client's own address.
func TestConformanceKeepSourceIP(t *testing.T) {
	testsuite.Run(t, "builtin", testsuite.Caps{PreservesSourceIP: true}, func(netns string, idle time.Duration) (port.Forwarder, error) {
		return builtin.New(netns, builtin.Options{UDPIdleTimeout: idle, KeepSourceIP: true})
	})
}
