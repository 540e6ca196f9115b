package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/sandbox"
)

// treeHash hashes names, modes and contents of a host directory tree, so a
// test can show the sandbox left it untouched.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	// What cannot be read is left out, the same way each time: a hash.Hash's
	// Write never fails, and a file that cannot be read counts by its name,
	// mode and size.
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		_, _ = fmt.Fprintf(h, "%s %v %d\n", p, info.Mode(), info.Size())
		if info.Mode().IsRegular() {
			if f, err := os.Open(p); err == nil {
				_, _ = io.Copy(h, f)
				_ = f.Close() // read only
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hostMounts is the test process's mount table, by mount ID.
func hostMounts(t *testing.T) map[int]*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[int]*mountinfo.Info, len(infos))
	for _, i := range infos {
		m[i.ID] = i
	}
	return m
}

// checkMountsLeft fails t for each mount in the host's table that was not
// in before, naming it. Network namespaces' nsfs mounts are not counted:
// a node (a non-root user in the host's mount namespace) cannot make one,
// while anything else on the machine run as root may (bench-multinode's
// hosts under /run/netns, run beside the tests, once made a count of all
// lines fail, 22 vs 21, with no leak).
func checkMountsLeft(t *testing.T, what string, before map[int]*mountinfo.Info) {
	t.Helper()
	for _, m := range mountsLeft(t, before) {
		t.Errorf("%s: a mount was left on the host: %s", what, m)
	}
}

// mountsLeft are the host's mounts that were not there before, each as
// "MOUNTPOINT (FSTYPE from SOURCE)".
func mountsLeft(t *testing.T, before map[int]*mountinfo.Info) []string {
	t.Helper()
	var left []string
	for id, i := range hostMounts(t) {
		if before[id] == nil && i.FSType != "nsfs" {
			left = append(left, fmt.Sprintf("%s (%s from %s)", i.Mountpoint, i.FSType, i.Source))
		}
	}
	return left
}

func TestSandboxRun(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	bin := testutil.Binary(t)
	etcBefore := treeHash(t, "/etc")
	mountsBefore := hostMounts(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)

	script := `set -e
id -u
cat /proc/self/uid_map
for d in /etc /run /tmp /var/log /var/lib/kubelet /var/lib/cni /var/lib/containerd /var/lib/containers; do
  echo probe > $d/usernode-probe && echo "writable $d"
done
echo kept > /var/lib/kubelet/kept
hostname`
	r := env.Run(t, time.Minute, bin, "sandbox", "run", "--name", "t1", "--", "sh", "-c", script)
	if r.Code != 0 {
		t.Fatalf("sandbox run: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if lines[0] != "0" {
		t.Errorf("id -u inside = %q, want 0", lines[0])
	}
	// uid_map: the user's uid as 0, the full subuid range from 1.
	if f := strings.Fields(lines[1]); len(f) != 3 || f[0] != "0" || f[1] != fmt.Sprint(u.UID) || f[2] != "1" {
		t.Errorf("uid_map line 1 = %q, want 0 %d 1", lines[1], u.UID)
	}
	if f := strings.Fields(lines[2]); len(f) != 3 || f[0] != "1" || f[2] != "65536" {
		t.Errorf("uid_map line 2 = %q, want 1 <start> 65536", lines[2])
	}
	for _, d := range []string{"/etc", "/run", "/tmp", "/var/log", "/var/lib/kubelet", "/var/lib/cni", "/var/lib/containerd", "/var/lib/containers"} {
		if !strings.Contains(r.Stdout, "writable "+d+"\n") {
			t.Errorf("%s not writable inside:\n%s", d, r.Stdout)
		}
		if _, err := os.Stat(filepath.Join(d, "usernode-probe")); err == nil {
			t.Errorf("the probe written inside leaked to the host's %s", d)
		}
	}
	if lines[len(lines)-1] != "t1" {
		t.Errorf("hostname inside = %q, want the node name t1", lines[len(lines)-1])
	}
	if !strings.Contains(r.Stderr, "DEGRADED MODE") || !strings.Contains(r.Stderr, "hybrid") {
		t.Errorf("degraded mode not reported on this hybrid host:\n%s", r.Stderr)
	}
	if got := treeHash(t, "/etc"); got != etcBefore {
		t.Errorf("host /etc changed")
	}
	checkMountsLeft(t, "after the sandbox", mountsBefore)
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
		t.Errorf("processes left after the command exited: %v", left)
	}
	// State under the data dir is the user's, private, and survives.
	state := filepath.Join(env.DataHome, "usernode", "t1")
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir %s: %v, want mode 0700", state, fi)
	}
	r = env.Run(t, time.Minute, bin, "sandbox", "run", "--name", "t1", "--", "cat", "/var/lib/kubelet/kept")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "kept" {
		t.Errorf("/var/lib/kubelet did not persist across runs: %s", r)
	}
	r = env.Run(t, time.Minute, bin, "sandbox", "run", "--name", "t1", "--", "sh", "-c", "exit 7")
	if r.Code != 7 {
		t.Errorf("exit code of the command = %d, want 7", r.Code)
	}
}

