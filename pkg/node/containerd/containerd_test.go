package containerd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/node/internal/tomltest"
)

const cri = "io.containerd.grpc.v1.cri"

func TestV2Seed(t *testing.T) {
	b, err := Render(Options{Degraded: true})
	if err != nil {
		t.Fatal(err)
	}
	var c ConfigV2
	tomltest.Strict(t, b, &c)
	o := Options{Degraded: true}
	if _, err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if want := configV2For(o); !reflect.DeepEqual(&c, want) {
		t.Errorf("decoded %+v\nwant %+v", c, want)
	}

	m := tomltest.Raw(t, b)
	for _, tc := range []struct {
		path []string
		want any
	}{
		{[]string{"version"}, int64(2)},
		{[]string{"root"}, "/var/lib/containerd"},
		{[]string{"state"}, "/run/containerd"},
		{[]string{"grpc", "address"}, "/run/containerd/containerd.sock"},
		{[]string{"plugins", cri, "disable_apparmor"}, true},
		{[]string{"plugins", cri, "restrict_oom_score_adj"}, true},
		{[]string{"plugins", cri, "disable_hugetlb_controller"}, true},
		{[]string{"plugins", cri, "disable_cgroup"}, true},
		{[]string{"plugins", cri, "sandbox_image"}, "registry.k8s.io/pause:3.10"},
		{[]string{"plugins", cri, "containerd", "snapshotter"}, "overlayfs"},
		{[]string{"plugins", cri, "containerd", "default_runtime_name"}, "runc"},
		{[]string{"plugins", cri, "containerd", "runtimes", "runc", "runtime_type"}, "io.containerd.runc.v2"},
		{[]string{"plugins", cri, "containerd", "runtimes", "runc", "options", "SystemdCgroup"}, false},
		{[]string{"plugins", cri, "containerd", "runtimes", "runc", "options", "BinaryName"}, "runc"},
		{[]string{"plugins", cri, "cni", "bin_dir"}, "/usr/lib/cni"},
		{[]string{"plugins", cri, "cni", "conf_dir"}, "/etc/cni/net.d"},
		{[]string{"plugins", "io.containerd.internal.v1.opt", "path"}, "/var/lib/containerd/opt"},
	} {
		if got, ok := tomltest.At(m, tc.path...); !ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v (present %v), want %#v", strings.Join(tc.path, " > "), got, ok, tc.want)
		}
	}
	dis, _ := tomltest.At(m, "disabled_plugins")
	for _, p := range []string{"aufs", "btrfs", "devmapper", "zfs"} {
		if !strings.Contains(toString(dis), "io.containerd.snapshotter.v1."+p) {
			t.Errorf("%s not disabled: %v", p, dis)
		}
	}
	if _, ok := m["proxy_plugins"]; ok {
		t.Error("proxy_plugins without fuse-overlayfs")
	}
}

func toString(v any) string {
	var b strings.Builder
	for _, x := range v.([]any) {
		b.WriteString(x.(string) + " ")
	}
	return b.String()
}

// Degraded and full mode differ in disable_cgroup only.
func TestV2DegradedVsFull(t *testing.T) {
	deg, _ := Render(Options{Degraded: true})
	full, _ := Render(Options{})
	dm, fm := tomltest.Raw(t, deg), tomltest.Raw(t, full)
	if v, _ := tomltest.At(fm, "plugins", cri, "disable_cgroup"); v != false {
		t.Errorf("full mode disable_cgroup = %v", v)
	}
	dm["plugins"].(map[string]any)[cri].(map[string]any)["disable_cgroup"] = false
	if !reflect.DeepEqual(dm, fm) {
		t.Errorf("degraded and full differ beyond disable_cgroup:\n%s\n%s", deg, full)
	}
}

func TestV2Options(t *testing.T) {
	b, err := Render(Options{Version: "1.7.24", Snapshotter: FuseOverlayfs, OCIRuntime: "crun", SandboxImage: "localhost/pause:dev", CNIBinDir: "/opt/cni/bin"})
	if err != nil {
		t.Fatal(err)
	}
	var c ConfigV2
	tomltest.Strict(t, b, &c)
	if c.Plugins.CRI.Containerd.Snapshotter != "fuse-overlayfs" ||
		c.ProxyPlugins["fuse-overlayfs"] != (ProxyPlugin{Type: "snapshot", Address: DefaultFuseOverlayfsAddress}) ||
		c.Plugins.CRI.Containerd.Runtimes["runc"].Options.BinaryName != "crun" ||
		c.Plugins.CRI.SandboxImage != "localhost/pause:dev" || c.Plugins.CRI.CNI.BinDir != "/opt/cni/bin" {
		t.Errorf("options not applied: %+v", c)
	}
	if _, err := Render(Options{Snapshotter: "zfs"}); err == nil {
		t.Error("unknown snapshotter accepted")
	}
}

