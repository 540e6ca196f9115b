package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/procenv"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/internal/userns"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
)

// DefaultStopTimeout is how long a sandbox's first process gets to stop on
// SIGTERM before the whole node is killed.
const DefaultStopTimeout = 10 * time.Second

// Opt is what Run builds the sandbox with, passed in by the program rather
// than found in globals, as RootlessKit's parent.Opt: its drivers, the
// hook that runs once the node is up, and where the progress lines go.
type Opt struct {
	// Network is the driver that Config.Net names (network.Lookup gives
	// it). The zero value serves "none" only.
	Network network.Driver
	// Ports is the port forwarder, the one this program gave
	// RegisterEntries. Nil runs the node without one, and Config.Ports
	// must then be empty.
	Ports *PortDriver
	// Ready runs once the sandbox is up, until the sandbox ends (its ctx
	// is then cancelled). An error from it stops the sandbox, and Run
	// returns it.
	Ready func(ctx context.Context, st *State) error
	// Log gets the progress lines and warnings; nil discards them.
	Log *log.Logger
	// Restart, when set, builds the sandbox again after it dies (restart.go
	// says when); nil ends Run with the sandbox, as `sandbox run` wants.
	Restart *Restart
}

// Run builds the sandbox, runs cfg.Command as the node's first process and
// tears everything down when it exits or when the supervisor is told to
// stop. It returns the command's exit code. With opt.Restart, a sandbox
// that dies (a process of its own killed) is built again, as restart.go
// says.
func Run(ctx context.Context, cfg Config, opt Opt) (int, error) {
	mapping, err := preflight(cfg, opt)
	if err != nil {
		return 0, err
	}
	lk, err := takeLock(cfg.RuntimeDir, opt.Log)
	if err != nil {
		return 0, err
	}
	// Held across restarts, so that no second supervisor takes the node
	// while this one waits to build it again; its release empties the
	// runtime dir, so it is the last thing undone.
	defer func() {
		if err := lk.release(); err != nil {
			opt.Log.Infof("emptying the runtime dir: %v", err)
		}
	}()
	// Published at once, so that `usernode down` finds a node that is
	// still being built; publish replaces it once the node is up.
	if err := writeState(cfg.RuntimeDir, &State{Name: cfg.Name, Supervisor: os.Getpid(), StateDir: cfg.StateDir}); err != nil {
		return 0, err
	}
	var rs restarts
	for {
		r := &run{ctx: ctx, cfg: cfg, opt: opt, log: opt.Log, ready: opt.Log.Phase("ready"), mapping: mapping, restarts: rs.state()}
		code, err := r.once()
		d := r.died
		if d == "" || opt.Restart == nil || ctx.Err() != nil {
			return code, err
		}
		wait, giveUp := rs.next(*opt.Restart, time.Since(r.upAt), r.upAt.IsZero(), d)
		if giveUp != "" {
			return code, errors.New(giveUp)
		}
		opt.Log.Warnf("the node's sandbox died (%s); building it again in %s (restart %d)", d, wait, rs.count)
		if err := lk.clean(); err != nil {
			opt.Log.Warnf("emptying the runtime dir: %v", err)
		}
		st := rs.state()
		st.Next = time.Now().Add(wait)
		_ = writeState(cfg.RuntimeDir, &State{Name: cfg.Name, Supervisor: os.Getpid(), StateDir: cfg.StateDir, Restarts: st}) // status only: the restart goes on without it
		if !sleepOrStop(ctx, wait) {
			return code, nil
		}
	}
}

// once builds the sandbox and runs it until it ends: the node's first
// process exits, a stop is asked for, or the sandbox dies.
func (r *run) once() (int, error) {
	defer r.teardown()
	// Each step needs what the ones before it made, and registers its own
	// undoing as it goes: a start that stops at any step leaves nothing.
	steps := []func() error{
		r.newNetwork, r.prepareCgroups, r.portSocket,
		r.startAgent, r.startNetwork, r.publish, r.watchNetwork, r.addPorts,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			// A restart that fails to build is a death like another: the
			// next attempt may find what was missing (a port let go).
			if r.restarts != nil && r.ctx.Err() == nil {
				r.died = "building it again failed: " + err.Error()
			}
			return 0, err
		}
	}
	r.upAt = time.Now()
	r.ready(fmt.Sprintf("node %q", r.cfg.Name), fmt.Sprintf("init pid %d", r.initPID),
		fmt.Sprintf("%s cgroups", r.cg.Mode), "net "+r.cfg.Net)
	return r.wait()
}