// background starts a long-lived sandbox and waits until it is ready.
func background(t *testing.T, env *testutil.Env, name string) (*sandbox.State, func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := env.Command(ctx, testutil.Binary(t), "sandbox", "run", "--name", name, "--", "sleep", "600")
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "ready") {
				ready <- true
			}
		}
		close(ready)
	}()
	wait := func() (int, string) {
		_ = c.Wait() // the exit code is read from c.ProcessState
		cancel()
		return c.ProcessState.ExitCode(), log.String()
	}
	t.Cleanup(func() {
		_ = c.Process.Signal(syscall.SIGKILL) // a no-op once it has exited
		wait()
	})
	select {
	case ok := <-ready:
		if !ok {
			_, l := wait()
			t.Fatalf("sandbox never became ready:\n%s", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sandbox not ready after 30s")
	}
	st, err := sandbox.ReadState(filepath.Join(env.RuntimeDir, "usernode", name))
	if err != nil {
		t.Fatal(err)
	}
	return st, wait
}

func TestSandboxEnterAndTeardown(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	bin := testutil.Binary(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	st, wait := background(t, env, "t2")
	if st.Cgroup.Mode != "degraded" {
		t.Errorf("state records cgroup mode %q, want degraded on this host", st.Cgroup.Mode)
	}
	if fi, err := os.Stat(filepath.Join(env.RuntimeDir, "usernode", "t2")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("runtime dir: %v %v, want 0700", fi, err)
	}

	// enter lands in the same namespaces as the node's init.
	kinds := []string{"user", "mnt", "net", "uts", "ipc", "pid", "cgroup"}
	args := []string{"enter", "--name", "t2", "--", "readlink"}
	for _, k := range kinds {
		args = append(args, "/proc/self/ns/"+k)
	}
	r := env.Run(t, 30*time.Second, bin, args...)
	if r.Code != 0 {
		t.Fatalf("enter: %s", r)
	}
	got := strings.Fields(r.Stdout)
	for i, k := range kinds {
		want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", st.Init, k))
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(got) || got[i] != want {
			t.Errorf("enter's %s namespace = %v, want %s (init's)", k, got, want)
		}
	}
	if r := env.Run(t, 30*time.Second, bin, "enter", "--name", "t2", "--", "id", "-u"); strings.TrimSpace(r.Stdout) != "0" {
		t.Errorf("enter runs as %q, want 0: %s", r.Stdout, r)
	}
	// The caller's session variables name host paths the node cannot see.
	if r := env.Run(t, 30*time.Second, bin, "enter", "--name", "t2", "--", "env"); strings.Contains(r.Stdout, "XDG_RUNTIME_DIR") || !strings.Contains(r.Stdout, "HOME=/root") {
		t.Errorf("enter's environment:\n%s", r.Stdout)
	}

	// A second sandbox of the same name is refused, and says what to do.
	r = env.Run(t, 30*time.Second, bin, "sandbox", "run", "--name", "t2", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "already running") {
		t.Errorf("second sandbox: %s", r)
	}

	// SIGTERM to the supervisor stops everything.
	if err := syscall.Kill(st.Supervisor, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, log := wait()
	if code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit code after SIGTERM = %d, want %d\n%s", code, 128+int(syscall.SIGTERM), log)
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
		t.Errorf("processes left after SIGTERM: %v", left)
	}
	if _, err := os.Stat(filepath.Join(env.RuntimeDir, "usernode", "t2", "state.json")); err == nil {
		t.Error("state.json left after a clean stop")
	}
	r = env.Run(t, 30*time.Second, bin, "enter", "--name", "t2", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "not running") {
		t.Errorf("enter on a stopped node: %s", r)
	}
}

func TestSandboxKill9LeavesNothing(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	mountsBefore := hostMounts(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	st, wait := background(t, env, "t3")
	if err := syscall.Kill(st.Supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait()
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
		t.Errorf("processes left after kill -9 of the supervisor: %v", left)
	}
	checkMountsLeft(t, "after the sandbox", mountsBefore)
	// The crash left its files; the next start cleans them and runs.
	if _, err := os.Stat(filepath.Join(env.RuntimeDir, "usernode", "t3", "state.json")); err != nil {
		t.Logf("no stale state.json to clean (%v)", err)
	}
	r := env.Run(t, 30*time.Second, testutil.Binary(t), "enter", "--name", "t3", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "not running") {
		t.Errorf("enter on a crashed node: %s", r)
	}
	r = env.Run(t, time.Minute, testutil.Binary(t), "sandbox", "run", "--name", "t3", "--", "true")
	if r.Code != 0 {
		t.Errorf("restart after a crash: %s", r)
	}
}

func TestSandboxBadInput(t *testing.T) {
	u := testutil.Integration(t)
	bin := testutil.Binary(t)
	check := func(t *testing.T, env *testutil.Env, wants ...string) {
		t.Helper()
		procsBefore, _ := testutil.ProcsOf(env.User.UID)
		r := env.Run(t, 30*time.Second, bin, "sandbox", "run", "--", "true")
		if r.Code == 0 {
			t.Fatalf("want failure: %s", r)
		}
		for _, w := range wants {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, r.Stderr)
			}
		}
		if left := testutil.WaitNoNewProcs(env.User.UID, procsBefore, 3*time.Second); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
		if env.RuntimeDir != "" {
			if b, _ := os.ReadFile(filepath.Join(env.RuntimeDir, "usernode", "usernode", "state.json")); b != nil {
				t.Errorf("state.json left behind")
			}
		}
	}
	t.Run("no subuid entry", func(t *testing.T) {
		check(t, testutil.Account(t, "usernode-nosubid").NewEnv(t), "/etc/subuid has no entry", "usermod --add-subuids")
	})
	t.Run("short subuid range", func(t *testing.T) {
		check(t, testutil.Account(t, "usernode-shortsubid").NewEnv(t), "only 1000 IDs", "at least 65536", "usermod")
	})
	t.Run("newuidmap missing", func(t *testing.T) {
		env := u.NewEnv(t)
		env.Extra = []string{"PATH=" + t.TempDir()}
		check(t, env, "newuidmap not found", "apt-get install uidmap")
	})
	t.Run("unwritable state dir", func(t *testing.T) {
		env := u.NewEnv(t)
		if err := os.Chmod(env.DataHome, 0o500); err != nil {
			t.Fatal(err)
		}
		check(t, env, "cannot create", env.DataHome)
	})
	t.Run("XDG_RUNTIME_DIR unset", func(t *testing.T) {
		env := u.NewEnv(t)
		env.RuntimeDir = ""
		check(t, env, "XDG_RUNTIME_DIR is not set", "enable-linger")
	})
	t.Run("bad node name", func(t *testing.T) {
		env := u.NewEnv(t)
		r := env.Run(t, 30*time.Second, bin, "sandbox", "run", "--name", "Bad_Name", "--", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, "DNS label") {
			t.Errorf("bad name: %s", r)
		}
	})
}

// A start that fails once the agent and init exist must undo all of it:
// no process, no mount, and nothing left in the runtime dir (state.json,
// the port socket, the lock). Two failure points: the network step (its
// helper missing) and the last step (a published port taken).
func TestSandboxFailedStartLeavesNothing(t *testing.T) {
	u := testutil.Integration(t)
	bin := testutil.Binary(t)
	check := func(t *testing.T, env *testutil.Env, want string, args ...string) {
		t.Helper()
		mountsBefore := hostMounts(t)
		procsBefore, _ := testutil.ProcsOf(u.UID)
		args = append(append([]string{"sandbox", "run", "--name", "tf"}, args...), "--", "sleep", "600")
		r := env.Run(t, time.Minute, bin, args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, want) {
			t.Fatalf("want a failure naming %q: %s", want, r)
		}
		if !strings.Contains(r.Stderr, "usernode: sandbox ") {
			t.Fatalf("the start failed before the agent and init existed, not where this test looks:\n%s", r.Stderr)
		}
		if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
		checkMountsLeft(t, "after the sandbox", mountsBefore)
		ents, _ := os.ReadDir(filepath.Join(env.RuntimeDir, "usernode", "tf"))
		for _, e := range ents {
			t.Errorf("left in the runtime dir: %s", e.Name())
		}
	}
	t.Run("network helper missing", func(t *testing.T) {
		// Only the ID-mapping helpers on PATH: the namespaces are made,
		// then slirp4netns is not found.
		env := u.NewEnv(t)
		dir := u.TempDir(t)
		for _, h := range []string{"newuidmap", "newgidmap"} {
			p, err := exec.LookPath(h)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(dir, h)); err != nil {
				t.Fatal(err)
			}
		}
		env.Extra = []string{"PATH=" + dir}
		check(t, env, "apt-get install slirp4netns", "--net", "slirp4netns")
	})
	t.Run("published port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		taken := l.Addr().(*net.TCPAddr).Port
		check(t, u.NewEnv(t), fmt.Sprintf("forwarding tcp 127.0.0.1:%d", taken), "--net", "none", "-p", fmt.Sprintf("127.0.0.1:%d:80", taken))
	})
}

