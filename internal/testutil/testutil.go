// Package testutil runs usernode's integration tests as a non-root user.
//
// usernode must never run as real root, so tests that touch the kernel run
// the built binary as an unprivileged account. When `go test` itself runs as
// a regular user that account is the caller; when it runs as root (as CI
// does) it is the account that `make test-user` creates, and a missing
// account is a test failure, not a skip.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/procenv"
)

// DefaultUser is the account `make test-user` creates, and SecondUser the
// one that runs the second host's node in the multi-node test.
const (
	DefaultUser = "usernode-test"
	SecondUser  = "usernode-test2"
)

// User is the unprivileged account tests run as.
type User struct {
	Name     string
	UID, GID int
	Home     string
	switched bool // true when the test process is root and must drop to UID
}

// Integration marks a test that needs the real kernel and a non-root user.
// `go test -short` skips it, saying so.
func Integration(t testing.TB) *User {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the kernel and a non-root user; run without -short (make test)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("integration test: Linux only")
	}
	u, err := TestUser()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUser resolves the account to run as.
func TestUser() (*User, error) {
	if os.Geteuid() != 0 {
		cur, err := user.Current()
		if err != nil {
			return nil, err
		}
		return fromOS(cur, false), nil
	}
	name := os.Getenv("USERNODE_TEST_USER")
	if name == "" {
		name = DefaultUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("tests run as root need the non-root account %q with subuid/subgid ranges: run `make test-user` (or set USERNODE_TEST_USER): %v", name, err)
	}
	return fromOS(u, true), nil
}

func fromOS(u *user.User, switched bool) *User {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &User{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir, switched: switched}
}

// TempDir is a private dir the user owns (and can reach through root's
// 0700 temp dirs): tests use it as the user's XDG_RUNTIME_DIR and state
// dir, so parallel test runs and a user's real session do not collide.
func (u *User) TempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	// t.TempDir's parents are 0700 root when the test runs as root; make the
	// path traversable so the user can reach its own leaf.
	for p := d; p != os.TempDir() && p != "/" && p != "."; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, u.UID, u.GID); err != nil && u.switched {
		t.Fatal(err)
	}
	return d
}

// Env is a fresh environment for a user's session: a private runtime dir and
// data dir so a test never touches the user's real node.
type Env struct {
	User       *User
	RuntimeDir string
	DataHome   string
	Extra      []string
	// NetNS, when set, is a network namespace (a path, as TwoHosts makes
	// them) the session's commands run in: a "host" of a multi-host test.
	NetNS string
}

// NewEnv makes a fresh session environment for the user.
func (u *User) NewEnv(t testing.TB) *Env {
	t.Helper()
	return &Env{User: u, RuntimeDir: u.TempDir(t), DataHome: u.TempDir(t)}
}

// Vars returns the environment variables of the session.
func (e *Env) Vars() []string {
	env := []string{
		"PATH=" + procenv.Path,
		"HOME=" + e.User.Home,
		"USER=" + e.User.Name,
		"LOGNAME=" + e.User.Name,
		"LANG=C.UTF-8",
	}
	if e.RuntimeDir != "" {
		env = append(env, "XDG_RUNTIME_DIR="+e.RuntimeDir)
	}
	if e.DataHome != "" {
		env = append(env, "XDG_DATA_HOME="+e.DataHome)
	}
	return append(env, e.Extra...)
}

// Command prepares a command that runs as the session's user.
func (e *Env) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	if e.NetNS != "" {
		// Root enters the namespace, then drops to the user: a user may
		// not join a network namespace root made.
		c = exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + e.NetNS, "--",
			"setpriv", fmt.Sprintf("--reuid=%d", e.User.UID), fmt.Sprintf("--regid=%d", e.User.GID), "--clear-groups", "--", name}, args...)...)
	}
	c.Env = e.Vars()
	c.Dir = "/"
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if e.User.switched && e.NetNS == "" {
		c.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(e.User.UID), Gid: uint32(e.User.GID), Groups: []uint32{}}
	}
	// Kill the whole process group, not only the direct child, so that a
	// timed-out test does not leave a sandbox behind.
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	return c
}

// Result is what a finished command printed.
type Result struct {
	Stdout, Stderr string
	Code           int
	Err            error
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d (%v)\nstdout:\n%s\nstderr:\n%s", r.Code, r.Err, r.Stdout, r.Stderr)
}

// Run runs a command as the user and waits for it, up to timeout.
func (e *Env) Run(t testing.TB, timeout time.Duration, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := e.Command(ctx, name, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String(), Err: err, Code: 0}
	if c.ProcessState != nil {
		r.Code = c.ProcessState.ExitCode()
	} else if err != nil {
		r.Code = -1
	}
	return r
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Binary returns a usernode binary the test user can execute: $USERNODE_BIN
// if set (the Makefile sets it), else one built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// A dir of its own under /tmp: the checkout may sit under a 0700
		// home that the test user cannot traverse.
		dir, err := os.MkdirTemp("", "usernode-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_ = os.Chmod(dir, 0o755)
		builtBin = filepath.Join(dir, "usernode")
		if b := os.Getenv("USERNODE_BIN"); b != "" {
			buildErr = copyFile(b, builtBin)
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		c := exec.Command("go", "build", "-o", builtBin, filepath.Join(root, "cmd", "usernode"))
		c.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: static, for the pause image
		out, err := c.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// ProcsOf lists the PIDs whose real uid is uid, so tests can check that
// nothing of a sandbox survived it.
func ProcsOf(uid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	want := strconv.Itoa(uid)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		// Zombies are dead already; only their parent's reaping is left.
		if strings.Contains(string(b), "\nState:\tZ") {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] == want {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("USERNODE_BIN: %w (run make build)", err)
	}
	return os.WriteFile(dst, b, 0o755)
}

// Account returns another account made by `make test-user` (one with no
// subuid range, say). Only root can switch to it, so a run as a regular
// user skips the test and says why.
func Account(t testing.TB, name string) *User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to run as the account %s (make test runs as root in CI)", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("account %s missing: run `make test-user`: %v", name, err)
	}
	return fromOS(u, true)
}

// NewProcs returns the processes of uid that are not in before: what a
// test left running.
func NewProcs(uid int, before []int) []int {
	now, _ := ProcsOf(uid)
	old := map[int]bool{}
	for _, p := range before {
		old[p] = true
	}
	var out []int
	for _, p := range now {
		if !old[p] {
			out = append(out, p)
		}
	}
	return out
}

// WaitNoNewProcs waits up to timeout for the processes a test started to
// be gone, and returns those that remain.
func WaitNoNewProcs(uid int, before []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		left := NewProcs(uid, before)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	selfOnce sync.Once
	selfPath string
	selfErr  error
)

// SelfCopy copies the running test binary where the test user can execute
// it, for suites that re-exec themselves as that user.
func SelfCopy(t testing.TB) string {
	t.Helper()
	selfOnce.Do(func() {
		dir, err := os.MkdirTemp("", "usernode-selftest-")
		if err != nil {
			selfErr = err
			return
		}
		_ = os.Chmod(dir, 0o755)
		selfPath = filepath.Join(dir, filepath.Base(os.Args[0]))
		selfErr = copyFile("/proc/self/exe", selfPath)
	})
	if selfErr != nil {
		t.Fatal(selfErr)
	}
	return selfPath
}
