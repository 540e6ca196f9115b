package main

// The two non-root accounts the nodes run as (accounts.sh makes them):
// one per host, so each node is a different user, as on two machines,
// and neither is the integration tests' usernode-test, whose processes
// those tests count.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/procenv"
)

type account struct {
	name             string
	uid, gid         int
	home             string
	subStart, subLen int // its /etc/subuid range
	// A fresh XDG_RUNTIME_DIR and XDG_DATA_HOME of this run, so nothing
	// of the account's own session (or an earlier run) is touched.
	runtimeDir, dataHome string
}

func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("account %s: %v: run bench/multinode/accounts.sh as root (make bench-multinode does)", name, err)
	}
	a := &account{name: u.Username, home: u.HomeDir}
	a.uid, _ = strconv.Atoi(u.Uid)
	a.gid, _ = strconv.Atoi(u.Gid)
	if a.uid == 0 {
		return nil, fmt.Errorf("account %s is root: usernode must run as a regular user; pass another -user-a/-user-b", name)
	}
	if a.subStart, a.subLen, err = subRange(name); err != nil {
		return nil, err
	}
	return a, nil
}

// subRange reads the account's subordinate uid range.
func subRange(name string) (start, n int, err error) {
	f, err := os.Open("/etc/subuid")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		p := strings.Split(s.Text(), ":")
		if len(p) == 3 && p[0] == name {
			start, _ = strconv.Atoi(p[1])
			n, _ = strconv.Atoi(p[2])
			if n >= 65536 {
				return start, n, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("account %s has no /etc/subuid range of 65536 IDs: run bench/multinode/accounts.sh as root", name)
}

// makeDirs gives the account its XDG dirs under work.
func (a *account) makeDirs(work string) error {
	for _, d := range []*string{&a.runtimeDir, &a.dataHome} {
		dir, err := os.MkdirTemp(work, a.name+"-")
		if err != nil {
			return err
		}
		if err := os.Chown(dir, a.uid, a.gid); err != nil {
			return err
		}
		*d = dir
	}
	return nil
}

// owns reports whether a process's real uid is the account's or in its
// subordinate range (the node's processes inside its user namespace).
func (a *account) owns(uid int) bool {
	return uid == a.uid || uid >= a.subStart && uid < a.subStart+a.subLen
}

// procs lists the account's live processes.
func (a *account) procs() []int {
	ents, _ := os.ReadDir("/proc") // unreadable /proc: nothing to list
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil || strings.Contains(string(b), "\nState:\tZ") {
			continue // gone, or dead already and only waiting to be reaped
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
				if uid, _ := strconv.Atoi(f[1]); a.owns(uid) {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// node is a usernode node on one of the hosts, run by its account.
type node struct {
	host netHost
	acct *account
	name string
	bin  string // the usernode binary, where the account can run it
}

func (n *node) stateDir() string { return filepath.Join(n.acct.dataHome, "usernode", n.name) }

func (n *node) kubeconfig() string { return filepath.Join(n.stateDir(), "kubeconfig") }

// usernode runs `usernode ARGS` as the account in the host's namespace
// and returns its stdout; with -v it also prints all it said.
// Root enters the namespace first and then drops to the account: a user
// may not join a namespace root made. Its own process group, so that a
// Ctrl-C reaches only the harness, which then stops the nodes in order.
func (n *node) usernode(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.host.path(), "--",
		"setpriv", fmt.Sprintf("--reuid=%d", n.acct.uid), fmt.Sprintf("--regid=%d", n.acct.gid), "--clear-groups", "--",
		n.bin}, args...)...)
	c.Env = []string{"PATH=" + procenv.Path, "HOME=" + n.acct.home, "USER=" + n.acct.name, "LOGNAME=" + n.acct.name,
		"LANG=C.UTF-8", "XDG_RUNTIME_DIR=" + n.acct.runtimeDir, "XDG_DATA_HOME=" + n.acct.dataHome}
	c.Dir = "/"
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	// stdout apart: `token create` prints the join line there and its
	// notes on stderr.
	var out, all bytes.Buffer
	c.Stdout, c.Stderr = io.MultiWriter(&out, &all), &all
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("usernode %s on %s as %s: %v\n%s", strings.Join(args, " "), n.host.ns, n.acct.name, err, tail(all.String(), 30))
	}
	if *verbose {
		fmt.Fprint(os.Stderr, all.String())
	}
	return out.String(), nil
}

// down stops the node and removes its state; the state dir must be gone.
// With no state dir there is nothing to stop: a join that failed removes
// its own, and what a killed one left running the sweep ends.
func (n *node) down(ctx context.Context) error {
	if _, err := os.Stat(n.stateDir()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := n.usernode(ctx, 5*time.Minute, "down", "--name", n.name, "--purge"); err != nil {
		return err
	}
	if _, err := os.Stat(n.stateDir()); err == nil {
		return fmt.Errorf("usernode down --purge left %s behind", n.stateDir())
	}
	return nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
