package testutil

import (
	"strings"
	"testing"
)

// Without containerd 2.x a test skips, except in CI, where a skip would
// hide that 2.x was never tried.
func TestContainerd2Dir(t *testing.T) {
	for _, c := range []struct {
		what             string
		short            bool
		env              map[string]string
		dir, skip, fatal string
	}{
		{"set", false, map[string]string{"USERNODE_CONTAINERD2": "/c2", "CI": "true"}, "/c2", "", ""},
		{"unset", false, nil, "", "hack/build-containerd.sh", ""},
		{"unset in CI", false, map[string]string{"CI": "true"}, "", "", "make test"},
		{"short in CI", true, map[string]string{"CI": "true"}, "", "-short", ""},
	} {
		dir, skip, fatal := containerd2Dir(c.short, func(k string) string { return c.env[k] })
		if dir != c.dir || (c.skip == "") != (skip == "") || !strings.Contains(skip, c.skip) ||
			(c.fatal == "") != (fatal == "") || !strings.Contains(fatal, c.fatal) {
			t.Errorf("%s: dir %q, skip %q, fatal %q", c.what, dir, skip, fatal)
		}
	}
}
