package sandbox

import (
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	rt := t.TempDir()
	env := map[string]string{"XDG_RUNTIME_DIR": rt, "HOME": "/home/alice"}
	getenv := func(k string) string { return env[k] }

	c := Config{Command: []string{"true"}}
	if err := c.Defaults(getenv); err != nil {
		t.Fatal(err)
	}
	if c.Name != "usernode" || c.RuntimeDir != rt+"/usernode/usernode" || c.StateDir != "/home/alice/.local/share/usernode/usernode" || c.Net != "none" {
		t.Errorf("defaults: %+v", c)
	}
	// The longest runtime dir whose port socket can still be bound.
	c = Config{RuntimeDir: "/" + strings.Repeat("r", 96), Command: []string{"x"}}
	if err := c.Defaults(getenv); err != nil {
		t.Errorf("a port socket path of 107 bytes: %v", err)
	}
	env["XDG_DATA_HOME"] = "/data"
	c = Config{Name: "n2", Command: []string{"true"}}
	if err := c.Defaults(getenv); err != nil || c.StateDir != "/data/usernode/n2" {
		t.Errorf("XDG_DATA_HOME: %v %+v", err, c)
	}

	for _, tc := range []struct {
		name string
		cfg  Config
		env  map[string]string
		want string
	}{
		{"bad name", Config{Name: "A_b", Command: []string{"x"}}, env, "DNS label"},
		{"name too long", Config{Name: strings.Repeat("a", 64), Command: []string{"x"}}, env, "DNS label"},
		{"no runtime dir", Config{Command: []string{"x"}}, map[string]string{"HOME": "/h"}, "XDG_RUNTIME_DIR is not set"},
		{"runtime dir missing", Config{Command: []string{"x"}}, map[string]string{"XDG_RUNTIME_DIR": "/nonexistent/run"}, "is not a directory"},
		{"no home", Config{Command: []string{"x"}}, map[string]string{"XDG_RUNTIME_DIR": rt}, "HOME"},
		{"no command", Config{}, env, "no command"},
		// 108 bytes and more cannot be bound; 107 can (below).
		{"runtime dir too long for the port socket", Config{RuntimeDir: "/" + strings.Repeat("r", 97), Command: []string{"x"}}, env, "at most 107"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Defaults(func(k string) string { return tc.env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
