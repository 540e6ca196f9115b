package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/node/component"
)

// host describes a fixture tree plus what git cannot store in it: owners,
// setuid bits, sockets and device nodes (stat), and the answers of the
// kernel probes.
type host struct {
	tree   string
	uid    int
	user   string
	env    map[string]string
	stat   map[string]FileInfo // by host path; wins over the tree
	open   map[string]error    // OpenRW results; default success
	caps   map[string]bool
	exec   map[string]string // binary base name → --version output
	trial  error
	noTrie bool
	// runtimes are what FindRuntime answers, by runtime; one not named
	// is looked for in the tree (fixtureRuntime). cri is the model's.
	runtimes map[string]RuntimeProbe
	cri      string
}

const (
	chr    = fs.ModeDevice | fs.ModeCharDevice
	socket = fs.ModeSocket
)

func (h host) system(t *testing.T) *System {
	t.Helper()
	root := h.tree
	if !filepath.IsAbs(root) {
		root = filepath.Join("testdata", root)
	}
	s := &System{Root: root, UID: h.uid, User: h.user, Executable: "/usr/local/bin/usernode",
		Env: func(k string) string { return h.env[k] }}
	s.Stat = func(p string) (FileInfo, error) {
		if fi, ok := h.stat[p]; ok {
			return fi, nil
		}
		fi, err := os.Stat(s.path(p))
		if err != nil {
			return FileInfo{}, err
		}
		// Files in a checkout belong to whoever cloned it; on the hosts
		// the fixtures describe, they belong to root.
		return FileInfo{Mode: fi.Mode(), UID: 0}, nil
	}
	s.OpenRW = func(p string) error {
		if _, err := s.Stat(p); err != nil {
			return err
		}
		return h.open[p]
	}
	s.FileCaps = func(p string) (bool, error) { return h.caps[p], nil }
	s.Exec = func(_ context.Context, p string, args ...string) (string, error) {
		if len(args) != 1 || args[0] != "--version" {
			t.Errorf("Exec(%s, %q): doctor only asks for --version", p, args)
		}
		if !strings.HasPrefix(p, root) {
			t.Errorf("Exec(%s) outside the fixture root %s", p, root)
		}
		out, ok := h.exec[filepath.Base(p)]
		if !ok {
			return "", errors.New("exit status 1")
		}
		return out, nil
	}
	if !h.noTrie {
		s.Trial = func(context.Context) error { return h.trial }
	}
	s.CRI = h.cri
	if s.CRI == "" {
		s.CRI = "containerd"
	}
	s.FindRuntime = func(_ context.Context, rt component.Runtime) RuntimeProbe {
		if p, ok := h.runtimes[rt.Name]; ok {
			return p
		}
		return h.fixtureRuntime(s, rt)
	}
	return s
}

var versions = map[string]string{
	"containerd":  "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
	"runc":        "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n",
	"crun":        "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n",
	"slirp4netns": "slirp4netns version 1.2.0\ncommit: 656041d45cfca7a4176f6b7eed9e4fe6c11e8383\n",
	"pasta":       "pasta unknown version\nCopyright Red Hat\nGNU General Public License, version 2 or later\n",
	"iptables":    "iptables v1.8.9 (nf_tables)\n",
}

// thisVM is the Firecracker VM the integration test runs on.
func thisVM() host {
	return host{
		tree: "hybrid", uid: 1001, user: "usernode-test",
		env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/1001", "PATH": "/usr/local/bin:/usr/bin:/bin"},
		stat: map[string]FileInfo{
			"/run/user/1001":     {Mode: fs.ModeDir | 0o700, UID: 1001},
			"/usr/bin/newuidmap": {Mode: fs.ModeSetuid | 0o755},
			"/usr/bin/newgidmap": {Mode: fs.ModeSetuid | 0o755},
			"/dev/net/tun":       {Mode: chr | 0o600},
			"/dev/fuse":          {Mode: chr | 0o600},
		},
		open: map[string]error{"/dev/net/tun": unix.EACCES, "/dev/fuse": unix.EACCES},
		exec: versions,
	}
}