// run is one Run: what each step made, for the steps after it and for the
// teardown.
type run struct {
	ctx   context.Context
	cfg   Config
	opt   Opt
	log   *log.Logger
	ready func(detail ...string)

	mapping    *userns.Mapping
	net        network.Parent
	cg         cgroup.Info
	nodeCgroup string
	portSock   string
	portFile   *os.File
	ch         *channel
	agent      *exec.Cmd
	agentGone  chan struct{} // closed once the agent is reaped
	agentCode  int           // valid once agentGone is closed
	initPID    int
	netCfg     *network.Config
	netNS      network.NS
	state      *State
	// netWatch restarts the network helper; netMu guards what it changes
	// (net, netCfg, state) once it runs.
	netWatch *netWatch
	netMu    sync.Mutex

	// restarts is the account of earlier deaths, nil on the first
	// build; died says how this sandbox died ("" if it did not), and upAt
	// when it was up.
	restarts *Restarts
	died     string
	upAt     time.Time

	// undo is what teardown runs after the agent is gone, last first.
	undo []func()
}

func (r *run) onTeardown(f func()) { r.undo = append(r.undo, f) }

// teardown undoes whatever the steps did, after a failure as after a clean
// stop. The agent goes first: its death takes init with it, and init's
// death every other process of the node, so nothing uses the network
// helper, the cgroup or the runtime dir any more when their turn comes.
func (r *run) teardown() {
	// The helper dies with the node: that is no exit to restart it for.
	r.stopNetWatch(false)
	if r.agent != nil {
		_ = r.agent.Process.Signal(syscall.SIGKILL) // a no-op once it has exited
		<-r.agentGone
	}
	// A restart under way ends once the agent is gone; after this the
	// run's Parent is the one to close.
	r.stopNetWatch(true)
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}

// preflight fails on a wrong setup before anything exists that would need
// undoing. Only the state dir is made here, and it is meant to stay.
func preflight(cfg Config, opt Opt) (*userns.Mapping, error) {
	if os.Geteuid() == 0 {
		return nil, errors.New("refusing to run as root: a rootless node runs as a regular user (run usernode as that user)")
	}
	// Without its entry points, the re-exec that should become the agent
	// would run this program's main again, in a new user namespace.
	if registered == nil {
		return nil, errors.New("sandbox: this program registered no sandbox entry points: call sandbox.RegisterEntries in main, before reexec.Init")
	}
	if opt.Ports != nil && registered.Ports == nil {
		return nil, errors.New("sandbox: Opt.Ports is set but sandbox.RegisterEntries got no port driver, so the agent could not forward")
	}
	if opt.Ports == nil && len(cfg.Ports) > 0 {
		return nil, errors.New("port forwarding is not available in this program (no sandbox.Opt.Ports)")
	}
	// The driver's parent is made again for each build of the sandbox;
	// this one only proves the name.
	if _, err := parentOf(opt.Network, cfg.Net); err != nil {
		return nil, err
	}
	m, err := userns.CurrentMapping()
	if err != nil {
		return nil, err
	}
	return m, mkPrivateDir(cfg.StateDir)
}

// newNetwork makes this build's network parent: a closed one is not
// started again.
func (r *run) newNetwork() (err error) {
	r.net, err = parentOf(r.opt.Network, r.cfg.Net)
	return err
}

// takeLock holds the runtime dir against a second supervisor, and clears
// what a crashed run left.
func takeLock(dir string, l *log.Logger) (*lock, error) {
	lk, err := acquire(dir)
	if err != nil {
		return nil, err
	}
	// A file that stays is told, not fatal: the files this run writes
	// replace the ones it has to.
	if err := lk.clean(); err != nil {
		l.Warnf("emptying the runtime dir of a crashed run: %v", err)
	}
	return lk, nil
}

