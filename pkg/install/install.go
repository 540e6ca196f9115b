// Package install writes the systemd user unit that runs a node:
// ~/.config/systemd/user/usernode.service (usernode-NAME.service for other
// node names), with Delegate=yes so that the node runs in a cgroup v2
// subtree the user owns ("full mode": pod limits enforced).
//
// The unit runs `usernode up` in the foreground as a Type=notify service:
// usernode sends READY=1 (sd_notify) once the node is Ready, so
// `systemctl --user start` returns when kubectl can use the node, and
// fails if it never gets there. On stop, systemd sends SIGTERM to usernode
// alone (KillMode=mixed), which stops the node's components in order, and
// kills whatever is left in the cgroup after TimeoutStopSec.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/atomicfile"

	"github.com/usernode/usernode/internal/procenv"
)

// Defaults.
const (
	DefaultName = "usernode"
	// DefaultReadyTimeout matches `usernode up --timeout`'s default.
	DefaultReadyTimeout = 5 * time.Minute
	// StopTimeout bounds `systemctl --user stop`: the node gets two minutes
	// to stop its components in order (sandbox StopTimeout for `up`), and
	// systemd then kills what is left of the cgroup.
	StopTimeout = 150 * time.Second
)

// Options are the unit's. Only the flags the user gave are passed to
// `usernode up`, so the config file ($XDG_CONFIG_HOME/usernode/config.yaml)
// still applies to the rest when the unit starts.
type Options struct {
	// Binary is the absolute path of usernode.
	Binary string
	// Name is the node's name (default "usernode"): it names the unit.
	Name string
	// Args are `up`'s flags as the user gave them, with absolute paths
	// (cluster.Args).
	Args []string
	// ReadyTimeout is up's --timeout; the unit's TimeoutStartSec is a
	// minute more, so that usernode reports its own error first.
	ReadyTimeout time.Duration
	// Path is the unit's PATH (default procenv.Path).
	Path string
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// UnitName is the unit file's name for a node.
func UnitName(node string) string {
	if node == "" || node == DefaultName {
		return DefaultName + ".service"
	}
	return DefaultName + "-" + node + ".service"
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("node name %q: use lower-case letters, digits and '-', at most 63, as in a DNS label", o.Name)
	}
	if !filepath.IsAbs(o.Binary) {
		return fmt.Errorf("usernode's path %q is not absolute: systemd needs an absolute ExecStart", o.Binary)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.Path == "" {
		o.Path = procenv.Path
	}
	return nil
}

// UpArgs is the `usernode up` command line the unit runs, without the
// binary.
func (o Options) UpArgs() []string { return append([]string{"up"}, o.Args...) }

// Render is the unit file for o.
func Render(o Options) ([]byte, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	exec := []string{quote(o.Binary)}
	for _, a := range o.UpArgs() {
		exec = append(exec, quote(a))
	}
	w("# Written by `usernode install`; `usernode uninstall` removes it.")
	w("# Edit with `systemctl --user edit %s` (a drop-in survives a reinstall).", UnitName(o.Name))
	w("[Unit]")
	w("Description=usernode: rootless Kubernetes node %s", o.Name)
	w("Documentation=https://github.com/usernode/usernode")
	w("")
	w("[Service]")
	w("# usernode sends READY=1 when the node is Ready: `systemctl --user start`")
	w("# returns when kubectl can use it.")
	w("Type=notify")
	w("NotifyAccess=main")
	w("ExecStart=%s", strings.Join(exec, " "))
	w("# The node's own cgroup v2 subtree (full mode: pod limits enforced). Which")
	w("# controllers it gets is set by user@.service's Delegate= (see docs/vm.md).")
	w("Delegate=yes")
	w("# SIGTERM to usernode alone, which stops the components in order; systemd")
	w("# kills what is left in the cgroup after TimeoutStopSec.")
	w("KillMode=mixed")
	w("KillSignal=SIGTERM")
	w("TimeoutStartSec=%d", int((o.ReadyTimeout + time.Minute).Seconds()))
	w("TimeoutStopSec=%d", int(StopTimeout.Seconds()))
	w("Restart=on-failure")
	w("RestartSec=10")
	w("Environment=%s", quote("PATH="+o.Path))
	w("")
	w("[Install]")
	w("WantedBy=default.target")
	return b.Bytes(), nil
}

// quote makes s one word of a systemd command line or assignment: '%'
// and '$' are doubled (specifiers and variable expansion), and words with
// spaces, quotes or backslashes are double-quoted with C-style escapes.
func quote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// UnitDir is where systemd's user manager reads the user's own units:
// $XDG_CONFIG_HOME/systemd/user, or ~/.config/systemd/user.
func UnitDir(getenv func(string) string) (string, error) {
	if d := getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "systemd", "user"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: cannot tell where the user's systemd units live")
	}
	return filepath.Join(home, ".config", "systemd", "user"), nil
}

