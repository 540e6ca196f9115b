package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/memtrim"
	"github.com/usernode/usernode/internal/mounts"
	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/internal/userns"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/network"
)

const (
	supervisorEnv = "_USERNODE_SUPERVISOR_PID"
	agentEntry    = "usernode-sandbox-agent"
	initEntry     = "usernode-sandbox-init"
)

// die reports a setup failure to the process above and exits.
func die(ch *channel, err error) {
	if ch != nil {
		_ = ch.send(msg{Kind: "error", Error: err.Error()}) // best effort: stderr has it too
	}
	log.New(os.Stderr, 0).Infof("%v", err)
	os.Exit(125)
}

// agentMain is the agent: it builds the node's mounts, starts init and
// serves the port forwarder with e's driver.
func agentMain(e Entries) {
	// init is started with a parent-death signal, which the kernel sends
	// when the *thread* that started it ends; Go ends a thread whenever a
	// goroutine that locked it returns (the port forwarder does, entering
	// the node's netns). Keep this one for good.
	runtime.LockOSThread()
	if err := userns.WaitMapped(); err != nil {
		die(nil, err)
	}
	// The re-exec as root of the namespace raised our capabilities, and the
	// kernel clears the parent-death signal on such a change: set it again,
	// then make sure the supervisor did not die before we did.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		die(nil, err)
	}
	if os.Getppid() != supervisorPID() {
		os.Exit(125)
	}
	up := newChannel(os.NewFile(3, "sync"))
	ac := readConfig(up)
	var portL net.Listener
	if ac.Ports {
		l, err := net.FileListener(os.NewFile(4, "port.sock"))
		if err != nil {
			die(up, fmt.Errorf("agent: port socket: %w", err))
		}
		portL = l
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf") // before /etc is replaced
	if err := setupMounts(&ac.Config, resolv); err != nil {
		die(up, err)
	}
	if err := unix.Sethostname([]byte(ac.Name)); err != nil {
		die(up, fmt.Errorf("sethostname: %w", err))
	}

	down, childEnd, err := socketpair()
	if err != nil {
		die(up, err)
	}
	node := reexec.Command(initEntry)
	node.Stdin, node.Stdout, node.Stderr = os.Stdin, os.Stdout, os.Stderr
	node.ExtraFiles = []*os.File{childEnd}
	node.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP,
		Pdeathsig:  syscall.SIGKILL,
	}
	if ac.NodeCgroup != "" {
		// Start init inside the node's cgroup so that its new cgroup
		// namespace is rooted there.
		fd, err := unix.Open(ac.NodeCgroup, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			die(up, fmt.Errorf("opening the node cgroup: %w", err))
		}
		node.SysProcAttr.UseCgroupFD, node.SysProcAttr.CgroupFD = true, fd
	}
	if err := node.Start(); err != nil {
		die(up, fmt.Errorf("creating the node's network, pid and mount namespaces: %w", err))
	}
	// kill ends the node on a failed setup. Kill's error is that init has
	// gone already, which is as good.
	kill := func(err error) {
		_ = node.Process.Kill()
		die(up, err)
	}
	// Hold the node's netns from the start: the forwarder's setup takes a
	// while, and init may be gone again soon when its command is short.
	netns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", node.Process.Pid))
	if err != nil {
		kill(fmt.Errorf("opening the node's network namespace: %w", err))
	}
	defer netns.Close()
	_ = childEnd.Close() // init has its own copy
	if err := down.send(msg{Kind: "config", Config: &ac}); err != nil {
		kill(err)
	}
	initPID := node.Process.Pid
	exited := make(chan int, 1)
	go func() {
		_ = node.Wait() // how init ended is in node.ProcessState
		exited <- exitCode(node.ProcessState)
	}()
	if portL != nil {
		if e.Ports == nil {
			kill(errors.New("port forwarder: this program registered no port driver (sandbox.RegisterEntries)"))
		}
		f, err := e.Ports.NewForwarder(fmt.Sprintf("/proc/self/fd/%d", netns.Fd()), ac.PortOptions)
		if err != nil {
			kill(fmt.Errorf("port forwarder: %w", err))
		}
		defer f.Close()
		go func() {
			// It returns an error only when accepting fails for good: the
			// node runs on, without port forwarding, and the log says why.
			if err := e.Ports.Serve(portL, f); err != nil {
				log.New(os.Stderr, 0).Warnf("port forwarder API: %v", err)
			}
		}()
	}
	if err := up.send(msg{Kind: "init", PID: initPID}); err != nil {
		kill(err)
	}
	nm, err := up.recv("net")
	if err != nil {
		kill(err)
	}
	if err := down.send(nm); err != nil {
		kill(err)
	}
	if _, err := down.recv("ready"); err != nil {
		kill(err)
	}
	if err := up.send(msg{Kind: "ready"}); err != nil {
		kill(err)
	}
	go relayNet(up, down)
	// The agent now serves the forwarder and waits: what its setup left
	// mapped and allocated goes back (internal/memtrim has the figures).
	memtrim.Trim()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for {
		select {
		case code := <-exited:
			os.Exit(code)
		case s := <-sigs:
			_ = node.Process.Signal(s) // fails once init is gone, and exited says so
		}
	}
}