// prepareCgroups gives the node a subtree of its own when the host
// delegates one, and otherwise tells the user that pod limits will not
// hold: degraded mode is a supported way to run, not an error.
func (r *run) prepareCgroups() error {
	r.cg = cgroup.Host{UID: os.Getuid(), PID: "self"}.Detect()
	if r.cg.Mode == cgroup.Full {
		dir, err := cgroup.Prepare(r.cg.Dir, r.cg.Controllers)
		if err != nil {
			r.cg.Mode, r.cg.Reason = cgroup.Degraded, err.Error()
		} else {
			r.nodeCgroup = dir
			// Undone once the agent is gone, and with it every process of
			// the node (init's death ends its pid namespace): the pods'
			// cgroups are left empty, and a later `up` from a scope (which
			// systemd does not trim) starts clean.
			r.onTeardown(func() {
				if err := cgroup.RemoveTree(dir); err != nil {
					r.log.Infof("removing the node's cgroup: %v", err)
				}
			})
		}
	}
	if r.cg.Mode == cgroup.Degraded {
		r.log.Warnf("DEGRADED MODE: %s.", r.cg.Reason)
		fix := ""
		if r.cg.Fix != "" {
			fix = fmt.Sprintf(" To fix: %s.", r.cg.Fix)
		}
		r.log.Infof("pod resource limits will NOT be enforced.%s", fix)
	}
	return nil
}

// portSocket makes the port API's socket here, in the host's view of the
// runtime dir, and keeps it as a file for the agent, which serves it: the
// agent's /run is a fresh tmpfs.
func (r *run) portSocket() error {
	if r.opt.Ports == nil {
		return nil
	}
	r.portSock = filepath.Join(r.cfg.RuntimeDir, PortSocket)
	l, err := net.Listen("unix", r.portSock)
	if err != nil {
		return err
	}
	ul := l.(*net.UnixListener)
	// Our copy closes here; the agent's keeps serving the path.
	ul.SetUnlinkOnClose(false)
	defer ul.Close()
	if err := os.Chmod(r.portSock, 0o600); err != nil {
		return err
	}
	f, err := ul.File()
	if err != nil {
		return err
	}
	r.portFile = f
	r.onTeardown(func() { _ = f.Close() }) // the agent holds its own copy
	return nil
}

// startAgent starts the agent in its new user namespace; the agent makes
// init in the node's namespaces, and the step ends when init's pid comes
// back. From here the agent exists, and teardown kills it.
func (r *run) startAgent() error {
	ch, childEnd, err := socketpair()
	if err != nil {
		return err
	}
	r.ch = ch
	r.onTeardown(func() { _ = ch.Close() }) // a socket: nothing to lose
	a := reexec.Command(agentEntry)
	a.Env = append(os.Environ(), fmt.Sprintf("%s=%d", supervisorEnv, os.Getpid()))
	a.Stdin, a.Stdout, a.Stderr = os.Stdin, os.Stdout, os.Stderr
	a.ExtraFiles = []*os.File{childEnd}
	if r.portFile != nil {
		a.ExtraFiles = append(a.ExtraFiles, r.portFile)
	}
	a.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := r.log.Phase("sandbox")
	err = userns.Start(a, unix.CLONE_NEWUSER|unix.CLONE_NEWNS|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC, r.mapping)
	_ = childEnd.Close() // the agent holds its own copy
	if err != nil {
		return err
	}
	r.agent, r.agentGone = a, make(chan struct{})
	go func() {
		_ = a.Wait() // how it ended is in a.ProcessState
		r.agentCode = exitCode(a.ProcessState)
		close(r.agentGone)
	}()
	ac := agentConfig{Config: r.cfg, Cgroup: r.cg, NodeCgroup: r.nodeCgroup, Ports: r.portFile != nil}
	if err := r.ch.send(msg{Kind: "config", Config: &ac}); err != nil {
		return fmt.Errorf("setting up the sandbox: %w", err)
	}
	im, err := r.ch.recv("init")
	if err != nil {
		return fmt.Errorf("setting up the sandbox: %w", err)
	}
	r.initPID = im.PID
	done()
	return nil
}

// startNetwork attaches the node's interface from the host side, then has
// init configure the inside; the node has its network once init says so.
func (r *run) startNetwork() error {
	done := r.log.Phase("network")
	netDir := filepath.Join(r.cfg.RuntimeDir, "net")
	if err := mkPrivateDir(netDir); err != nil {
		return err
	}
	// Before Start: a Start that fails half-way may have left a helper
	// running, and Close stops whatever it started.
	r.onTeardown(func() {
		if err := r.net.Close(); err != nil {
			r.log.Infof("stopping the network: %v", err)
		}
	})
	// Kept for restarts of the helper: the same namespaces, held by the
	// same init, for the node's lifetime.
	r.netNS = network.NS{
		PID:      r.initPID,
		UserNS:   fmt.Sprintf("/proc/%d/ns/user", r.agent.Process.Pid),
		NetNS:    fmt.Sprintf("/proc/%d/ns/net", r.initPID),
		StateDir: netDir,
	}
	netCfg, err := r.net.Start(r.ctx, r.netNS, r.cfg.NetOptions)
	if err != nil {
		return fmt.Errorf("network driver %s: %w", r.cfg.Net, err)
	}
	if err := r.ch.send(msg{Kind: "net", Net: netCfg}); err != nil {
		return err
	}
	if _, err := r.ch.recv("ready"); err != nil {
		return fmt.Errorf("configuring the node's network: %w", err)
	}
	r.netCfg = netCfg
	done()
	return nil
}

