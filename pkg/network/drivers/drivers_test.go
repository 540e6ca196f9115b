package drivers_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/network"
	_ "github.com/usernode/usernode/pkg/network/drivers"
	"github.com/usernode/usernode/pkg/network/testsuite"
)

func TestMain(m *testing.M) { testsuite.Main(m.Run) }

func TestSlirp4netns(t *testing.T) { testsuite.Run(t, "slirp4netns") }
func TestPasta(t *testing.T)       { testsuite.Run(t, "pasta") }
func TestLXCUserNIC(t *testing.T)  { testsuite.Run(t, "lxc-user-nic") }

func TestUnknownDriver(t *testing.T) {
	_, _, err := network.New("slirp")
	if err == nil || !strings.Contains(err.Error(), "pasta, ") || !strings.Contains(err.Error(), `"slirp"`) {
		t.Fatalf("unknown driver: %v; want the name and the known ones", err)
	}
}

// Every helper-backed driver must fail before touching anything when its
// binary is missing, naming the Debian package.
func TestHelperMissingUnit(t *testing.T) {
	t.Setenv("PATH", "")
	for _, name := range network.Names() {
		d, _ := network.Lookup(name)
		if d.Find == nil {
			continue
		}
		p, _, _ := network.New(name)
		_, err := p.Start(context.Background(), network.NS{PID: -1, NetNS: "/nonexistent", StateDir: t.TempDir()}, network.Options{})
		var hm *network.HelperMissingError
		if !errors.As(err, &hm) || !strings.Contains(err.Error(), "apt-get install "+d.Package) {
			t.Errorf("%s without its helper: %v", name, err)
		}
	}
}

func TestResolvConf(t *testing.T) {
	p, _, _ := network.New("slirp4netns")
	_ = p
	got := string(network.ResolvConf(&network.Config{Driver: "x"}))
	if !strings.Contains(got, "no DNS") {
		t.Errorf("empty DNS: %q", got)
	}
}