// Systemctl runs `systemctl --user ARGS...` and returns its combined
// output; tests replace it.
type Systemctl func(args ...string) (string, error)

// UserSystemctl runs the real systemctl, with fixed arguments and no shell.
func UserSystemctl(args ...string) (string, error) {
	path, err := exec.LookPath("systemctl")
	if err != nil {
		return "", errors.New("systemctl not found: the unit needs systemd's user manager (see `usernode doctor`, systemd.user-manager)")
	}
	out, err := exec.Command(path, append([]string{"--user"}, args...)...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		if s == "" {
			s = err.Error()
		}
		return s, fmt.Errorf("systemctl --user %s: %s", strings.Join(args, " "), s)
	}
	return s, nil
}

// Result says what Install or Uninstall did.
type Result struct {
	Unit    string // the unit's name
	Path    string // the unit file
	Changed bool   // the file was written (or removed)
	Stopped bool   // Uninstall stopped a running unit first
}

// Install writes the unit into dir and reloads the user manager.
func Install(o Options, dir string, sc Systemctl) (Result, error) {
	unit, err := Render(o)
	if err != nil {
		return Result{}, err
	}
	res := Result{Unit: UnitName(o.Name), Path: filepath.Join(dir, UnitName(o.Name))}
	old, err := os.ReadFile(res.Path)
	if err != nil || !bytes.Equal(old, unit) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return res, err
		}
		if err := atomicfile.Write(res.Path, unit, 0o644); err != nil {
			return res, err
		}
		res.Changed = true
	}
	if _, err := sc("daemon-reload"); err != nil {
		return res, fmt.Errorf("wrote %s, but reloading the user manager failed: %w; is it running (`usernode doctor`, systemd.user-manager)?", res.Path, err)
	}
	return res, nil
}

// Uninstall stops the unit if it is active, disables it, removes its file
// from dir and reloads the user manager. A unit that is not there is no
// error.
func Uninstall(name, dir string, sc Systemctl) (Result, error) {
	if name == "" {
		name = DefaultName
	}
	res := Result{Unit: UnitName(name), Path: filepath.Join(dir, UnitName(name))}
	if _, err := os.Stat(res.Path); errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	// is-active exits non-zero for anything but "active"; its output says
	// which state the unit is in.
	state, _ := sc("is-active", res.Unit)
	switch strings.TrimSpace(state) {
	case "active", "activating", "reloading", "deactivating":
		if _, err := sc("stop", res.Unit); err != nil {
			return res, fmt.Errorf("stopping %s before removing it: %w", res.Unit, err)
		}
		res.Stopped = true
	}
	// Disabling a unit that is not enabled is harmless; one the manager
	// cannot reach is reported by the reload below.
	_, _ = sc("disable", res.Unit)
	if err := os.Remove(res.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, err
	}
	res.Changed = true
	if _, err := sc("daemon-reload"); err != nil {
		return res, fmt.Errorf("removed %s, but reloading the user manager failed: %w", res.Path, err)
	}
	// Only clears a failed state left in the manager's memory; a unit
	// that never failed makes it exit non-zero, which means nothing here.
	_, _ = sc("reset-failed", res.Unit)
	return res, nil
}
