package crio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/usernode/usernode/internal/images"
	"github.com/usernode/usernode/pkg/node/internal/nodetest"
	"github.com/usernode/usernode/pkg/node/internal/tomltest"
)

const testPinns = "/usr/libexec/crio/pinns"

func render(t *testing.T, o Options) (Files, Options) {
	t.Helper()
	if o.Pinns == "" {
		o.Pinns = testPinns
	}
	f, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Defaults(); err != nil {
		t.Fatal(err)
	}
	return f, o
}

type kv struct {
	path []string
	want any
}

func checkKeys(t *testing.T, m map[string]any, keys []kv) {
	t.Helper()
	for _, tc := range keys {
		if got, ok := tomltest.At(m, tc.path...); !ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v (present %v), want %#v", strings.Join(tc.path, " > "), got, ok, tc.want)
		}
	}
}

// The seed's settings and the node's layout, in degraded mode: crio.conf
// decodes strictly into the structs it was made from, and each key holds
// what the node needs.
func TestCrioConfSeed(t *testing.T) {
	files, o := render(t, Options{Degraded: true})
	b := files[DefaultConfigDir+"/crio.conf"]
	var c Config
	tomltest.Strict(t, b, &c)
	if want := configFor(o); !reflect.DeepEqual(&c, want) {
		t.Errorf("decoded %+v\nwant %+v", c, want)
	}
	rt := []string{"crio", "runtime"}
	h := append(rt, "runtimes", "crun")
	checkKeys(t, tomltest.Raw(t, b), []kv{
		{[]string{"crio", "root"}, "/var/lib/containers/storage"},
		{[]string{"crio", "runroot"}, "/run/containers/storage"},
		{[]string{"crio", "storage_driver"}, "overlay"},
		{[]string{"crio", "storage_option"}, []any{}},
		{[]string{"crio", "log_dir"}, "/var/log/crio/pods"},
		{[]string{"crio", "version_file"}, "/run/crio/version"},
		{[]string{"crio", "version_file_persist"}, "/var/lib/crio/version"},
		{[]string{"crio", "clean_shutdown_file"}, "/var/lib/crio/clean.shutdown"},
		{[]string{"crio", "api", "listen"}, "/run/crio/crio.sock"},
		{append(rt, "cgroup_manager"), "cgroupfs"},
		{append(rt, "default_runtime"), "crun"},
		{append(rt, "drop_infra_ctr"), false},
		{append(rt, "container_exits_dir"), "/run/crio/exits"},
		{append(rt, "container_attach_socket_dir"), "/run/crio"},
		{append(rt, "namespaces_dir"), "/run/crio/ns"},
		{append(rt, "pinns_path"), testPinns},
		{append(rt, "irqbalance_config_file"), ""},
		{append(rt, "irqbalance_config_restore_file"), "disable"},
		{append(h, "runtime_path"), "/usr/bin/crun"},
		{append(h, "runtime_type"), "oci"},
		{append(h, "runtime_root"), "/run/crun"},
		{append(h, "monitor_path"), "/usr/bin/conmon"},
		{append(h, "monitor_cgroup"), "pod"},
		{[]string{"crio", "image", "pause_image"}, images.PauseRef},
		{[]string{"crio", "image", "pause_command"}, ""},
		{[]string{"crio", "image", "signature_policy"}, "/etc/usernode/crio/policy.json"},
		{[]string{"crio", "image", "big_files_temporary_dir"}, "/var/lib/crio/tmp"},
		{[]string{"crio", "network", "network_dir"}, "/etc/cni/net.d"},
		{[]string{"crio", "network", "plugin_dirs"}, []any{"/usr/lib/cni"}},
		{[]string{"crio", "nri", "enable_nri"}, false},
	})
	// Every path CRI-O writes is the node's: /var/lib, /var/log and /run.
	for _, p := range regexp.MustCompile(`'(/[^']*)'`).FindAllStringSubmatch(string(b), -1) {
		if !regexp.MustCompile(`^/(var/lib|var/log|run|etc/usernode|etc/cni|usr)/`).MatchString(p[1]) {
			t.Errorf("%s is outside the node's dirs and the host's read-only programs", p[1])
		}
	}
}