func debian12() host {
	return host{
		tree: "debian12", uid: 1000, user: "alice",
		env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "PATH": "/usr/bin:/bin"},
		stat: map[string]FileInfo{
			"/run/user/1000":                 {Mode: fs.ModeDir | 0o700, UID: 1000},
			"/run/user/1000/systemd/private": {Mode: socket | 0o755, UID: 1000},
			"/run/user/1000/bus":             {Mode: socket | 0o666, UID: 1000},
			"/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service": {Mode: fs.ModeDir | 0o755, UID: 1000},
			"/usr/bin/newuidmap": {Mode: 0o755},
			"/usr/bin/newgidmap": {Mode: 0o755},
			"/dev/net/tun":       {Mode: chr | 0o666},
			"/dev/fuse":          {Mode: chr | 0o666},
		},
		// Fedora ships the helpers with file capabilities, not setuid.
		caps: map[string]bool{"/usr/bin/newuidmap": true, "/usr/bin/newgidmap": true},
		exec: versions,
	}
}

func ubuntu2404() host {
	h := debian12()
	h.tree = "ubuntu2404"
	h.stat["/usr/bin/newuidmap"] = FileInfo{Mode: fs.ModeSetuid | 0o755}
	h.stat["/usr/bin/newgidmap"] = FileInfo{Mode: fs.ModeSetuid | 0o755}
	h.caps = nil
	return h
}

func subidOnly(tree string) host {
	return host{tree: tree, uid: 1000, user: "alice"}
}

type want struct {
	status Status
	found  string // substring of Found
	debian string // substring of Fix.Debian ("" = no assertion)
	fedora string // substring of Fix.Fedora
	noFix  bool
}