// publish writes state.json, by which `enter`, `status`, `port` and the
// Ready hook find the node. The lock's release removes it again.
func (r *run) publish() error {
	r.state = &State{Name: r.cfg.Name, Supervisor: os.Getpid(), Agent: r.agent.Process.Pid, Init: r.initPID,
		Cgroup: r.cg, Network: r.netCfg, StateDir: r.cfg.StateDir, PortSocket: r.portSock, Restarts: r.restarts}
	if _, ok := r.net.(network.Waiter); ok {
		r.state.NetHelper = &NetHelper{Name: r.opt.Network.Helper, PID: helperPID(r.netCfg)}
	}
	return writeState(r.cfg.RuntimeDir, r.state)
}

// addPorts forwards the config's ports before the node counts as ready, so
// that a port that cannot be had fails the start instead of a later
// request.
func (r *run) addPorts() error {
	if len(r.cfg.Ports) == 0 {
		return nil
	}
	c := r.opt.Ports.Client(r.portSock)
	for _, p := range r.cfg.Ports {
		if err := addPort(r.ctx, c, p, portBusyFor); err != nil {
			return fmt.Errorf("forwarding %s %s:%d -> %d: %w", p.Proto, p.HostIP, p.HostPort, p.ChildPort, err)
		}
	}
	return nil
}

// portBusyFor is how long a node's own port that another socket holds is
// asked for again before the start fails. A second `up` of the same node,
// started at once, checks that the ports are free by binding each for a
// moment; on a loaded host that moment can be when this start binds it.
// The fault suite's two ups at once failed so in CI: each up's check saw
// the node not yet running, one bound its ports while the other's check
// held one, and neither was refused as "already running".
const portBusyFor = 2 * time.Second

// addPort forwards p, waiting out for busyFor a host port another socket
// holds.
func addPort(ctx context.Context, c PortClient, p port.Spec, busyFor time.Duration) error {
	deadline := time.Now().Add(busyFor)
	for {
		err := c.Add(ctx, p)
		if err == nil || !errors.Is(err, port.ErrInUse) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// wait runs the node until its first process ends. A signal, the end of
// ctx or a failing Ready hook stops it: SIGTERM first, so the node can
// shut down in order, then SIGKILL once StopTimeout has passed.
func (r *run) wait() (int, error) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	hookErr := make(chan error, 1)
	if r.opt.Ready != nil {
		hctx, hcancel := context.WithCancel(r.ctx)
		defer hcancel()
		r.netMu.Lock()
		st := r.state
		r.netMu.Unlock()
		go func() { hookErr <- r.opt.Ready(hctx, st) }()
	}
	var stopErr error
	var deadline <-chan time.Time
	stop := func() {
		if deadline == nil {
			_ = r.agent.Process.Signal(syscall.SIGTERM) // gone already: agentGone says so
			deadline = time.After(r.cfg.StopTimeout)
		}
	}
	ctxDone := r.ctx.Done()
	for {
		select {
		case <-r.agentGone:
			// Nobody asked it to stop, and it was killed: the agent, init
			// or the node's first process. A command that ends, even
			// failing, ended the node on purpose.
			if deadline == nil && r.agentCode > 128 {
				r.died = fmt.Sprintf("%s, exit %d", deathOf(r.agentCode), r.agentCode)
			}
			return r.agentCode, stopErr
		case err := <-hookErr:
			if err != nil && deadline == nil {
				stopErr = err
				stop()
			}
		case <-sigs:
			stop()
		case <-ctxDone:
			// A done ctx stays ready: without this the loop would spin
			// for as long as the node takes to stop.
			ctxDone = nil
			stop()
		case <-deadline:
			r.log.Infof("the node did not stop within %s; killing it", r.cfg.StopTimeout)
			_ = r.agent.Process.Signal(syscall.SIGKILL) // as above
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
	c.Env = []string{"PATH=" + procenv.Path, "HOME=/root", "USER=root", "LOGNAME=root"}
	if t := os.Getenv("TERM"); t != "" {
		c.Env = append(c.Env, "TERM="+t)
	}
	return c, nil
}