// The node's two modes differ in drop_infra_ctr only.
func TestDegradedVsFull(t *testing.T) {
	deg, _ := render(t, Options{Degraded: true})
	full, _ := render(t, Options{})
	for p := range deg {
		if p == DefaultConfigDir+"/crio.conf" {
			continue
		}
		if !bytes.Equal(deg[p], full[p]) {
			t.Errorf("%s differs between the modes", p)
		}
	}
	dm, fm := tomltest.Raw(t, deg[DefaultConfigDir+"/crio.conf"]), tomltest.Raw(t, full[DefaultConfigDir+"/crio.conf"])
	if v, _ := tomltest.At(fm, "crio", "runtime", "drop_infra_ctr"); v != true {
		t.Errorf("full mode drop_infra_ctr = %v", v)
	}
	dm["crio"].(map[string]any)["runtime"].(map[string]any)["drop_infra_ctr"] = true
	if !reflect.DeepEqual(dm, fm) {
		t.Errorf("degraded and full differ beyond drop_infra_ctr")
	}
}

// storage.conf names the store crio.conf does, so the import (which reads
// only storage.conf) writes where crio reads.
func TestStorageConf(t *testing.T) {
	for _, tc := range []struct {
		o     Options
		mount any
		opt   []any
	}{
		{Options{}, nil, []any{}},
		{Options{MountProgram: "/usr/bin/fuse-overlayfs"}, "/usr/bin/fuse-overlayfs", []any{"overlay.mount_program=/usr/bin/fuse-overlayfs"}},
		{Options{StorageDriver: VFS}, nil, []any{}},
	} {
		files, o := render(t, tc.o)
		var s StorageConf
		tomltest.Strict(t, files[o.StoragePath()], &s)
		if !reflect.DeepEqual(&s, storageFor(o)) {
			t.Errorf("decoded %+v, want %+v", s, storageFor(o))
		}
		sm, cm := tomltest.Raw(t, files[o.StoragePath()]), tomltest.Raw(t, files[o.ConfigPath()])
		checkKeys(t, sm, []kv{
			{[]string{"storage", "driver"}, o.StorageDriver},
			{[]string{"storage", "graphroot"}, mustAt(t, cm, "crio", "root")},
			{[]string{"storage", "runroot"}, mustAt(t, cm, "crio", "runroot")},
		})
		checkKeys(t, cm, []kv{{[]string{"crio", "storage_driver"}, o.StorageDriver}, {[]string{"crio", "storage_option"}, tc.opt}})
		if got, _ := tomltest.At(sm, "storage", "options", "overlay", "mount_program"); got != tc.mount {
			t.Errorf("%+v: mount_program = %v, want %v", tc.o, got, tc.mount)
		}
	}
}

func mustAt(t *testing.T, m map[string]any, path ...string) any {
	t.Helper()
	v, ok := tomltest.At(m, path...)
	if !ok {
		t.Fatalf("no %v", path)
	}
	return v
}

func TestRegistriesAndPolicy(t *testing.T) {
	files, o := render(t, Options{})
	var r Registries
	tomltest.Strict(t, files[o.RegistriesPath()], &r)
	if !reflect.DeepEqual(r.UnqualifiedSearchRegistries, []string{"docker.io"}) {
		t.Errorf("registries = %+v", r)
	}
	var p Policy
	d := json.NewDecoder(bytes.NewReader(files[o.PolicyPath()]))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, Policy{Default: []PolicyRequirement{{Type: "insecureAcceptAnything"}}}) {
		t.Errorf("policy = %+v", p)
	}
	if len(files) != 4 {
		t.Errorf("files = %v", keys(files))
	}
}

