package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/userns"
)

// DefaultStopTimeout is how long a sandbox's first process gets to stop on
// SIGTERM before the whole node is killed.
const DefaultStopTimeout = 10 * time.Second

// Run builds the sandbox, runs cfg.Command as the node's first process and
// tears everything down when it exits or when the supervisor is told to
// stop. It returns the command's exit code. Progress goes to log.
func Run(ctx context.Context, cfg Config, log io.Writer) (int, error) {
	return RunWithHooks(ctx, cfg, log, Hooks{})
}

// Hooks let a caller act on the host side of a running sandbox.
type Hooks struct {
	// Ready runs once the sandbox is up, until the sandbox ends (its ctx
	// is then cancelled). An error from it stops the sandbox, and Run
	// returns it.
	Ready func(ctx context.Context, st *State) error
}

// RunWithHooks is Run with hooks.
func RunWithHooks(ctx context.Context, cfg Config, log io.Writer, hooks Hooks) (int, error) {
	if os.Geteuid() == 0 {
		return 0, errors.New("refusing to run as root: a rootless node runs as a regular user (run usernode as that user)")
	}
	start := time.Now()
	phase := func(name string, since time.Time) {
		fmt.Fprintf(log, "usernode: %-10s %6.0fms\n", name, float64(time.Since(since).Microseconds())/1000)
	}
	m, err := userns.CurrentMapping()
	if err != nil {
		return 0, err
	}
	if err := mkPrivateDir(cfg.StateDir); err != nil {
		return 0, err
	}
	netParent, _, err := NetworkDriver(cfg.Net)
	if err != nil {
		return 0, err
	}
	lk, err := acquire(cfg.RuntimeDir)
	if err != nil {
		return 0, err
	}
	defer lk.release()

	cg := cgroup.Host{UID: os.Getuid(), PID: "self"}.Detect()
	var nodeCgroup string
	if cg.Mode == cgroup.Full {
		if nodeCgroup, err = cgroup.Prepare(cg.Dir, cg.Controllers); err != nil {
			cg.Mode, cg.Reason = cgroup.Degraded, err.Error()
			nodeCgroup = ""
		} else {
			// Runs once the agent is gone, and with it every process of
			// the node (init's death ends its pid namespace): the pods'
			// cgroups are left empty, and a later `up` from a scope (which
			// systemd does not trim) starts clean.
			defer func() {
				if err := cgroup.RemoveTree(nodeCgroup); err != nil {
					fmt.Fprintf(log, "usernode: removing the node's cgroup: %v\n", err)
				}
			}()
		}
	}
	if cg.Mode == cgroup.Degraded {
		fmt.Fprintf(log, "usernode: WARNING: DEGRADED MODE: %s.\nusernode: pod resource limits will NOT be enforced.", cg.Reason)
		if cg.Fix != "" {
			fmt.Fprintf(log, " To fix: %s.", cg.Fix)
		}
		fmt.Fprintln(log)
	}

	var portFile *os.File
	var portSock string
	if Ports != nil {
		portSock = filepath.Join(cfg.RuntimeDir, "port.sock")
		l, err := net.Listen("unix", portSock)
		if err != nil {
			return 0, err
		}
		if err := os.Chmod(portSock, 0o600); err != nil {
			return 0, err
		}
		ul := l.(*net.UnixListener)
		// The agent serves the socket; our copy must not unlink it.
		ul.SetUnlinkOnClose(false)
		portFile, err = ul.File()
		ul.Close()
		if err != nil {
			return 0, err
		}
		defer portFile.Close()
	}

	ch, childEnd, err := socketpair()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	ac := agentConfig{Config: cfg, Cgroup: cg, NodeCgroup: nodeCgroup, Ports: portFile != nil}
	agent := reexec.Command(agentEntry)
	agent.Env = append(os.Environ(), fmt.Sprintf("%s=%d", supervisorEnv, os.Getpid()))
	agent.Stdin, agent.Stdout, agent.Stderr = os.Stdin, os.Stdout, os.Stderr
	agent.ExtraFiles = []*os.File{childEnd}
	if portFile != nil {
		agent.ExtraFiles = append(agent.ExtraFiles, portFile)
	}
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t := time.Now()
	err = userns.Start(agent, unix.CLONE_NEWUSER|unix.CLONE_NEWNS|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC, m)
	childEnd.Close()
	if err != nil {
		return 0, err
	}
	ch.send(msg{Kind: "config", Config: &ac})
	exited := make(chan int, 1)
	go func() {
		agent.Wait()
		exited <- exitCode(agent.ProcessState)
	}()
	// From here on a failure must take the namespaces down with it.
	var netRunning network.Parent
	fail := func(err error) (int, error) {
		agent.Process.Signal(syscall.SIGKILL)
		<-exited
		if netRunning != nil {
			netRunning.Close()
		}
		return 0, err
	}

	im, err := ch.recv("init")
	if err != nil {
		return fail(fmt.Errorf("setting up the sandbox: %w", err))
	}
	phase("sandbox", t)
	t = time.Now()
	netDir := filepath.Join(cfg.RuntimeDir, "net")
	if err := mkPrivateDir(netDir); err != nil {
		return fail(err)
	}
	netCfg, err := netParent.Start(ctx, network.NS{
		PID:      im.PID,
		UserNS:   fmt.Sprintf("/proc/%d/ns/user", agent.Process.Pid),
		NetNS:    fmt.Sprintf("/proc/%d/ns/net", im.PID),
		StateDir: netDir,
	}, cfg.NetOptions)
	if err != nil {
		return fail(fmt.Errorf("network driver %s: %w", cfg.Net, err))
	}
	netRunning = netParent
	defer netParent.Close()
	if err := ch.send(msg{Kind: "net", Net: netCfg}); err != nil {
		return fail(err)
	}
	if _, err := ch.recv("ready"); err != nil {
		return fail(fmt.Errorf("configuring the node's network: %w", err))
	}
	phase("network", t)
	st := &State{Name: cfg.Name, Supervisor: os.Getpid(), Agent: agent.Process.Pid, Init: im.PID,
		Cgroup: cg, Network: netCfg, StateDir: cfg.StateDir, PortSocket: portSock}
	if err := writeState(cfg.RuntimeDir, st); err != nil {
		return fail(err)
	}
	for _, p := range cfg.Ports {
		if err := Ports.Client(portSock).Add(ctx, p); err != nil {
			return fail(fmt.Errorf("forwarding %s %s:%d -> %d: %w", p.Proto, p.HostIP, p.HostPort, p.ChildPort, err))
		}
	}
	fmt.Fprintf(log, "usernode: ready      %6.0fms (node %q, init pid %d, %s cgroups, net %s)\n",
		float64(time.Since(start).Microseconds())/1000, cfg.Name, im.PID, cg.Mode, cfg.Net)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	hookErr := make(chan error, 1)
	if hooks.Ready != nil {
		hctx, hcancel := context.WithCancel(ctx)
		defer hcancel()
		go func() { hookErr <- hooks.Ready(hctx, st) }()
	}
	var stopErr error
	var deadline <-chan time.Time
	for {
		select {
		case code := <-exited:
			return code, stopErr
		case err := <-hookErr:
			if err != nil && deadline == nil {
				stopErr = err
				agent.Process.Signal(syscall.SIGTERM)
				deadline = time.After(cfg.StopTimeout)
			}
		case <-sigs:
			if deadline == nil {
				agent.Process.Signal(syscall.SIGTERM)
				deadline = time.After(cfg.StopTimeout)
			}
		case <-ctx.Done():
			if deadline == nil {
				agent.Process.Signal(syscall.SIGTERM)
				deadline = time.After(cfg.StopTimeout)
			}
		case <-deadline:
			fmt.Fprintf(log, "usernode: the node did not stop within %s; killing it\n", cfg.StopTimeout)
			agent.Process.Signal(syscall.SIGKILL)
		}
	}
}