func TestChecks(t *testing.T) {
	cases := []struct {
		name string
		host host
		want map[string]want
	}{
		{"hybrid", thisVM(), map[string]want{
			"cgroup.v2": {status: Fail, found: "hybrid hierarchy: cgroup v1 controllers (cpu,cpuacct,cpuset,memory,devices,freezer,blkio,pids,name=systemd)",
				debian: "# make this host's init mount only cgroup2 at /sys/fs/cgroup"},
			"cgroup.delegation":                            {status: Skip, found: "needs cgroup v2", noFix: true},
			"systemd.runtime-dir":                          {status: Pass, found: "XDG_RUNTIME_DIR=/run/user/1001, owned by uid 1001, mode 0700"},
			"systemd.user-manager":                         {status: Fail, found: "PID 1 is process_api, not systemd"},
			"systemd.linger":                               {status: Skip, found: "PID 1 is process_api, not systemd"},
			"systemd.dbus":                                 {status: Warn, found: "/run/user/1001/bus is missing", debian: "apt-get install -y dbus-user-session", fedora: "dnf install -y dbus-daemon"},
			"subid.subuid":                                 {status: Pass, found: "usernode-test:1000131072:65536 (line 1): 65536 IDs"},
			"subid.subgid":                                 {status: Pass, found: "usernode-test:1000131072:65536 (line 1)"},
			"subid.helpers":                                {status: Pass, found: "/usr/bin/newuidmap (setuid root), /usr/bin/newgidmap (setuid root)"},
			"sysctl.unprivileged_userns_clone":             {status: Skip, found: "not present"},
			"sysctl.max_user_namespaces":                   {status: Pass, found: "= 96365"},
			"sysctl.apparmor_restrict_unprivileged_userns": {status: Skip, found: "not present"},
			"sysctl.ip_unprivileged_port_start": {status: Warn, found: "host ports below 1024 (such as 80 and 443) cannot be forwarded",
				debian: "sysctl -w net.ipv4.ip_unprivileged_port_start=0\necho 'net.ipv4.ip_unprivileged_port_start = 0' > /etc/sysctl.d/"},
			"sysctl.ip_forward": {status: Info, found: "host net.ipv4.ip_forward = 0", noFix: true},
			"kernel.userns":     {status: Pass},
			"kernel.overlay":    {status: Pass, found: "kernel 6.18.44-fc-v669 mounts overlayfs in a user namespace"},
			"kernel.tun": {status: Fail, found: `permission denied (mode 0600, owner uid 0): slirp4netns and pasta fail with "open: Permission denied"`,
				debian: "chmod 0666 /dev/net/tun\n# persist it across reboots:\necho 'KERNEL==\"tun\", MODE=\"0666\", OPTIONS+=\"static_node=tun\"' > /etc/udev/rules.d/99-usernode-tun.rules"},
			"kernel.modules":   {status: Pass, found: "bridge: loaded (/sys/module/bridge); veth: built-in (CONFIG_VETH=y); iptables nat: built-in (CONFIG_IP_NF_NAT=y); vxlan: loaded (/sys/module/vxlan); br_netfilter: built-in (CONFIG_BRIDGE_NETFILTER=y)"},
			"binary.cri":       {status: Pass, found: "containerd [configured] 1.6.20 (/usr/bin/containerd): full and degraded mode"},
			"binary.oci":       {status: Pass, found: "runc 1.1.5 (/usr/sbin/runc), crun 1.8.1 (/usr/bin/crun)"},
			"binary.network":   {status: Pass, found: "slirp4netns 1.2.0 (/usr/bin/slirp4netns), pasta version unknown (/usr/bin/pasta)"},
			"binary.cni":       {status: Pass, found: "bridge, host-local, loopback, portmap in /usr/lib/cni"},
			"binary.iptables":  {status: Pass, found: "iptables 1.8.9"},
			"trial.namespaces": {status: Pass},
		}},
		{"debian12", debian12(), map[string]want{
			"cgroup.v2": {status: Pass, found: "cgroup2 mounted at /sys/fs/cgroup (controllers: cpuset cpu io memory hugetlb pids rdma misc)"},
			"cgroup.delegation": {status: Warn, found: "user@1000.service delegates: cpu memory pids; missing cpuset and io",
				debian: "cat > /etc/systemd/system/user@.service.d/delegate.conf <<'EOF'\n[Service]\nDelegate=cpu cpuset io memory pids\nEOF\nsystemctl daemon-reload"},
			"systemd.runtime-dir":                          {status: Pass},
			"systemd.user-manager":                         {status: Pass, found: "/run/user/1000/systemd/private"},
			"systemd.linger":                               {status: Pass},
			"systemd.dbus":                                 {status: Pass},
			"subid.subuid":                                 {status: Pass, found: "alice:100000:65536"},
			"subid.helpers":                                {status: Pass, found: "/usr/bin/newuidmap (file capabilities)"},
			"sysctl.unprivileged_userns_clone":             {status: Pass, found: "= 1"},
			"sysctl.apparmor_restrict_unprivileged_userns": {status: Skip},
			"kernel.overlay":                               {status: Pass, found: "kernel 6.1.0-28-amd64"},
			"kernel.tun":                                   {status: Pass, found: "character device, mode 0666"},
			"kernel.modules": {status: Warn, found: "bridge: loaded (/sys/module/bridge); veth: loaded (/sys/module/veth); iptables nat: module (/lib/modules/6.1.0-28-amd64/modules.dep); vxlan: module",
				debian: "modprobe -a iptable_nat vxlan br_netfilter\nprintf '%s\\n' iptable_nat vxlan br_netfilter > /etc/modules-load.d/usernode.conf"},
			"binary.oci":       {status: Pass, found: "runc 1.1.5"},
			"binary.network":   {status: Pass, found: "slirp4netns 1.2.0"},
			"trial.namespaces": {status: Pass},
		}},
		{"ubuntu2404", ubuntu2404(), map[string]want{
			"cgroup.delegation": {status: Pass, found: "delegates: cpuset cpu io memory pids"},
			"systemd.linger":    {status: Warn, debian: "loginctl enable-linger alice"},
			"sysctl.apparmor_restrict_unprivileged_userns": {status: Fail, found: "= 1 and no /etc/apparmor.d/usernode allowing userns",
				debian: "cat > /etc/apparmor.d/usernode <<'EOF'\nabi <abi/4.0>,\ninclude <tunables/global>\n\nprofile usernode \"/usr/local/bin/usernode\" flags=(unconfined) {\n  userns,\n",
				fedora: "no such sysctl"},
			"sysctl.ip_unprivileged_port_start": {status: Pass, found: "= 80"},
			"kernel.overlay":                    {status: Pass, found: "6.8.0-45-generic"},
			"binary.oci":                        {status: Pass, found: "runc 1.1.5 (/usr/sbin/runc), crun 1.8.1 (/usr/bin/crun)"},
		}},
		{"nosubid", subidOnly("nosubid"), map[string]want{
			// 100000.. and 165536.. are bob's and carol's: the next free block.
			"subid.subuid": {status: Fail, found: "no entry for alice (uid 1000) in /etc/subuid",
				debian: "usermod --add-subuids 231072-296607 --add-subgids 231072-296607 alice", fedora: "usermod --add-subuids 231072-296607 --add-subgids 231072-296607 alice"},
			"subid.subgid": {status: Fail, found: "no entry for alice (uid 1000) in /etc/subgid",
				debian: "usermod --add-subuids 231072-296607 --add-subgids 231072-296607 alice"},
		}},
		{"subuid-malformed", subidOnly("subuid-malformed"), map[string]want{
			"subid.subuid": {status: Fail, found: `the entry for alice in /etc/subuid is malformed: line 3 "alice:100000": want owner:start:count`,
				debian: "usermod --add-subuids 231072-296607 alice"},
			"subid.subgid": {status: Warn, found: `/etc/subgid has 1 malformed line, which newuidmap ignores: line 3 "this is not a subid line"`},
		}},
		{"subuid-missing", subidOnly("subuid-missing"), map[string]want{
			"subid.subuid": {status: Fail, found: "/etc/subuid does not exist", debian: "touch /etc/subuid\nusermod --add-subuids 165536-231071 alice"},
			"subid.subgid": {status: Pass, found: "alice:100000:65536"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			for id := range tc.want {
				ids = append(ids, id)
			}
			rep := Run(context.Background(), tc.host.system(t), ids...)
			for id, w := range tc.want {
				r, ok := rep.Get(id)
				if !ok {
					t.Errorf("%s: no result", id)
					continue
				}
				assertResult(t, r, w)
			}
		})
	}
}

func assertResult(t *testing.T, r Result, w want) {
	t.Helper()
	if r.Status != w.status {
		t.Errorf("%s: status %s, want %s (found: %s)", r.ID, r.Status, w.status, r.Found)
	}
	if !strings.Contains(r.Found, w.found) {
		t.Errorf("%s: found %q, want it to contain %q", r.ID, r.Found, w.found)
	}
	if w.noFix && r.Fix != nil {
		t.Errorf("%s: unexpected fix %+v", r.ID, *r.Fix)
	}
	if (w.debian != "" || w.fedora != "") && r.Fix == nil {
		t.Errorf("%s: no fix, want one containing %q", r.ID, w.debian+w.fedora)
		return
	}
	if w.debian != "" && !strings.Contains(r.Fix.Debian, w.debian) {
		t.Errorf("%s: Debian fix\n%s\nwant it to contain\n%s", r.ID, r.Fix.Debian, w.debian)
	}
	if w.fedora != "" && !strings.Contains(r.Fix.Fedora, w.fedora) {
		t.Errorf("%s: Fedora fix\n%s\nwant it to contain\n%s", r.ID, r.Fix.Fedora, w.fedora)
	}
	if r.Status != Pass && r.Status != Skip && r.Status != Info && r.Why == "" {
		t.Errorf("%s: %s without a why", r.ID, r.Status)
	}
}

// Every check must give a verdict on a tree that has nothing at all, not
// crash or pass by accident.
func TestEmptyHost(t *testing.T) {
	h := host{tree: t.TempDir(), uid: 1000, user: "alice", noTrie: true}
	rep := Run(context.Background(), h.system(t))
	if len(rep.Checks) != len(IDs()) {
		t.Fatalf("%d results, want %d", len(rep.Checks), len(IDs()))
	}
	for _, r := range rep.Checks {
		if strings.Contains(r.Found, "crashed") {
			t.Errorf("%s crashed: %s", r.ID, r.Found)
		}
		if r.Status == Pass && r.ID != "sysctl.ip_forward" {
			t.Errorf("%s passes on an empty host: %s", r.ID, r.Found)
		}
	}
	for id, st := range map[string]Status{
		"cgroup.v2": Fail, "systemd.runtime-dir": Fail, "subid.subuid": Fail, "subid.helpers": Fail,
		"kernel.userns": Fail, "kernel.tun": Fail, "kernel.modules": Warn, "binary.cri": Fail,
		"binary.cni": Fail, "trial.namespaces": Skip, "sysctl.max_user_namespaces": Fail,
	} {
		if r, _ := rep.Get(id); r.Status != st {
			t.Errorf("%s = %s (%s), want %s", id, r.Status, r.Found, st)
		}
	}
	if rep.Summary.Mode != "blocked" || !rep.Failed() {
		t.Errorf("summary %+v, want blocked", rep.Summary)
	}
}

// writeTree makes a fixture from a map of files, for cases that differ
// from a checked-in tree in one file.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSubIDCases(t *testing.T) {
	cases := []struct {
		name          string
		subuid        string
		user          string
		uid           int
		subuidWant    want
		subgidWantSts Status
	}{
		{"short range", "alice:100000:1000\n", "alice", 1000,
			want{status: Fail, found: "alice:100000:1000 (line 1): 1000 IDs, need at least 65536", debian: "usermod --add-subuids 101000-166535 --add-subgids 101000-166535 alice"}, Fail},
		{"two ranges add up", "alice:100000:30000\nalice:200000:35536\n", "alice", 1000,
			want{status: Pass, found: "65536 IDs"}, Fail},
		{"by uid", "1000:100000:65536\n", "alice", 1000, want{status: Pass, found: "1000:100000:65536"}, Fail},
		{"overlap", "bob:100000:65536\nalice:150000:65536\n", "alice", 1000,
			want{status: Fail, found: "alice:150000:65536 (line 2) overlaps bob:100000:65536 (line 1)",
				debian: "usermod --del-subuids 150000-215535 --add-subuids 215536-281071 --add-subgids 215536-281071 alice"}, Fail},
		{"hostile user name", "", "a'b;rm", 1000,
			want{status: Fail, debian: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 'a'\''b;rm'`}, Fail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, map[string]string{"etc/subuid": tc.subuid, "etc/subgid": ""})
			h := host{tree: dir, uid: tc.uid, user: tc.user}
			rep := Run(context.Background(), h.system(t), "subid.subuid", "subid.subgid")
			r, _ := rep.Get("subid.subuid")
			assertResult(t, r, tc.subuidWant)
			if g, _ := rep.Get("subid.subgid"); g.Status != tc.subgidWantSts {
				t.Errorf("subgid %s, want %s", g.Status, tc.subgidWantSts)
			}
		})
	}
}