func keys(f Files) []string {
	var out []string
	for k := range f {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestOptions(t *testing.T) {
	files, o := render(t, Options{OCIRuntime: "/usr/sbin/runc", ConfigDir: "/etc/x", StateDir: "/run/x", PauseImage: "localhost/pause:dev"})
	m := tomltest.Raw(t, files["/etc/x/crio.conf"])
	checkKeys(t, m, []kv{
		{[]string{"crio", "runtime", "default_runtime"}, "runc"},
		{[]string{"crio", "runtime", "runtimes", "runc", "runtime_path"}, "/usr/sbin/runc"},
		{[]string{"crio", "runtime", "runtimes", "runc", "runtime_root"}, "/run/runc"},
		{[]string{"crio", "api", "listen"}, "/run/x/crio.sock"},
		{[]string{"crio", "image", "pause_image"}, "localhost/pause:dev"},
		{[]string{"crio", "image", "signature_policy"}, "/etc/x/policy.json"},
	})
	if o.Address() != "/run/x/crio.sock" {
		t.Errorf("Address = %s", o.Address())
	}
	for _, bad := range []struct {
		o    Options
		want string
	}{
		{Options{}, "pinns"},
		{Options{Pinns: "pinns"}, "absolute"},
		{Options{Pinns: testPinns, StorageDriver: "btrfs"}, "btrfs"},
		{Options{Pinns: testPinns, StorageDriver: VFS, MountProgram: "/usr/bin/fuse-overlayfs"}, "mount program"},
	} {
		if _, err := Render(bad.o); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err = %v, want it to name %q", bad.o, err, bad.want)
		}
	}
}

// The environment points crio and skopeo at the same files, and keeps
// them off the host's root and /var/tmp.
func TestEnv(t *testing.T) {
	_, o := render(t, Options{})
	env := strings.Join(o.Env(), "\n")
	for _, want := range []string{
		"CONTAINERS_STORAGE_CONF=/etc/usernode/crio/storage.conf",
		"CONTAINER_REGISTRIES_CONF=/etc/usernode/crio/registries.conf",
		"CONTAINER_REGISTRIES_CONF_DIR=/etc/usernode/crio/registries.conf.d",
		"CONTAINERS_REGISTRIES_CONF=/etc/usernode/crio/registries.conf",
		"HOME=/var/lib/crio",
		"TMPDIR=/var/lib/crio/tmp",
	} {
		if !strings.Contains(env, want+"\n") && !strings.HasSuffix(env, want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
}

func TestChooseOCIRuntime(t *testing.T) {
	ver := func(v string) func(string) (string, error) { return func(string) (string, error) { return v, nil } }
	runc := func() (string, bool) { return "/usr/sbin/runc", true }
	none := func() (string, bool) { return "", false }
	for _, tc := range []struct {
		found, version string
		runc           func() (string, bool)
		want, err      string
	}{
		{"/usr/bin/crun", "1.21", none, "/usr/bin/crun", ""},
		{"/usr/bin/crun", "1.14.3", none, "/usr/bin/crun", ""},
		{"/usr/bin/crun", "1.8.1", runc, "/usr/sbin/runc", ""},
		{"/usr/bin/crun", "1.8.1", none, "", "crun 1.8.1"},
		{"/usr/sbin/runc", "", none, "/usr/sbin/runc", ""},
	} {
		got, err := chooseOCIRuntime(tc.found, ver(tc.version), tc.runc)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %s: %q, %v; want %q, %q", tc.found, tc.version, got, err, tc.want, tc.err)
		}
	}
	if _, err := chooseOCIRuntime("/usr/bin/crun", func(string) (string, error) { return "", errors.New("boom") }, runc); err == nil {
		t.Error("a crun whose version cannot be read was taken")
	}
}

// The storage choice follows doctor's kernel.overlay rule.
func TestChooseStorage(t *testing.T) {
	host := func(rel, fss, selinux string) fstest.MapFS {
		m := fstest.MapFS{"proc/sys/kernel/osrelease": {Data: []byte(rel + "\n")}, "proc/filesystems": {Data: []byte(fss)}}
		if selinux != "" {
			m["sys/fs/selinux/enforce"] = &fstest.MapFile{Data: []byte(selinux)}
		}
		return m
	}
	fuseOK := func() (string, error) { return "/usr/bin/fuse-overlayfs", nil }
	fuseNo := func() (string, error) { return "", errors.New("open /dev/fuse: permission denied") }
	overlay := "nodev\tsysfs\nnodev\toverlay\n"
	for _, tc := range []struct {
		name          string
		fs            fstest.MapFS
		fuse          func() (string, error)
		driver, mount string
	}{
		{"this host", host("6.18.44-fc-v669", overlay, ""), fuseNo, Overlay, ""},
		{"debian 12", host("6.1.0-28-amd64", overlay, "0"), fuseNo, Overlay, ""},
		{"old kernel, fuse", host("5.10.0-30-amd64", overlay, ""), fuseOK, Overlay, "/usr/bin/fuse-overlayfs"},
		{"selinux, fuse", host("6.8.0", overlay, "1"), fuseOK, Overlay, "/usr/bin/fuse-overlayfs"},
		{"no overlay, no fuse", host("6.8.0", "nodev\tsysfs\n", ""), fuseNo, VFS, ""},
		{"overlay module not loaded yet", withFile(host("6.8.0", "nodev\tsysfs\n", ""), "lib/modules/6.8.0/modules.dep",
			"kernel/fs/overlayfs/overlay.ko.zst: \n"), fuseNo, Overlay, ""},
	} {
		if d, m := chooseStorage(tc.fs, tc.fuse); d != tc.driver || m != tc.mount {
			t.Errorf("%s: %s %q; want %s %q", tc.name, d, m, tc.driver, tc.mount)
		}
	}
	if why := overlayBlockers(host("5.4.0", "", "1")); len(why) != 3 {
		t.Errorf("blockers = %v", why)
	}
}

func withFile(m fstest.MapFS, path, data string) fstest.MapFS {
	m[path] = &fstest.MapFile{Data: []byte(data)}
	return m
}

func writeArchive(t *testing.T, path string, img images.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.WriteArchive(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestArchiveName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img.tar")
	writeArchive(t, p, images.Image{Ref: "docker.io/library/busybox:usernode", Files: []images.File{{Path: "/a", Mode: 0o644, Data: []byte("x")}}})
	if got, err := ArchiveName(p); err != nil || got != "docker.io/library/busybox:usernode" {
		t.Errorf("ArchiveName = %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.tar"), []byte("not a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ArchiveName(filepath.Join(dir, "bad.tar")); err == nil {
		t.Error("a file that is no archive has a name")
	}
}

func fakeTool(t *testing.T, dir, name, out string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// Steps writes the four files under env.Root, starts crio with them and
// the rootless flag, and imports each archive under its own name after.
func TestSteps(t *testing.T) {
	bin, root := t.TempDir(), t.TempDir()
	env := nodetest.Env()
	env.Root, env.Degraded = root, true
	env.Binaries = map[string]string{
		"crio":        fakeTool(t, bin, "crio", "crio version 1.36.3"),
		"pinns":       fakeTool(t, bin, "pinns", ""),
		"conmon":      fakeTool(t, bin, "conmon", "conmon version 2.1.6"),
		"oci-runtime": fakeTool(t, bin, "runc", "runc version 1.1.5"),
		"skopeo":      fakeTool(t, bin, "skopeo", "skopeo version 1.9.3"),
		"cni-plugins": "/usr/lib/cni",
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/usernode/images"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i, ref := range []string{images.PauseRef, "docker.io/library/busybox:usernode"} {
		inside := fmt.Sprintf("/var/lib/usernode/images/%d.tar", i)
		writeArchive(t, filepath.Join(root, inside), images.Image{Ref: ref, Files: []images.File{{Path: "/a", Mode: 0o644, Data: []byte("x")}}})
		env.Images = append(env.Images, inside)
	}
	steps, err := Component{}.Steps(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 {
		t.Fatalf("steps = %+v", steps)
	}
	crio := steps[0]
	if !reflect.DeepEqual(crio.Argv, []string{env.Bin("crio"), "--config", "/etc/usernode/crio/crio.conf", "--config-dir", ""}) ||
		crio.Ready == nil || crio.Ready.Unix != DefaultAddress || !contains(crio.Env, RootlessEnv) ||
		!contains(crio.Env, "CONTAINER_REGISTRIES_CONF=/etc/usernode/crio/registries.conf") {
		t.Errorf("crio step = %+v", crio)
	}
	for i, ref := range []string{images.PauseRef, "docker.io/library/busybox:usernode"} {
		s := steps[i+1]
		want := []string{env.Bin("skopeo"), "--policy", "/etc/usernode/crio/policy.json", "--tmpdir", "/var/lib/crio/tmp",
			"copy", "oci-archive:" + env.Images[i], "containers-storage:" + ref}
		if !s.Oneshot || !reflect.DeepEqual(s.Argv, want) || !contains(s.Env, "CONTAINERS_STORAGE_CONF=/etc/usernode/crio/storage.conf") {
			t.Errorf("import %d = %+v\nwant argv %q", i, s, want)
		}
	}
	for _, f := range []string{"crio.conf", "storage.conf", "registries.conf", "policy.json"} {
		if _, err := os.Stat(filepath.Join(root, DefaultConfigDir, f)); err != nil {
			t.Error(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, DefaultConfigDir, "crio.conf"))
	if err != nil {
		t.Fatal(err)
	}
	m := tomltest.Raw(t, b)
	checkKeys(t, m, []kv{
		{[]string{"crio", "runtime", "default_runtime"}, "runc"},
		{[]string{"crio", "runtime", "runtimes", "runc", "runtime_path"}, env.Bin("oci-runtime")},
		{[]string{"crio", "runtime", "runtimes", "runc", "monitor_path"}, env.Bin("conmon")},
		{[]string{"crio", "runtime", "pinns_path"}, env.Bin("pinns")},
		{[]string{"crio", "runtime", "drop_infra_ctr"}, false},
		{[]string{"crio", "image", "pause_image"}, images.PauseRef},
	})
	if fi, err := os.Stat(filepath.Join(root, "var/lib/crio/tmp")); err != nil || !fi.IsDir() {
		t.Errorf("temporary dir: %v", err)
	}
	if !reflect.DeepEqual(CRI.New().Tools(), Component{}.Tools()) || CRI.Endpoint != "unix:///run/crio/crio.sock" {
		t.Errorf("CRI = %+v", CRI)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// crioBinary is a crio to check the config with: USERNODE_CRIO_BIN (the
// directory hack/build-crio.sh prints), USERNODE_K8S_BIN (where `make
// test` may copy it beside the Kubernetes binaries), hack/build-crio.sh's
// cache, then PATH.
func crioBinary(t *testing.T) string {
	t.Helper()
	var dirs []string
	for _, v := range []string{"USERNODE_CRIO_BIN", "USERNODE_K8S_BIN"} {
		if d := os.Getenv(v); d != "" {
			dirs = append(dirs, d)
		}
	}
	cache := os.Getenv("USERNODE_CACHE")
	if cache == "" {
		if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
			cache = filepath.Join(x, "usernode")
		} else if h, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(h, ".cache", "usernode")
		}
	}
	built, _ := filepath.Glob(filepath.Join(cache, "bin", "crio-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(built)))
	for _, d := range append(dirs, built...) {
		if p := filepath.Join(d, "crio"); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath("crio"); err == nil {
		return p
	}
	t.Skip("no crio binary: build it with hack/build-crio.sh (and set USERNODE_CRIO_BIN to the directory it prints, or leave it in its cache)")
	return ""
}

// The real crio parses crio.conf and takes every key: crio ignores
// unknown keys silently, so each key written must show in `crio config`
// (which prints the merged config, defaults commented out) with its value.
func TestCrioAcceptsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the crio binary")
	}
	bin := crioBinary(t)
	for _, degraded := range []bool{true, false} {
		dir := t.TempDir()
		files, err := Render(Options{Degraded: degraded, ConfigDir: dir, Pinns: filepath.Join(filepath.Dir(bin), "pinns"),
			MountProgram: "/usr/bin/fuse-overlayfs", OCIRuntime: "/usr/sbin/runc"})
		if err != nil {
			t.Fatal(err)
		}
		for p, b := range files {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		conf := filepath.Join(dir, "crio.conf")
		cmd := exec.Command(bin, "--config", conf, "--config-dir", "", "config")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		dump, err := cmd.Output()
		if err != nil {
			t.Fatalf("crio config: %v\n%s", err, stderr.Bytes())
		}
		checkDump(t, files[conf], dump)
	}
}

// checkDump finds each key of written in crio's dump: set to its value,
// or commented out with it when that is CRI-O's default.
func checkDump(t *testing.T, written, dump []byte) {
	t.Helper()
	got := tomltest.Raw(t, dump)
	var walk func(path []string, v any)
	walk = func(path []string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, x := range m {
				walk(append(append([]string(nil), path...), k), x)
			}
			return
		}
		key := path[len(path)-1]
		if g, ok := tomltest.At(got, path...); ok {
			if !reflect.DeepEqual(g, v) {
				t.Errorf("crio took %s as %#v, want %#v", strings.Join(path, "."), g, v)
			}
			return
		}
		line := `(?m)^\s*# ` + regexp.QuoteMeta(key) + ` = `
		if s, ok := v.(string); ok {
			line += regexp.QuoteMeta(fmt.Sprintf("%q", s)) + `$`
		}
		if !regexp.MustCompile(line).Match(dump) {
			t.Errorf("crio's config has no %s = %#v: a key it does not know, or a value it dropped", strings.Join(path, "."), v)
		}
	}
	walk(nil, tomltest.Raw(t, written))
}
