package doctor

import (
	"context"
	"fmt"
	"path"
	"strconv"
)

func checkRuntimeDir(_ context.Context, r *run) Result {
	s := r.sys
	d := s.getenv("XDG_RUNTIME_DIR")
	why := "usernode keeps its sockets, PID files and the node's runtime state in $XDG_RUNTIME_DIR; it must be private to the user (0700) or other users could reach the node's containerd and kubelet sockets."
	want := "/run/user/" + strconv.Itoa(s.UID)
	loginFix := &Fix{
		Debian: "# log in through PAM (ssh, a console login or machinectl shell USER@) so that pam_systemd creates " + want + ",\n# or, for a shell started with su/sudo:\nexport XDG_RUNTIME_DIR=" + want,
	}
	loginFix.Fedora = loginFix.Debian
	if d == "" {
		return Result{Status: Fail, Found: "XDG_RUNTIME_DIR is not set", Why: why, Fix: loginFix}
	}
	if !path.IsAbs(d) {
		return Result{Status: Fail, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%q is not an absolute path", d), Why: why, Fix: loginFix}
	}
	fi, err := s.Stat(d)
	if err != nil {
		return Result{Status: Fail, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%s: %v", d, err), Why: why,
			Fix: same("loginctl enable-linger " + shellQuote(s.User) + "\n# creates " + want + " and keeps it while the user has no session"), Root: true}
	}
	switch {
	case !fi.Mode.IsDir():
		return Result{Status: Fail, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%s is not a directory", d), Why: why, Fix: loginFix}
	case fi.UID != s.UID:
		return Result{Status: Fail, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%s is owned by uid %d, not %d", d, fi.UID, s.UID), Why: why, Fix: loginFix}
	case fi.Mode.Perm() != 0o700:
		return Result{Status: Warn, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%s has mode %04o, want 0700", d, fi.Mode.Perm()), Why: why,
			Fix: same("chmod 0700 " + shellQuote(d))}
	}
	return Result{Status: Pass, Found: fmt.Sprintf("XDG_RUNTIME_DIR=%s, owned by uid %d, mode 0700", d, s.UID)}
}

func checkUserManager(_ context.Context, r *run) Result {
	s := r.sys
	sock := fmt.Sprintf("/run/user/%d/systemd/private", s.UID)
	why := "The user's systemd manager (user@UID.service) owns the delegated cgroup subtree; usernode starts the node under it with Delegate=yes. " + degradedNote
	if fi, err := s.Stat(sock); err == nil && fi.Mode.Type() == fsModeSocket {
		return Result{Status: Pass, Found: "systemd --user is running (" + sock + ")"}
	}
	res := Result{Status: Fail, DegradedOnly: true, Why: why, Root: true,
		Found: "no systemd user manager for uid " + strconv.Itoa(s.UID) + " (" + sock + " is missing)",
		Fix:   same("loginctl enable-linger " + shellQuote(s.User) + "\n# starts user@" + strconv.Itoa(s.UID) + ".service now and at every boot")}
	if pid1, _ := s.readTrim("/proc/1/comm"); pid1 != "" && pid1 != "systemd" {
		res.Found += "; PID 1 is " + pid1 + ", not systemd, so no user manager can run"
		res.Fix = same("# boot this host with systemd as init; user managers and cgroup delegation come from systemd")
	}
	return res
}

func checkLinger(_ context.Context, r *run) Result {
	s := r.sys
	f := "/var/lib/systemd/linger/" + s.User
	if pid1, _ := s.readTrim("/proc/1/comm"); pid1 != "" && pid1 != "systemd" {
		return Result{Status: Skip, Found: "PID 1 is " + pid1 + ", not systemd: there is no user manager to keep running (see systemd.user-manager)"}
	}
	if s.exists(f) {
		return Result{Status: Pass, Found: "enabled (" + f + ")"}
	}
	return Result{Status: Warn, Found: "not enabled (" + f + " is missing)",
		Why:  "Without lingering, systemd stops the user manager, and the node with it, when the user's last session ends, and does not start it at boot.",
		Fix:  same("loginctl enable-linger " + shellQuote(s.User)),
		Root: true}
}

func checkDBus(_ context.Context, r *run) Result {
	s := r.sys
	bus := fmt.Sprintf("/run/user/%d/bus", s.UID)
	if fi, err := s.Stat(bus); err == nil && fi.Mode.Type() == fsModeSocket {
		return Result{Status: Pass, Found: "session bus at " + bus}
	}
	return Result{Status: Warn, Found: bus + " is missing",
		Why:  "systemd-run --user and systemctl --user from other tools, and runtimes using the systemd cgroup driver, talk to the user's manager over the session bus; without it they fail with \"Failed to connect to bus\".",
		Fix:  &Fix{Debian: "apt-get install -y dbus-user-session", Fedora: "dnf install -y dbus-daemon"},
		Root: true}
}