// The sandbox hands the node's netns to each driver and configures the
// inside; the drivers' own suite (pkg/network/testsuite) covers the rest.
func TestSandboxNetwork(t *testing.T) {
	u := testutil.Integration(t)
	for _, drv := range []string{"slirp4netns", "pasta"} {
		t.Run(drv, func(t *testing.T) {
			env := u.NewEnv(t)
			r := env.Run(t, time.Minute, testutil.Binary(t), "sandbox", "run", "--net", drv, "--",
				"sh", "-c", "ip -4 -o addr show scope global; ip route show default; cat /etc/resolv.conf; cat /proc/sys/net/ipv4/ip_forward")
			if r.Code != 0 {
				t.Fatalf("%s", r)
			}
			for _, want := range []string{"inet 10.0.2.", "default via 10.0.2.2", "nameserver 10.0.2.3", "\n1\n"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("inside the node's netns: no %q in\n%s", want, r.Stdout)
				}
			}
		})
	}
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Ports published with -p and added with `usernode port` reach a server
// inside the node; removing one closes it; a taken host port fails the
// start cleanly.
func TestSandboxPorts(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	bin := testutil.Binary(t)
	p1, p2 := testutil.FreePort(t, "tcp"), testutil.FreePort(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Busy polling off here: the node tests run the forwarder's default.
	c := env.Command(ctx, bin, "sandbox", "run", "--name", "tp", "--port-busy-poll=0", "-p", fmt.Sprintf("127.0.0.1:%d:8080", p1),
		"--", "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Signal(syscall.SIGTERM); _ = c.Wait() }() // teardown
	var body string
	var err error
	for i := 0; i < 100; i++ {
		if body, err = httpGet(fmt.Sprintf("http://127.0.0.1:%d/hostname", p1)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(body) != "tp" {
		t.Fatalf("GET through -p: %q %v\n%s", body, err, stderr.String())
	}
	spec := fmt.Sprintf("127.0.0.1:%d:8080", p2)
	if r := env.Run(t, 30*time.Second, bin, "port", "add", "--name", "tp", spec); r.Code != 0 {
		t.Fatalf("port add: %s", r)
	}
	r := env.Run(t, 30*time.Second, bin, "port", "ls", "--name", "tp")
	if !strings.Contains(r.Stdout, fmt.Sprintf("127.0.0.1:%d/tcp->8080", p2)) || !strings.Contains(r.Stdout, fmt.Sprintf("127.0.0.1:%d/tcp->8080", p1)) {
		t.Errorf("port ls: %s", r)
	}
	if body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/hostname", p2)); err != nil || strings.TrimSpace(body) != "tp" {
		t.Errorf("GET through port add: %q %v", body, err)
	}
	if r := env.Run(t, 30*time.Second, bin, "port", "rm", "--name", "tp", spec); r.Code != 0 {
		t.Fatalf("port rm: %s", r)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p2), time.Second); err == nil {
		t.Errorf("port %d still accepts after port rm", p2)
	}
	for _, bad := range []string{"abc", "70000:80", "127.0.0.1:8080:80/sctp"} {
		if r := env.Run(t, 30*time.Second, bin, "port", "add", "--name", "tp", bad); r.Code == 0 || r.Stderr == "" {
			t.Errorf("port add %s: %s", bad, r)
		}
	}

	// A host port someone else holds: the start fails, names the port, and
	// leaves nothing behind.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	env2 := u.NewEnv(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	r = env2.Run(t, time.Minute, bin, "sandbox", "run", "--name", "tp2", "-p", fmt.Sprintf("127.0.0.1:%d:80", taken), "--", "sleep", "60")
	if r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprint(taken)) || !strings.Contains(r.Stderr, "in use") {
		t.Errorf("taken port: %s", r)
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
		t.Errorf("processes left after the failed start: %v", left)
	}
}

// With --keep-source-ip a server in the node sees the client's address:
// a CGI script behind busybox httpd answers with REMOTE_ADDR, for a
// client on the host's non-loopback address.
func TestSandboxKeepSourceIP(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	bin := testutil.Binary(t)
	hip := testutil.HostIPv4(t).String()
	p := testutil.FreePort(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const serve = `mkdir -p /tmp/www/cgi-bin && printf '#!/bin/sh\necho\necho "$REMOTE_ADDR"\n' >/tmp/www/cgi-bin/ip && chmod +x /tmp/www/cgi-bin/ip && exec busybox httpd -f -p 8080 -h /tmp/www`
	c := env.Command(ctx, bin, "sandbox", "run", "--name", "tsrc", "--keep-source-ip", "-p", fmt.Sprintf("%s:%d:8080", hip, p),
		"--", "sh", "-c", serve)
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Signal(syscall.SIGTERM); _ = c.Wait() }() // teardown
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hip)}}).DialContext}}
	var body string
	for i := 0; i < 100; i++ {
		resp, err := client.Get(fmt.Sprintf("http://%s:%d/cgi-bin/ip", hip, p))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close() // read to the end already
			if body = strings.TrimSpace(string(b)); resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// busybox listens on [::] and sees IPv4 clients v4-mapped.
	body = strings.TrimSuffix(strings.TrimPrefix(body, "[::ffff:"), "]")
	if body != hip {
		t.Fatalf("the server in the node saw the client as %q, want %s\n%s", body, hip, stderr.String())
	}
}