func TestHelpersStripped(t *testing.T) {
	h := thisVM()
	h.stat["/usr/bin/newuidmap"] = FileInfo{Mode: 0o755}
	h.stat["/usr/bin/newgidmap"] = FileInfo{Mode: 0o755}
	r, _ := Run(context.Background(), h.system(t), "subid.helpers").Get("subid.helpers")
	assertResult(t, r, want{status: Fail, found: "/usr/bin/newuidmap is neither setuid root nor has file capabilities",
		debian: "chmod u+s /usr/bin/newuidmap /usr/bin/newgidmap"})

	h = host{tree: writeTree(t, map[string]string{"etc/os-release": "ID=fedora\n"}), uid: 1000, user: "alice"}
	r, _ = Run(context.Background(), h.system(t), "subid.helpers").Get("subid.helpers")
	assertResult(t, r, want{status: Fail, found: "newuidmap not found", debian: "apt-get install -y uidmap", fedora: "dnf install -y shadow-utils"})
}

func TestRuntimeDirAndSysctls(t *testing.T) {
	h := thisVM()
	h.stat["/run/user/1001"] = FileInfo{Mode: fs.ModeDir | 0o755, UID: 1001}
	r, _ := Run(context.Background(), h.system(t), "systemd.runtime-dir").Get("systemd.runtime-dir")
	assertResult(t, r, want{status: Warn, found: "mode 0755, want 0700", debian: "chmod 0700 /run/user/1001"})
	h.stat["/run/user/1001"] = FileInfo{Mode: fs.ModeDir | 0o700, UID: 0}
	r, _ = Run(context.Background(), h.system(t), "systemd.runtime-dir").Get("systemd.runtime-dir")
	assertResult(t, r, want{status: Fail, found: "owned by uid 0, not 1001"})
	delete(h.env, "XDG_RUNTIME_DIR")
	r, _ = Run(context.Background(), h.system(t), "systemd.runtime-dir").Get("systemd.runtime-dir")
	assertResult(t, r, want{status: Fail, found: "not set", debian: "export XDG_RUNTIME_DIR=/run/user/1001"})

	dir := writeTree(t, map[string]string{
		"proc/sys/kernel/unprivileged_userns_clone":             "0\n",
		"proc/sys/user/max_user_namespaces":                     "100\n",
		"proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n",
		"etc/apparmor.d/usernode":                               "profile usernode /usr/local/bin/usernode flags=(unconfined) {\n  userns,\n}\n",
	})
	rep := Run(context.Background(), host{tree: dir, uid: 1000, user: "alice"}.system(t))
	for id, w := range map[string]want{
		"sysctl.unprivileged_userns_clone":             {status: Fail, debian: "sysctl -w kernel.unprivileged_userns_clone=1"},
		"sysctl.max_user_namespaces":                   {status: Warn, found: "= 100 (doctor warns below 1000)", debian: "sysctl -w user.max_user_namespaces=28633"},
		"sysctl.apparmor_restrict_unprivileged_userns": {status: Pass, found: "/etc/apparmor.d/usernode allows userns"},
	} {
		r, _ := rep.Get(id)
		assertResult(t, r, w)
	}
}

