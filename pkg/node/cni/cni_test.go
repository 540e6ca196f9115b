package cni

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestConfList(t *testing.T) {
	b, err := Render(Options{Subnet: netip.MustParsePrefix("10.88.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	var c ConfList
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		t.Fatalf("strict decode: %v\n%s", err, b)
	}

	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["cniVersion"] != "1.0.0" || raw["name"] != "usernode" {
		t.Errorf("header: %v", raw)
	}
	plugins := raw["plugins"].([]any)
	if len(plugins) != 2 {
		t.Fatalf("%d plugins, want bridge and portmap", len(plugins))
	}
	br := plugins[0].(map[string]any)
	want := map[string]any{
		"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  []any{[]any{map[string]any{"subnet": "10.88.0.0/24"}}},
			"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
			"dataDir": "/var/lib/cni/networks",
		},
	}
	if !reflect.DeepEqual(br, want) {
		t.Errorf("bridge = %#v\nwant %#v", br, want)
	}
	pm := plugins[1].(map[string]any)
	if !reflect.DeepEqual(pm, map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}}) {
		t.Errorf("portmap = %#v", pm)
	}
	for _, p := range plugins {
		if p.(map[string]any)["type"] == "loopback" {
			t.Error("loopback listed: containerd adds it")
		}
	}
	if g := Gateway(netip.MustParsePrefix("10.88.0.0/24")); g != netip.MustParseAddr("10.88.0.1") {
		t.Errorf("gateway %v", g)
	}
}

func TestOptionsAndValidation(t *testing.T) {
	c, err := Config(Options{Subnet: netip.MustParsePrefix("10.244.3.0/24"), MTU: 1400, Bridge: "un0"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.3.0/24" || c.Plugins[0].MTU != 1400 || c.Plugins[0].Bridge != "un0" {
		t.Errorf("options not applied: %+v", c.Plugins[0])
	}
	for _, bad := range []string{"10.88.0.1/24", "fd00::/64", "10.88.0.0/31"} {
		if _, err := Config(Options{Subnet: netip.MustParsePrefix(bad)}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	// What a host's /etc/cni/net.d copy may hold.
	for _, n := range []string{"00-host.conf", "87-podman-bridge.conflist", "README"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path, err := Install(dir, Options{Subnet: netip.MustParsePrefix("10.88.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{FileName, "README"}) {
		t.Errorf("dir holds %v", names)
	}
	b, _ := os.ReadFile(path)
	want, _ := Render(Options{Subnet: netip.MustParsePrefix("10.88.0.0/24")})
	if !bytes.Equal(b, want) {
		t.Error("installed file differs from Render")
	}
}