// agentConfig is the agent's argv[1].
type agentConfig struct {
	Config
	Cgroup     cgroup.Info `json:"cgroup"`
	NodeCgroup string      `json:"nodeCgroup,omitempty"`
	Ports      bool        `json:"ports"`
}

// Enter returns a command that runs argv inside a running sandbox's
// namespaces as uid 0 of its user namespace. nsenter (util-linux) does the
// setns calls: a Go program cannot join a user namespace once it has
// threads.
func Enter(runtimeDir string, argv []string) (*exec.Cmd, error) {
	st, err := Running(runtimeDir)
	if err != nil {
		return nil, err
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("nsenter not found in PATH: install util-linux")
	}
	if len(argv) == 0 {
		argv = []string{"/bin/sh"}
		if sh := os.Getenv("SHELL"); sh != "" {
			argv = []string{sh}
		}
	}
	args := append([]string{"--target", fmt.Sprint(st.Init), "--user", "--mount", "--net", "--uts", "--ipc", "--pid", "--cgroup", "--wdns=/", "--"}, argv...)
	c := exec.Command(nsenter, args...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The node's own environment, not the caller's: the caller's
	// XDG_RUNTIME_DIR and the like name host paths the node cannot see
	// (ctr inside would pick them up).
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "USER=root", "LOGNAME=root"}
	if t := os.Getenv("TERM"); t != "" {
		c.Env = append(c.Env, "TERM="+t)
	}
	return c, nil
}
