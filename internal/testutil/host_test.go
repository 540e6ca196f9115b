package testutil

import (
	"strings"
	"testing"
)

// Without the binaries a test skips, except in CI, where a skip would
// hide that the node was never tested.
func TestK8sBin(t *testing.T) {
	for _, c := range []struct {
		what             string
		short            bool
		env              map[string]string
		dir, skip, fatal string
	}{
		{"set", false, map[string]string{"USERNODE_K8S_BIN": "/k8s", "CI": "true"}, "/k8s", "", ""},
		{"unset", false, nil, "", "make test", ""},
		{"unset in CI", false, map[string]string{"CI": "true"}, "", "", "make test"},
		{"CI=false", false, map[string]string{"CI": "false"}, "", "make test", ""},
		{"short in CI", true, map[string]string{"CI": "true"}, "", "-short", ""},
	} {
		dir, skip, fatal := k8sBin(c.short, func(k string) string { return c.env[k] })
		if dir != c.dir || (c.skip == "") != (skip == "") || !strings.Contains(skip, c.skip) ||
			(c.fatal == "") != (fatal == "") || !strings.Contains(fatal, c.fatal) {
			t.Errorf("%s: dir %q, skip %q, fatal %q", c.what, dir, skip, fatal)
		}
	}
}

func TestFreePortAndHostIPv4(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		if p := FreePort(t, proto); p == 0 {
			t.Errorf("FreePort(%s) = 0", proto)
		}
	}
	if testing.Short() {
		return // HostIPv4 needs a host with a network
	}
	a := HostIPv4(t)
	if !a.Is4() || a.IsLoopback() {
		t.Errorf("HostIPv4 = %v", a)
	}
	t.Logf("HostIPv4 = %v", a)
}
