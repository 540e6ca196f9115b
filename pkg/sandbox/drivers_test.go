package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/network"
)

type fakeNet struct{ name string }

func (f fakeNet) Start(context.Context, network.NS, network.Options) (*network.Config, error) {
	return &network.Config{Driver: f.name}, nil
}
func (fakeNet) Close() error                    { return nil }
func (fakeNet) Configure(*network.Config) error { return nil }

func fake(name string) network.Driver {
	return network.Driver{Name: name, New: func() (network.Parent, network.Child) { return fakeNet{name}, fakeNet{name} }}
}

// The supervisor's half comes from the driver it was given, and init's
// from the program's resolver, by the config's name: the two must name
// the same driver, and "none" works with neither.
func TestDriverHalves(t *testing.T) {
	for _, c := range []struct {
		what    string
		d       network.Driver
		net     string
		want    any
		wantErr string
	}{
		{"given driver", fake("slirp4netns"), "slirp4netns", fakeNet{"slirp4netns"}, ""},
		{"none without drivers", network.Driver{}, "none", noNet{}, ""},
		{"nothing given", network.Driver{}, "pasta", nil, "none given to the sandbox"},
		{"another driver", fake("pasta"), "slirp4netns", nil, `"pasta" given for a sandbox configured with "slirp4netns"`},
	} {
		p, err := parentOf(c.d, c.net)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: parentOf = %v, %v; want error %q", c.what, p, err, c.wantErr)
			}
			continue
		}
		if err != nil || p != c.want {
			t.Errorf("%s: parentOf = %#v, %v; want %#v", c.what, p, err, c.want)
		}
	}

	lookup := func(name string) (network.Driver, error) {
		if name == "slirp4netns" {
			return fake(name), nil
		}
		return network.Driver{}, errors.New("unknown network driver " + name)
	}
	if c, err := (Entries{Network: lookup}).childOf("slirp4netns"); err != nil || c != (fakeNet{"slirp4netns"}) {
		t.Errorf("childOf with a resolver = %#v, %v", c, err)
	}
	if _, err := (Entries{Network: lookup}).childOf("pasta"); err == nil {
		t.Error("childOf of an unknown driver succeeded")
	}
	if c, err := (Entries{}).childOf("none"); err != nil || c != (noNet{}) {
		t.Errorf("childOf none without a resolver = %#v, %v", c, err)
	}
	if _, err := (Entries{}).childOf("pasta"); err == nil || !strings.Contains(err.Error(), "RegisterEntries") {
		t.Errorf("childOf pasta without a resolver: %v", err)
	}
}