func TestV3(t *testing.T) {
	for _, tc := range []struct {
		version string
		binDir  any
		key     string
		config  int64
	}{
		{"v2.4.2", []any{"/usr/lib/cni"}, "bin_dirs", 4},
		{"2.3.4", []any{"/usr/lib/cni"}, "bin_dirs", 4},
		{"2.2.1", []any{"/usr/lib/cni"}, "bin_dirs", 3},
		{"v2.1.0", []any{"/usr/lib/cni"}, "bin_dirs", 3},
		{"2.0.5", "/usr/lib/cni", "bin_dir", 3},
	} {
		b, err := Render(Options{Version: tc.version})
		if err != nil {
			t.Fatal(err)
		}
		var c ConfigV3
		tomltest.Strict(t, b, &c)
		m := tomltest.Raw(t, b)
		rt := "io.containerd.cri.v1.runtime"
		for _, x := range []struct {
			path []string
			want any
		}{
			{[]string{"version"}, tc.config},
			{[]string{"plugins", rt, "disable_apparmor"}, true},
			{[]string{"plugins", rt, "restrict_oom_score_adj"}, true},
			{[]string{"plugins", rt, "disable_hugetlb_controller"}, true},
			{[]string{"plugins", rt, "containerd", "runtimes", "runc", "options", "SystemdCgroup"}, false},
			{[]string{"plugins", rt, "cni", tc.key}, tc.binDir},
			{[]string{"plugins", rt, "cni", "conf_dir"}, "/etc/cni/net.d"},
			{[]string{"plugins", "io.containerd.cri.v1.images", "snapshotter"}, "overlayfs"},
			{[]string{"plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"}, "registry.k8s.io/pause:3.10"},
			{[]string{"plugins", "io.containerd.internal.v1.opt", "path"}, "/var/lib/containerd/opt"},
		} {
			if got, ok := tomltest.At(m, x.path...); !ok || !reflect.DeepEqual(got, x.want) {
				t.Errorf("%s: %s = %#v (present %v), want %#v", tc.version, strings.Join(x.path, " > "), got, ok, x.want)
			}
		}
		if strings.Contains(string(b), "disable_cgroup") || strings.Contains(string(b), "grpc.v1.cri") {
			t.Errorf("%s: 1.x keys in a version 3 config:\n%s", tc.version, b)
		}
		// The sockets: [grpc] in version 3, the server plugins in 4
		// (where a [grpc] table is deprecated and a ttrpc socket no
		// longer follows the gRPC one).
		grpc, inGRPC := tomltest.At(m, "grpc", "address")
		srv, inSrv := tomltest.At(m, "plugins", "io.containerd.server.v1.grpc", "address")
		ttrpc, inTTRPC := tomltest.At(m, "plugins", "io.containerd.server.v1.ttrpc", "address")
		switch tc.config {
		case 3:
			if grpc != "/run/containerd/containerd.sock" || inSrv || inTTRPC {
				t.Errorf("%s: version 3 sockets: grpc %v, server plugins %v %v:\n%s", tc.version, grpc, srv, ttrpc, b)
			}
		case 4:
			if inGRPC || srv != "/run/containerd/containerd.sock" || ttrpc != "/run/containerd/containerd.sock.ttrpc" {
				t.Errorf("%s: version 4 sockets: grpc %v, server plugins %v %v:\n%s", tc.version, grpc, srv, ttrpc, b)
			}
		}
	}
	if _, err := Render(Options{Version: "2.2.1", Degraded: true}); !errors.Is(err, ErrDegradedNeeds1x) {
		t.Errorf("degraded with containerd 2: err = %v", err)
	}
}

func TestVersions(t *testing.T) {
	for out, want := range map[string]string{
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n":                  "1.6.20~ds1",
		"containerd github.com/containerd/containerd/v2 v2.2.1 dea7da592f5d1d2b7755e3a161be07f43fad8f75": "v2.2.1",
		"containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da":                       "1.7.27",
	} {
		got, err := ParseVersionOutput(out)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", out, got, err, want)
		}
	}
	if _, err := ParseVersionOutput("runc version 1.1.5"); err == nil {
		t.Error("runc output accepted")
	}
	for v, want := range map[string]int{"1.6.20~ds1": 2, "1.7.27": 2, "v2.2.1": 3, "2.0.0": 3, "2.3.4": 4, "v2.4.2": 4, "3.0.0": 4} {
		if got, err := ConfigVersion(v); err != nil || got != want {
			t.Errorf("ConfigVersion(%s) = %d, %v; want %d", v, got, err, want)
		}
	}
	if _, err := Render(Options{Version: "1.5.9"}); err == nil || !strings.Contains(err.Error(), "1.6") {
		t.Errorf("1.5: err = %v", err)
	}
}