func TestOverlayFallback(t *testing.T) {
	h := thisVM()
	dir := writeTree(t, map[string]string{
		"proc/sys/kernel/osrelease": "5.10.0-30-amd64\n",
		"proc/filesystems":          "nodev\toverlay\n",
		"sys/fs/selinux/enforce":    "1\n",
	})
	h.tree = dir
	h.stat = map[string]FileInfo{"/dev/fuse": {Mode: chr | 0o600}}
	r, _ := Run(context.Background(), h.system(t), "kernel.overlay").Get("kernel.overlay")
	assertResult(t, r, want{status: Warn, found: `kernel "5.10.0-30-amd64" is older than 5.11 (the first to allow overlayfs in a user namespace); SELinux is enforcing`,
		debian: "apt-get install -y fuse-overlayfs\nchmod 0666 /dev/fuse", fedora: "dnf install -y fuse-overlayfs"})

	// With the binary and a usable /dev/fuse, fuse-overlayfs covers it.
	h.tree = "hybrid"
	h.open = nil
	h.stat["/proc/sys/kernel/osrelease"] = FileInfo{}
	dir2 := writeTree(t, map[string]string{"proc/sys/kernel/osrelease": "5.4.0\n", "usr/bin/fuse-overlayfs": ""})
	if err := os.Chmod(filepath.Join(dir2, "usr/bin/fuse-overlayfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.tree = dir2
	h.env = map[string]string{"PATH": "/usr/bin"}
	r, _ = Run(context.Background(), h.system(t), "kernel.overlay").Get("kernel.overlay")
	assertResult(t, r, want{status: Pass, found: "using fuse-overlayfs (/usr/bin/fuse-overlayfs)"})
}

func TestTunMissingAndModulesUnknown(t *testing.T) {
	h := host{tree: writeTree(t, map[string]string{"proc/sys/kernel/osrelease": "6.6.0\n"}), uid: 1000, user: "alice"}
	rep := Run(context.Background(), h.system(t), "kernel.tun", "kernel.modules")
	r, _ := rep.Get("kernel.tun")
	assertResult(t, r, want{status: Fail, found: "/dev/net/tun", debian: "modprobe tun"})
	r, _ = rep.Get("kernel.modules")
	assertResult(t, r, want{status: Warn, found: "bridge: unknown (no /sys/module entry, /proc/config.gz or /lib/modules/6.6.0)"})

	// A kernel config that lacks bridge is a definite answer.
	h = host{tree: writeTree(t, map[string]string{"proc/sys/kernel/osrelease": "6.6.0\n", "boot/config-6.6.0": "CONFIG_VETH=y\n# CONFIG_BRIDGE is not set\nCONFIG_IP_NF_NAT=y\n"}), uid: 1000, user: "alice"}
	r, _ = Run(context.Background(), h.system(t), "kernel.modules").Get("kernel.modules")
	assertResult(t, r, want{status: Fail, found: "bridge: absent"})
}

// A containerd older than usernode configures is no runtime (`up`'s
// config for it is refused), so with no other one the node cannot run.
func TestOldCRI(t *testing.T) {
	h := thisVM()
	h.exec = map[string]string{"containerd": "containerd containerd.io v1.3.9 ea765aba0d05254012b0b9e595e995c09186427f\n"}
	r, _ := Run(context.Background(), h.system(t), "binary.cri").Get("binary.cri")
	assertResult(t, r, want{status: Fail, found: "containerd 1.3.9 is older than 1.4", debian: "apt-get install -y containerd"})
}

func TestTrialError(t *testing.T) {
	h := thisVM()
	h.trial = errors.New("newuidmap: write to uid_map failed: Operation not permitted")
	r, _ := Run(context.Background(), h.system(t), "trial.namespaces").Get("trial.namespaces")
	assertResult(t, r, want{status: Fail, found: "newuidmap: write to uid_map failed: Operation not permitted"})
}

func TestOutputs(t *testing.T) {
	// With /dev/net/tun usable, only cgroup-related checks fail: the node
	// runs degraded.
	h := thisVM()
	h.open = nil
	if rep := Run(context.Background(), h.system(t)); !rep.Failed() || rep.Summary.Mode != "degraded" || rep.Summary.Fail != 2 {
		t.Errorf("summary %+v: want 2 FAILs, degraded", rep.Summary)
	}
	rep := Run(context.Background(), thisVM().system(t))
	if !rep.Failed() || rep.Summary.Mode != "blocked" || rep.Summary.OS != "debian" {
		t.Errorf("summary %+v: want failed, blocked (by /dev/net/tun), debian", rep.Summary)
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Checks []struct {
			ID, Category, Title, Status, Found, Why string
			Fix                                     *struct{ Debian, Fedora string }
			Root                                    *bool
		}
		Summary map[string]any
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Checks) != len(IDs()) || doc.Checks[0].ID != "cgroup.v2" || doc.Checks[0].Fix == nil || doc.Checks[0].Root == nil || !*doc.Checks[0].Root {
		t.Errorf("JSON checks: %+v", doc.Checks[0])
	}
	for _, k := range []string{"pass", "warn", "fail", "skip", "info", "mode", "os"} {
		if _, ok := doc.Summary[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}

	var tb bytes.Buffer
	if err := rep.WriteTable(&tb, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tb.String(), "\x1b[") || !strings.Contains(tb.String(), "  FAIL  cgroup v2 at /sys/fs/cgroup\n") || !strings.Contains(tb.String(), "degraded mode") {
		t.Errorf("table:\n%s", tb.String())
	}
	tb.Reset()
	if err := rep.WriteTable(&tb, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "\x1b[31;1mFAIL\x1b[0m") {
		t.Error("colored table has no red FAIL")
	}

	var sc bytes.Buffer
	if err := rep.WriteScript(&sc); err != nil {
		t.Fatal(err)
	}
	s := sc.String()
	if !strings.HasPrefix(s, "#!/bin/sh\n") || !strings.Contains(s, "\nset -eu\n") {
		t.Errorf("script header:\n%s", s)
	}
	for _, sub := range []string{"chmod 0666 /dev/net/tun", "# make this host's init mount only cgroup2", "apt-get install -y dbus-user-session"} {
		if !strings.Contains(s, sub) {
			t.Errorf("script lacks %q:\n%s", sub, s)
		}
	}
	if strings.Contains(s, "export XDG_RUNTIME_DIR") || strings.Contains(s, "dnf ") {
		t.Errorf("script has a user fix or a Fedora command:\n%s", s)
	}
}

func TestScriptDedupesAndQuotes(t *testing.T) {
	h := subidOnly("nosubid")
	h.user = "evil$(id)\nuser"
	rep := Run(context.Background(), h.system(t), "subid.subuid", "subid.subgid")
	var sc bytes.Buffer
	if err := rep.WriteScript(&sc); err != nil {
		t.Fatal(err)
	}
	s := sc.String()
	if n := strings.Count(s, "usermod "); n != 1 {
		t.Errorf("usermod appears %d times, want once:\n%s", n, s)
	}
	if !strings.Contains(s, "usermod --add-subuids 231072-296607 --add-subgids 231072-296607 'evil$(id)\nuser'\n") {
		t.Errorf("user name not single-quoted:\n%s", s)
	}
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "user (") {
			t.Errorf("a finding escaped its comment line: %q", l)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"alice": "alice", "a b": "'a b'", "it's": `'it'\''s'`, "-rf": "'-rf'", "": "''", "/run/user/1000": "/run/user/1000"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCgroupV2OnSystemdHosts(t *testing.T) {
	mi, err := os.ReadFile("testdata/hybrid/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	legacy := "25 22 0:21 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n26 22 0:22 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
	for _, tc := range []struct {
		name, mountinfo string
		want            want
	}{
		{"hybrid", string(mi), want{status: Fail, found: "hybrid hierarchy",
			debian: "grep -q 'systemd.unified_cgroup_hierarchy=1' /etc/default/grub || sed -i 's/^GRUB_CMDLINE_LINUX=\"/&systemd.unified_cgroup_hierarchy=1 /' /etc/default/grub\nupdate-grub",
			fedora: "grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1"}},
		{"legacy", legacy, want{status: Fail, found: "cgroup v1 only (memory,pids); no cgroup2 mount", fedora: "grubby"}},
		{"unreadable", "", want{status: Fail, found: "cannot read the mount table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"proc/1/comm": "systemd\n"}
			if tc.mountinfo != "" {
				files["proc/self/mountinfo"] = tc.mountinfo
			}
			h := host{tree: writeTree(t, files), uid: 1000, user: "alice"}
			rep := Run(context.Background(), h.system(t), "cgroup.v2", "cgroup.delegation")
			r, _ := rep.Get("cgroup.v2")
			assertResult(t, r, tc.want)
			if !r.DegradedOnly || rep.Summary.Mode != "degraded" {
				t.Errorf("cgroup FAIL should leave degraded mode: %+v", rep.Summary)
			}
		})
	}
}

// A delegated tree without the required controllers, and a user whose
// manager is not running, FAIL but only cost full mode.
func TestDelegationFailures(t *testing.T) {
	h := debian12()
	h.stat["/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service"] = FileInfo{Mode: fs.ModeDir | 0o755, UID: 0}
	r, _ := Run(context.Background(), h.system(t), "cgroup.delegation").Get("cgroup.delegation")
	assertResult(t, r, want{status: Fail, found: "no cgroup owned by uid 1000", debian: "loginctl enable-linger alice\nmkdir -p /etc/systemd/system/user@.service.d"})

	dir := writeTree(t, map[string]string{
		"proc/self/mountinfo": "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		"proc/self/cgroup":    "0::/user.slice/user-1000.slice/session-3.scope\n",
		"sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers": "memory pids\n",
	})
	h = host{tree: dir, uid: 1000, user: "alice", stat: map[string]FileInfo{
		"/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service": {Mode: fs.ModeDir | 0o755, UID: 1000}}}
	r, _ = Run(context.Background(), h.system(t), "cgroup.delegation").Get("cgroup.delegation")
	assertResult(t, r, want{status: Fail, found: "delegates: memory pids (this process is in /user.slice/user-1000.slice/session-3.scope, outside it; usernode starts itself under the user manager); missing cpu",
		debian: "systemctl restart user@1000.service"})
	if !r.DegradedOnly {
		t.Error("delegation FAIL should only cost full mode")
	}
}

// Doctor checks for what the registries say the node runs: the runtimes
// `up` can configure and the user-mode network drivers.
func TestChecksFollowRegistries(t *testing.T) {
	titles := map[string]string{}
	for _, c := range catalogue() {
		titles[c.id] = c.title
	}
	if got := titles["binary.cri"]; got != "CRI runtime (containerd or crio)" {
		t.Errorf("binary.cri title %q", got)
	}
	if got := titles["binary.network"]; got != "network driver (slirp4netns or pasta)" {
		t.Errorf("binary.network title %q", got)
	}
}
