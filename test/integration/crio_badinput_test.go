package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/procenv"
	"github.com/usernode/usernode/internal/testutil"
)

// TestUpCRIOBadInput: `up --cri crio` with one of CRI-O's programs
// missing fails at once, naming the program and how to get it, and leaves
// no process, runtime or state dir, and no port taken.
func TestUpCRIOBadInput(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	bin := testutil.Binary(t)
	for _, p := range []string{"crio", "pinns"} {
		if _, err := os.Stat(filepath.Join(bins, p)); err != nil {
			t.Fatalf("no %s in %s: `make test` builds it there (hack/build-crio.sh)", p, bins)
		}
	}
	check := func(t *testing.T, env *testutil.Env, binDir string, wants, unwanted []string) {
		t.Helper()
		api, klt := testutil.FreePort(t, "tcp"), testutil.FreePort(t, "tcp")
		procsBefore, _ := testutil.ProcsOf(u.UID)
		start := time.Now()
		r := env.Run(t, time.Minute, bin, "up", "-d", "--name", "badcrio", "--cri", "crio", "--bin-dir", binDir,
			"--api-port", fmt.Sprint(api), "--kubelet-port", fmt.Sprint(klt))
		took := time.Since(start)
		if r.Code == 0 {
			t.Fatalf("want failure: %s", r)
		}
		t.Logf("up refused in %s, exit %d: %s", took.Round(time.Millisecond), r.Code, strings.TrimSpace(r.Stderr))
		// Fast: refused before the sandbox starts, not after a timeout.
		if took > 10*time.Second {
			t.Errorf("up took %s to refuse", took.Round(time.Millisecond))
		}
		for _, w := range wants {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, r.Stderr)
			}
		}
		for _, w := range unwanted {
			if strings.Contains(r.Stderr, w) {
				t.Errorf("stderr names %q, which is there:\n%s", w, r.Stderr)
			}
		}
		if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 5*time.Second); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
		for _, d := range []string{filepath.Join(env.RuntimeDir, "usernode", "badcrio"), filepath.Join(env.DataHome, "usernode", "badcrio")} {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("%s left behind", d)
			}
		}
		for _, p := range []uint16{api, klt} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Errorf("port %d not free after the failed up: %v", p, err)
				continue
			}
			l.Close()
		}
	}

	t.Run("pinns missing", func(t *testing.T) {
		// The built binaries less pinns. Not under /tmp, which the sandbox
		// hides (up would say so instead).
		dir, err := os.MkdirTemp(u.Home, ".usernode-nopinns-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) }) // best effort
		ents, err := os.ReadDir(bins)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() == "pinns" {
				continue
			}
			if err := os.Symlink(filepath.Join(bins, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		env := u.NewEnv(t)
		// No build cache of the user's to find another pinns in; PATH is
		// usernode's own, which must have none either.
		env.Extra = []string{"XDG_CACHE_HOME=" + env.DataHome}
		for _, d := range filepath.SplitList(procenv.Path) {
			if _, err := os.Stat(filepath.Join(d, "pinns")); err == nil {
				t.Fatalf("%s/pinns exists: up would find it in PATH, so this host cannot test a missing pinns", d)
			}
		}
		check(t, env, dir, []string{"pinns not found in --bin-dir", "run hack/build-crio.sh"}, []string{"crio not found", "kubelet"})
	})

	t.Run("conmon missing", func(t *testing.T) {
		// conmon is a system program, found in PATH and then the sbin
		// dirs: PATH is a dir of every program in the system's bin dirs
		// but conmon, so that conmon is the one thing missing.
		env := u.NewEnv(t)
		path := filepath.Join(env.DataHome, "path")
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range filepath.SplitList(procenv.Path) {
			ents, err := os.ReadDir(d)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if e.Name() == "conmon" {
					if strings.Contains(d, "sbin") {
						t.Fatalf("%s/conmon: up finds it in the sbin dirs whatever PATH says, so this host cannot test a missing conmon", d)
					}
					continue
				}
				// The first of a name in PATH wins, as for LookPath.
				if err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(path, e.Name())); err != nil && !os.IsExist(err) {
					t.Fatal(err)
				}
			}
		}
		env.Extra = []string{"PATH=" + path}
		check(t, env, bins, []string{"conmon", "apt-get install conmon"}, []string{"skopeo", "crun", "pinns"})
	})
}
