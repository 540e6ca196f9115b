package userns

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// mapFDEnv passes the number of the pipe on which the child waits until the
// parent has written its ID maps.
const mapFDEnv = "_USERNODE_USERNS_MAPFD"

// Start starts cmd in new namespaces (flags must include CLONE_NEWUSER),
// maps the caller's IDs into it with m, and lets it go on. cmd must run an
// entry point that calls WaitMapped before anything else.
//
// The child is exec'd before it can be mapped, so the kernel drops its
// capabilities at that exec (its uid is still unmapped). WaitMapped execs it
// once more after the mapping, as uid 0 of the namespace, which gives it the
// full capability set there.
func Start(cmd *exec.Cmd, flags uintptr, m *Mapping) error {
	if flags&unix.CLONE_NEWUSER == 0 {
		return fmt.Errorf("userns.Start: CLONE_NEWUSER not in flags")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd.ExtraFiles = append(cmd.ExtraFiles, r)
	cmd.Env = append(envOrEnviron(cmd.Env), fmt.Sprintf("%s=%d", mapFDEnv, 2+len(cmd.ExtraFiles)))
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= flags
	// w is a pipe end: closing it frees it and cannot lose anything.
	if err := cmd.Start(); err != nil {
		_ = w.Close()
		return fmt.Errorf("creating namespaces: %w%s", err, cloneHint(err))
	}
	if err := m.Apply(cmd.Process.Pid); err != nil {
		_ = w.Close() // EOF: the child exits
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	_, err = w.Write([]byte{1})
	_ = w.Close()
	return err
}

func envOrEnviron(env []string) []string {
	if env == nil {
		return os.Environ()
	}
	return env
}

func cloneHint(err error) string {
	switch {
	case errIs(err, unix.EPERM), errIs(err, unix.EACCES):
		return " (unprivileged user namespaces are disabled or restricted: see `usernode doctor`, checks kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns)"
	case errIs(err, unix.ENOSPC):
		return " (user.max_user_namespaces is exhausted or 0: see `usernode doctor`)"
	}
	return ""
}

func errIs(err error, target syscall.Errno) bool {
	for err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return e == target
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// WaitMapped is the first call of an entry point started by Start. It blocks
// until the parent has written the maps and then re-execs the process as
// uid 0 of its namespace. It returns only in the re-exec'd process (or when
// the process was not started by Start).
func WaitMapped() error {
	s, ok := os.LookupEnv(mapFDEnv)
	if !ok {
		return nil
	}
	fd, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("bad %s=%q", mapFDEnv, s)
	}
	f := os.NewFile(uintptr(fd), "userns-map")
	buf := make([]byte, 1)
	n, _ := f.Read(buf)
	_ = f.Close() // a pipe's read end, read from; the exec below closes it anyway
	if n != 1 {
		return fmt.Errorf("the parent failed to map IDs into the new user namespace")
	}
	if err := os.Unsetenv(mapFDEnv); err != nil {
		return err
	}
	return syscall.Exec("/proc/self/exe", os.Args, os.Environ())
}
