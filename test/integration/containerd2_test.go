package integration

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/testutil"
)

// upRefused runs `up` with args as u and checks that it fails at once, with
// an error naming each of wants, and leaves nothing behind: no process of
// u, nothing new under the session's data and runtime dirs (the state and
// runtime dirs are made there), and the node's host ports free.
func upRefused(t *testing.T, u *testutil.User, args []string, wants ...string) {
	t.Helper()
	env := u.NewEnv(t)
	api, klt := testutil.FreePort(t, "tcp"), testutil.FreePort(t, "tcp")
	args = append([]string{"up", "--name", "c2", "--api-port", fmt.Sprint(api), "--kubelet-port", fmt.Sprint(klt)}, args...)
	dataBefore, runBefore := dirTree(t, env.DataHome), dirTree(t, env.RuntimeDir)
	procsBefore, err := testutil.ProcsOf(u.UID)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := env.Run(t, 2*time.Minute, testutil.Binary(t), args...)
	took := time.Since(start)
	if r.Code == 0 {
		t.Fatalf("up %s: want a failure: %s", strings.Join(args, " "), r)
	}
	for _, w := range wants {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("up %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, r.Stderr)
		}
	}
	// Nothing is started before the check: the time is the binary's start
	// and a --version or two, far below a node's start.
	if took > 20*time.Second {
		t.Errorf("up %s took %s to fail: it should refuse before starting anything", strings.Join(args, " "), took)
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
		t.Errorf("up %s left processes of %s: %v", strings.Join(args, " "), u.Name, left)
	}
	if after := dirTree(t, env.DataHome); after != dataBefore {
		t.Errorf("up %s left files in XDG_DATA_HOME (where the state dir goes):\nbefore:\n%s\nafter:\n%s", strings.Join(args, " "), dataBefore, after)
	}
	if after := dirTree(t, env.RuntimeDir); after != runBefore {
		t.Errorf("up %s left files in XDG_RUNTIME_DIR (where the runtime dir goes):\nbefore:\n%s\nafter:\n%s", strings.Join(args, " "), runBefore, after)
	}
	for _, p := range []uint16{api, klt} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("up %s left host port %d taken: %v", strings.Join(args, " "), p, err)
			continue
		}
		l.Close()
	}
}

// dirTree lists every path under dir, sorted, one a line.
func dirTree(t *testing.T, dir string) string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	return strings.Join(paths, "\n")
}

// TestUpContainerd2Degraded: containerd 2.x (hack/build-containerd.sh's,
// which `make test` names in USERNODE_CONTAINERD2) given with --containerd
// on a host with no delegated cgroup v2 tree. 2.x has no way to run pods
// without creating their cgroups, so `up` refuses it before starting
// anything, saying the three ways out, in the foreground and with -d.
func TestUpContainerd2Degraded(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	ctd := testutil.Containerd2(t)
	// A host without the unified hierarchy is degraded for every user; on
	// a cgroup v2 host it depends on delegation (the VM tier runs 2.x in
	// full mode there).
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		t.Skip("/sys/fs/cgroup is cgroup v2: whether this host is degraded depends on delegation; this test needs a hybrid or v1 host, where it is degraded for certain")
	}
	for _, detach := range []bool{false, true} {
		args := []string{"--bin-dir", bins, "--containerd", ctd}
		if detach {
			args = append(args, "-d")
		}
		upRefused(t, u, args,
			"containerd v2.4.2 cannot run a node without a delegated cgroup v2 tree",
			"delegated cgroup v2 tree (`usernode doctor` says how)", "--cri crio", "containerd 1.6/1.7 (--containerd PATH)",
			"this host gives no delegated cgroup v2 tree")
	}
}

// Runtime choices that cannot be honoured fail before anything starts,
// naming the bad value and what would do.
func TestUpRuntimeBadInput(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	t.Run("--containerd a missing file", func(t *testing.T) {
		missing := "/nonexistent/containerd"
		if _, err := os.Stat(missing); err == nil {
			t.Fatalf("%s exists", missing)
		}
		upRefused(t, u, []string{"--bin-dir", bins, "--containerd", missing}, missing, "not an executable file")
	})
	t.Run("--cri unknown", func(t *testing.T) {
		upRefused(t, u, []string{"--bin-dir", bins, "--cri", "nosuch"}, `"nosuch"`, "no such container runtime", "known: containerd, crio")
	})
}
