package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/usernode/usernode/internal/procenv"
)

// execCmd starts the node's first process without os/exec's Wait, because
// init reaps every child itself.
type execCmd struct {
	argv   []string
	env    []string
	reexec string
}

func (c *execCmd) start() (int, error) {
	if c.reexec != "" {
		c.argv = append([]string{c.reexec}, c.argv...)
	}
	path := "/proc/self/exe"
	if c.reexec == "" {
		var err error
		if path, err = exec.LookPath(c.argv[0]); err != nil {
			return 0, fmt.Errorf("command %q: %w", c.argv[0], err)
		}
	}
	env := c.env
	if env == nil {
		env = []string{"PATH=" + procenv.Path, "HOME=/root", "USER=root", "LOGNAME=root"}
		if t := os.Getenv("TERM"); t != "" {
			env = append(env, "TERM="+t)
		}
	}
	return syscall.ForkExec(path, c.argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []uintptr{0, 1, 2},
	})
}

func waitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 125
	}
	return waitCode(ps.Sys().(syscall.WaitStatus))
}