// relayNet passes the supervisor's later "net" messages (the network
// helper was started again) down to init, and init's answers back up. It
// ends when the supervisor's end closes: the agent dies with it anyway.
func relayNet(up, down *channel) {
	for {
		m, err := up.recv("net")
		if err != nil {
			if m.Kind == "" {
				return // closed
			}
			continue // not a message for us: nothing else comes this way
		}
		if err := down.send(m); err != nil {
			_ = up.send(msg{Kind: "error", Error: "init: " + err.Error()}) // a closed supervisor end: nothing to tell
			continue
		}
		a, err := down.recv("ready")
		if err != nil {
			a = msg{Kind: "error", Error: err.Error()}
		}
		_ = up.send(a) // as above
	}
}

// supervisorPID is the pid the supervisor wrote into our environment.
func supervisorPID() int {
	var pid int
	_, _ = fmt.Sscan(os.Getenv(supervisorEnv), &pid) // unset or bad: 0, no one's parent
	return pid
}

func readConfig(ch *channel) agentConfig {
	m, err := ch.recv("config")
	if err != nil || m.Config == nil {
		die(ch, fmt.Errorf("%s: no configuration from the supervisor: %v", os.Args[0], err))
	}
	return *m.Config
}

// setupMounts makes the node's directories writable in the agent's new
// mount namespace. Nothing here can reach the host's mount table: a mount
// namespace owned by a user namespace only receives propagation.
func setupMounts(c *Config, resolv []byte) error {
	// Slave, so host mounts still show up. Shared comes last: MS_MOVE
	// refuses mounts under a shared parent.
	if err := mounts.Propagate("/", unix.MS_SLAVE); err != nil {
		return err
	}
	for _, w := range Writable {
		src := filepath.Join(c.StateDir, w)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := mounts.Bind(src, w); err != nil {
			return err
		}
	}
	for _, d := range SeedDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The runtime dir sits under /run/user/UID, which the fresh /run hides:
	// keep a handle and show it again at /run/usernode, where the node
	// writes the status the host reads.
	rt, err := unix.Open(c.RuntimeDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runtime dir: %w", err)
	}
	defer unix.Close(rt)
	if err := mounts.Tmpfs("/run", 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(RuntimeDirInside, 0o700); err != nil {
		return err
	}
	if err := mounts.Bind(fmt.Sprintf("/proc/self/fd/%d", rt), RuntimeDirInside); err != nil {
		return err
	}
	scratch := "/run/.usernode-etc"
	if err := os.Mkdir(scratch, 0o700); err != nil {
		return err
	}
	if _, err := mounts.CopyUp("/etc", scratch); err != nil {
		return fmt.Errorf("copying up /etc: %w", err)
	}
	_ = os.Remove(scratch) // emptied by the move; left over, it is harmless
	// The host's resolv.conf is often a symlink into /run, which is now a
	// fresh tmpfs: keep its content instead.
	if err := os.Remove("/etc/resolv.conf"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile("/etc/resolv.conf", resolv, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/hostname", []byte(c.Name+"\n"), 0o644); err != nil {
		return err
	}
	if err := mounts.Tmpfs("/tmp", 0o1777); err != nil {
		return err
	}
	// CRI-O (containers/image, as root) records short-name resolutions in
	// /var/cache/containers; the host's /var/cache is read-only here.
	if err := mounts.Tmpfs("/var/cache", 0o755); err != nil {
		return err
	}
	// Shared, so the kubelet's volume mounts propagate between the node's
	// own mount namespaces.
	return mounts.Propagate("/", unix.MS_SHARED)
}

// initMain is pid 1 of the node; it configures the node's side of the
// network with e's driver.
func initMain(e Entries) {
	up := newChannel(os.NewFile(3, "sync"))
	ac := readConfig(up)
	if err := setupNodeMounts(ac.Cgroup.Mode == cgroup.Full); err != nil {
		die(up, err)
	}
	nm, err := up.recv("net")
	if err != nil {
		die(up, err)
	}
	child, err := e.childOf(ac.Net)
	if err != nil {
		die(up, err)
	}
	if err := child.Configure(nm.Net); err != nil {
		die(up, fmt.Errorf("network %s: %w", ac.Net, err))
	}
	if err := writeResolvConf(nm.Net); err != nil {
		die(up, err)
	}
	// The node routes for its pods; this netns is the node's own.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		die(up, fmt.Errorf("net.ipv4.ip_forward in the node: %w", err))
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := &execCmd{argv: ac.Command, env: ac.Env, reexec: ac.Reexec}
	pid, err := cmd.start()
	if err != nil {
		die(up, err)
	}
	if err := up.send(msg{Kind: "ready"}); err != nil {
		os.Exit(125)
	}
	go reconfigureNet(up, child, ac.Net)
	// From here init only reaps and passes signals on (internal/memtrim).
	memtrim.Trim()
	memtrim.Quiet()
	// As pid 1, init reaps every orphan of the node, and ends the node when
	// its first process ends.
	for s := range sigs {
		if s != syscall.SIGCHLD {
			_ = syscall.Kill(pid, s.(syscall.Signal)) // ESRCH once it has ended: reaped below
			continue
		}
		for {
			var ws syscall.WaitStatus
			p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || p <= 0 {
				break
			}
			if p == pid {
				os.Exit(waitCode(ws))
			}
		}
	}
}

// writeResolvConf points the node's resolver at the driver's DNS, when it
// has one; the same file again changes nothing.
func writeResolvConf(cfg *network.Config) error {
	if len(cfg.DNS) == 0 {
		return nil
	}
	var b []byte
	for _, d := range cfg.DNS {
		b = fmt.Appendf(b, "nameserver %s\n", d)
	}
	if old, err := os.ReadFile("/etc/resolv.conf"); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return os.WriteFile("/etc/resolv.conf", b, 0o644)
}

// reconfigureNet is init's side of a restart of the network helper: the
// driver's Child half again (slirp4netns and pasta configure their new
// device themselves; Configure waits for its address and brings up lo,
// which stays up anyway), the resolver, and a measure of the result for
// the supervisor's log. What the node added to its namespace besides (the
// port forwarder's policy routing and nft table, the pods' bridge and
// routes, iptables) is not on the helper's device and outlives it.
func reconfigureNet(ch *channel, child network.Child, driver string) {
	for {
		nm, err := ch.recv("net")
		if err != nil {
			if nm.Kind == "" {
				return // the agent is gone, and the node with it
			}
			continue
		}
		err = child.Configure(nm.Net)
		if err == nil {
			err = writeResolvConf(nm.Net)
		}
		if err != nil {
			_ = ch.send(msg{Kind: "error", Error: fmt.Sprintf("network %s: %v", driver, err)}) // the agent's end is gone: nobody to tell
			continue
		}
		h := network.Measure(nm.Net, time.Second)
		_ = ch.send(msg{Kind: "ready", Health: &h}) // as above
	}
}

// setupNodeMounts gives init's own mount namespace a /proc for its pid
// namespace and a /sys for its network namespace, keeping the cgroup tree.
func setupNodeMounts(fullCgroups bool) error {
	// Slave: init's /proc and /sys must not show up in the agent's view.
	if err := mounts.Propagate("/", unix.MS_SLAVE); err != nil {
		return err
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	keep := "/run/.usernode-cgroup"
	if err := os.Mkdir(keep, 0o700); err != nil {
		return err
	}
	// It fails only with a mount still on keep, after an error that ends
	// init anyway.
	defer func() { _ = os.Remove(keep) }()
	if !fullCgroups {
		if err := mounts.Bind("/sys/fs/cgroup", keep); err != nil {
			return err
		}
	}
	// A sysfs of the node's own shows its interfaces under /sys/class/net.
	// Kernels that refuse it leave the host's /sys, which still works.
	sysfs := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "") == nil
	switch {
	case fullCgroups:
		if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mounting the node's cgroup2: %w", err)
		}
		return cgroup.EvacuateToInit("/sys/fs/cgroup")
	case sysfs:
		return unix.Mount(keep, "/sys/fs/cgroup", "", unix.MS_MOVE, "")
	default:
		return unix.Unmount(keep, unix.MNT_DETACH)
	}
}
