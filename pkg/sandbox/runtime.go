package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/network"
)

// State is what a running sandbox publishes in its runtime dir, for
// `enter`, `status` and the tests.
type State struct {
	Name       string          `json:"name"`
	Supervisor int             `json:"supervisorPID"`
	Agent      int             `json:"agentPID"`
	Init       int             `json:"initPID"`
	Cgroup     cgroup.Info     `json:"cgroup"`
	Network    *network.Config `json:"network,omitempty"`
	StateDir   string          `json:"stateDir"`
	PortSocket string          `json:"portSocket,omitempty"`
	// NetHelper is the supervisor's account of the network helper, for
	// drivers that have one (slirp4netns, pasta).
	NetHelper *NetHelper `json:"netHelper,omitempty"`
	// Restarts is the account of the sandbox's earlier deaths, nil if it
	// has not died. While the supervisor waits to build it again, the
	// State has Restarts.Next and no agent or init.
	Restarts *Restarts `json:"restarts,omitempty"`
}

// NetHelper is the network helper process as the supervisor keeps it.
type NetHelper struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Restarts counts the times the supervisor started it again after it
	// exited; LastExit says how it last exited, LastRestart when.
	Restarts    int       `json:"restarts"`
	LastExit    string    `json:"lastExit,omitempty"`
	LastRestart time.Time `json:"lastRestart,omitzero"`
	// GaveUp says why the supervisor stopped restarting it: the node runs
	// on without a network beyond its own.
	GaveUp string `json:"gaveUp,omitempty"`
}

const stateFile = "state.json"

// lock holds the runtime dir for one supervisor. The flock dies with the
// process, so a crashed sandbox leaves files but no lock: that is how stale
// files are told from a live sandbox.
type lock struct {
	dir string
	f   *os.File
}

func acquire(dir string) (*lock, error) {
	if err := mkPrivateDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "lock")
	// release removes the file before it drops the lock. A start that
	// opened the file just before that removal locks a file no one else
	// finds any more, and the next start makes and locks a new one: two
	// nodes ran at once (seen in the fault suite's two ups at once, right
	// after a down). So a lock counts only on the file the path still
	// names; otherwise open it again.
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close() // opened only to lock; nothing written
			if errors.Is(err, unix.EWOULDBLOCK) {
				st, _ := ReadState(dir)
				pid := 0
				if st != nil {
					pid = st.Supervisor
				}
				return nil, fmt.Errorf("node %q is already running (supervisor pid %d): use `usernode enter` to reach it, or stop it first (kill -TERM %d)", filepath.Base(dir), pid, pid)
			}
			return nil, err
		}
		if isAt(f, path) {
			return &lock{dir: dir, f: f}, nil
		}
		_ = f.Close() // a removed file's lock: worth nothing
	}
	return nil, fmt.Errorf("cannot lock %s: it keeps being removed while it is locked (another usernode starting and stopping this node?)", path)
}

// isAt tells whether f is the file path names now.
func isAt(f *os.File, path string) bool {
	var held, named unix.Stat_t
	return unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &named) == nil &&
		held.Dev == named.Dev && held.Ino == named.Ino
}

// clean removes everything in the runtime dir but the lock itself. It
// goes on past a file it cannot remove and returns what failed; what is
// gone already is no failure.
func (l *lock) clean() error {
	ents, err := os.ReadDir(l.dir)
	errs := []error{ignoreNotExist(err)}
	for _, e := range ents {
		if e.Name() != "lock" {
			errs = append(errs, os.RemoveAll(filepath.Join(l.dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// release empties the runtime dir and drops the lock. The flock goes with
// the descriptor whatever Close returns; what it reports is the files and
// lock it could not remove.
func (l *lock) release() error {
	err := l.clean()
	rerr := ignoreNotExist(os.Remove(filepath.Join(l.dir, "lock")))
	_ = l.f.Close()
	return errors.Join(err, rerr)
}

func writeState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// ReadState reads a sandbox's published state.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

// Locked tells whether a live supervisor holds dir's lock: also a node
// starting there, before it has published its state.
func Locked(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN) // the deferred Close drops it anyway
	return false
}

// Running returns the state of the live sandbox in dir, or an error that
// says how to start one.
func Running(dir string) (*State, error) {
	st, err := ReadState(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("node %q is not running (no %s): start it with `usernode sandbox run` or `usernode up`", filepath.Base(dir), filepath.Join(dir, stateFile))
		}
		return nil, err
	}
	if rs := st.Restarts; st.Init == 0 && rs != nil && !rs.Next.IsZero() && Locked(dir) {
		return nil, fmt.Errorf("node %q is restarting: its sandbox died (%s) and supervisor pid %d builds it again at %s (restart %d)",
			st.Name, rs.LastDeath, st.Supervisor, rs.Next.Format(time.TimeOnly), rs.Count)
	}
	if st.Init == 0 && st.Restarts == nil && Locked(dir) {
		return nil, fmt.Errorf("node %q is starting (supervisor pid %d): `usernode status` shows it once it is up, `usernode down` stops it", st.Name, st.Supervisor)
	}
	if st.Init == 0 || syscall.Kill(st.Init, 0) != nil || !Locked(dir) {
		return nil, fmt.Errorf("node %q is not running (its init, pid %d, is gone; stale files in %s are cleaned at next start)", st.Name, st.Init, dir)
	}
	return st, nil
}

// Supervisor returns the pid of the live supervisor of the node in dir,
// running, starting or waiting to build its sandbox again: the process
// that `down` stops.
func Supervisor(dir string) (int, error) {
	st, err := Running(dir)
	if err == nil {
		return st.Supervisor, nil
	}
	// Starting, or waiting to build the sandbox again: no init yet.
	if rs, rerr := ReadState(dir); rerr == nil && rs.Init == 0 && rs.Supervisor > 0 && Locked(dir) {
		return rs.Supervisor, nil
	}
	return 0, err
}
