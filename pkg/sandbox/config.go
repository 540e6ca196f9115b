// Package sandbox builds the node's sandbox and keeps it running:
//
//	supervisor (the user, host namespaces)
//	└─ agent   new user (full subuid map), mount, uts, ipc namespaces;
//	   │       still in the host's network namespace, where it serves the
//	   │       port forwarder with dial sockets made inside the node's netns
//	   └─ init new net, pid, mount and cgroup namespaces; pid 1 of the node,
//	          runs the node's processes and reaps them
//
// When the supervisor dies, the kernel kills the agent (parent-death
// signal), the agent's death kills init, and init's death kills every
// process of the node's pid namespace: nothing outlives a kill -9.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
)

// Config is one sandbox.
type Config struct {
	Name       string          `json:"name"`
	StateDir   string          `json:"stateDir"`
	RuntimeDir string          `json:"runtimeDir"`
	Net        string          `json:"net"`
	NetOptions network.Options `json:"netOptions"`
	Ports      []port.Spec     `json:"ports,omitempty"`
	Command    []string        `json:"command"`
	// Reexec, when set, makes the first process usernode itself, started
	// as that reexec entry point with Command as its arguments: the binary
	// may sit under /tmp or /run, which the sandbox replaces.
	Reexec string `json:"reexec,omitempty"`
	// StopTimeout is how long the node gets to stop on SIGTERM before it
	// is killed (default DefaultStopTimeout).
	StopTimeout time.Duration `json:"stopTimeout,omitempty"`
	// Env is the command's environment inside the sandbox.
	Env []string `json:"env,omitempty"`
	// PortOptions tune the port forwarder.
	PortOptions PortOptions `json:"portOptions"`
}

// PortOptions tune the port forwarder.
type PortOptions struct {
	// BusyPoll is how long the forwarder keeps polling after a small
	// message instead of sleeping: lower latency for more CPU. Zero is the
	// forwarder's default; negative turns it off.
	BusyPoll time.Duration `json:"busyPoll,omitempty"`
	// KeepSourceIP makes TCP servers inside see the client's address
	// instead of 127.0.0.1.
	KeepSourceIP bool `json:"keepSourceIP,omitempty"`
}

// Writable are the directories the seed says must be writable inside,
// beyond /etc, /run and /tmp. Each is kept under the state dir, so they
// survive a restart. /var/lib as a whole is persisted: the kubelet writes
// fixed paths under it (device-plugin checkpoints) whatever --root-dir says.
var Writable = []string{"/var/lib", "/var/log"}

// SeedDirs are the directories the seed says must exist (and be writable)
// inside; they are made under the Writable ones.
var SeedDirs = []string{"/var/lib/kubelet", "/var/lib/cni", "/var/lib/containerd", "/var/lib/containers", "/var/log"}

// PortSocket is the port API's socket, in the runtime dir.
const PortSocket = "port.sock"

// maxSocketPath is the longest path a Unix socket can be bound at:
// sun_path is 108 bytes with the terminating NUL.
const maxSocketPath = 107

// RuntimeDirInside is where the node sees its runtime dir.
const RuntimeDirInside = "/run/usernode"

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Defaults fills in the state and runtime dirs from the XDG variables, and
// checks what the user gave.
func (c *Config) Defaults(getenv func(string) string) error {
	if c.Name == "" {
		c.Name = "usernode"
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("node name %q: use lower-case letters, digits and '-', at most 63, as in a DNS label", c.Name)
	}
	if c.RuntimeDir == "" {
		rt := getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			return errors.New("XDG_RUNTIME_DIR is not set: log in through a systemd session (or `sudo loginctl enable-linger $USER`), or export XDG_RUNTIME_DIR=/run/user/$(id -u) if that dir exists and is yours")
		}
		if fi, err := os.Stat(rt); err != nil || !fi.IsDir() {
			return fmt.Errorf("XDG_RUNTIME_DIR=%s is not a directory: %v; it must exist, be yours and be mode 0700", rt, err)
		}
		c.RuntimeDir = filepath.Join(rt, "usernode", c.Name)
	}
	// Checked here, before anything is made: the port API's socket is the
	// longest path usernode binds, and bind refuses a Unix socket path over
	// sun_path's 108 bytes with only "invalid argument".
	if p := filepath.Join(c.RuntimeDir, PortSocket); len(p) > maxSocketPath {
		return fmt.Errorf("the node's runtime dir %s is too long: its port socket %s would be %d bytes, and a Unix socket's path may have at most %d; use a shorter XDG_RUNTIME_DIR (e.g. /run/user/$(id -u)) or node name", c.RuntimeDir, p, len(p), maxSocketPath)
	}
	if c.StateDir == "" {
		data := getenv("XDG_DATA_HOME")
		if data == "" {
			home := getenv("HOME")
			if home == "" {
				return errors.New("neither XDG_DATA_HOME nor HOME is set: usernode keeps the node's state under $XDG_DATA_HOME/usernode")
			}
			data = filepath.Join(home, ".local", "share")
		}
		c.StateDir = filepath.Join(data, "usernode", c.Name)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Net == "" {
		c.Net = "none"
	}
	if len(c.Command) == 0 && c.Reexec == "" {
		return errors.New("no command to run in the sandbox")
	}
	return nil
}

// mkPrivateDir creates dir (and parents) and makes sure it is the user's and
// 0700: the node's keys and state live there.
func mkPrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w; make sure its parent is writable by you or choose another with --state-dir / XDG_DATA_HOME", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot make %s private (0700): %w", dir, err)
	}
	probe := filepath.Join(dir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return fmt.Errorf("%s is not writable: %w; fix its ownership (chown -R $USER) or choose another dir", dir, err)
	}
	return os.Remove(probe)
}