// The real containerd (Debian's, when installed) parses the file and takes
// each seed key: a misspelt key would show its default in the dump.
func TestContainerdAcceptsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the containerd binary")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed")
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParseVersionOutput(string(out))
	if err != nil {
		t.Fatal(err)
	}
	degraded := !strings.HasPrefix(strings.TrimPrefix(v, "v"), "2.")
	b, err := Render(Options{Version: v, Degraded: degraded, OCIRuntime: "crun"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command(bin, "--config", path, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, dump)
	}
	for _, want := range []string{
		`disable_apparmor = true`, `restrict_oom_score_adj = true`, `disable_hugetlb_controller = true`,
		`BinaryName = "crun"`, `SystemdCgroup = false`, `"/usr/lib/cni"`, `path = "/var/lib/containerd/opt"`,
		`address = "/run/containerd/containerd.sock"`, `"io.containerd.snapshotter.v1.zfs"`,
	} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("containerd %s dump lacks %s", v, want)
		}
	}
	if degraded && !strings.Contains(string(dump), "disable_cgroup = true") {
		t.Errorf("containerd %s dump lacks disable_cgroup = true", v)
	}
}

// Probe tells the modes from the version the binary prints: 2.x is
// refused in degraded mode with the three ways out.
func TestProbe(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		out      string
		degraded bool
	}{
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", true},
		{"containerd github.com/containerd/containerd/v2 v2.4.2 5fd60ad5e2b8ed29e8e7a2cff6d3e3cbcf0c1f13", false},
	} {
		bin := filepath.Join(dir, "containerd")
		if err := os.WriteFile(bin, []byte("#!/bin/sh\necho '"+tc.out+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		info, err := Probe(context.Background(), bin)
		if err != nil {
			t.Fatalf("%s: %v", tc.out, err)
		}
		if !info.Full || info.Degraded != tc.degraded || info.Version == "" || info.Path != bin {
			t.Errorf("%s: %+v", tc.out, info)
		}
		if !tc.degraded {
			for _, fix := range []string{"delegated cgroup v2", "--cri crio", "--containerd PATH"} {
				if !strings.Contains(info.Why, fix) {
					t.Errorf("%s: the refusal does not name %q: %s", tc.out, fix, info.Why)
				}
			}
		}
	}
	if _, err := Probe(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing binary probed fine")
	}
}

// containerd 2.x, as hack/build-containerd.sh builds it (`make test` names
// its directory in USERNODE_CONTAINERD2), reads the config usernode renders
// for it: without a warning (2.x only warns on a key it does not know, and
// on a config in an older version, which it migrates at every start) and
// taking every key written with the value written, as `config dump`
// shows. Full mode only: 2.x refuses degraded mode (TestV3).
func TestContainerd2AcceptsIt(t *testing.T) {
	bin := testutil.Containerd2(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	v, err := ParseVersionOutput(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimPrefix(v, "v"), "2.") {
		t.Fatalf("%s is containerd %s, not 2.x", bin, v)
	}
	for _, o := range []Options{
		{Version: v},
		{Version: v, Snapshotter: FuseOverlayfs, OCIRuntime: "/usr/bin/crun", SandboxImage: "localhost/pause:dev",
			CNIBinDir: "/opt/cni/bin", Address: "/run/usernode/containerd.sock"},
	} {
		written, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, written, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config", path, "config", "dump")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		dump, err := cmd.Output()
		if err != nil {
			t.Fatalf("containerd %s config dump: %v\n%s", v, err, stderr.String())
		}
		if s := stderr.String(); strings.Contains(s, "level=warning") || strings.Contains(s, "level=error") {
			t.Errorf("containerd %s complains about the config:\n%s\nconfig:\n%s", v, s, written)
		}
		got := tomltest.Raw(t, dump)
		var walk func(path []string, x any)
		walk = func(path []string, x any) {
			if m, ok := x.(map[string]any); ok {
				for k, y := range m {
					walk(append(append([]string(nil), path...), k), y)
				}
				return
			}
			if g, ok := tomltest.At(got, path...); !ok || !reflect.DeepEqual(g, x) {
				t.Errorf("containerd %s took %s as %#v (present %v), want %#v", v, strings.Join(path, " > "), g, ok, x)
			}
		}
		walk(nil, tomltest.Raw(t, written))
	}
}
