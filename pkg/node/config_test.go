package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "config.yaml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	f, err := LoadFile(write("name: dev\napiPort: 16443\nnet: pasta\n"), true)
	if err != nil || f.Name != "dev" || f.APIPort != 16443 || f.Net != "pasta" {
		t.Fatalf("got %+v, %v", f, err)
	}
	for _, bad := range []string{"name: [dev", "nmae: dev\n", "apiPort: 70000\n", "apiPort: high\n"} {
		if _, err := LoadFile(write(bad), true); err == nil || !strings.Contains(err.Error(), "is not valid") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if f, err := LoadFile(write("portBusyPoll: 20us\nkeepSourceIP: true\n"), true); err != nil || f.PortBusyPoll != "20us" || !f.KeepSourceIP {
		t.Errorf("portBusyPoll: %+v, %v", f, err)
	}
	for _, bad := range []string{"portBusyPoll: fast\n", "portBusyPoll: -5us\n"} {
		if _, err := LoadFile(write(bad), true); err == nil || !strings.Contains(err.Error(), "portBusyPoll") {
			t.Errorf("%q: err = %v; want portBusyPoll named", bad, err)
		}
	}
	if f, err := LoadFile(filepath.Join(dir, "missing.yaml"), false); err != nil || *f != (File{}) {
		t.Errorf("missing default file: %+v %v", f, err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml"), true); err == nil {
		t.Error("missing --config file must be an error")
	}
}
