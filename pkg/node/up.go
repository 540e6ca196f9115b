package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/atomicfile"
	"github.com/usernode/usernode/internal/k8sversion"
	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/memtrim"
	"github.com/usernode/usernode/internal/procenv"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/network"

	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/flannel"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/sandbox"
)

// SandboxConfig is the sandbox that runs cl's node on this host.
func SandboxConfig(cl *cluster.Cluster, getenv func(string) string) (sandbox.Config, error) {
	o := cl.Options
	c := sandbox.Config{Name: cl.Self().Name, StateDir: o.StateDir, Net: o.Net,
		NetOptions:  network.Options{Subnet: cl.Self().Subnet},
		PortOptions: sandbox.PortOptions{BusyPoll: o.PortBusyPoll, KeepSourceIP: o.KeepSourceIP},
		Reexec:      Entry}
	return c, c.Defaults(getenv)
}

// hostPorts are the node's own forwards: kube-apiserver and the kubelet,
// from the host IP, and from 127.0.0.1 too when the host IP is another
// address, so that what runs on the host itself keeps the loopback path.
func hostPorts(cl *cluster.Cluster) []port.Spec {
	n := cl.Self()
	var out []port.Spec
	for _, ip := range []netip.Addr{n.HostIP, netip.AddrFrom4([4]byte{127, 0, 0, 1})} {
		if n.Role == cluster.ControlPlane {
			out = append(out, port.Spec{Proto: "tcp", HostIP: ip, HostPort: n.APIPort, ChildPort: cluster.APIServerPort})
		}
		out = append(out, port.Spec{Proto: "tcp", HostIP: ip, HostPort: n.KubeletPort, ChildPort: cluster.KubeletPort})
		if ip.IsLoopback() {
			break
		}
	}
	if n.DNSPort != 0 {
		for _, proto := range []string{"udp", "tcp"} {
			out = append(out, port.Spec{Proto: proto, HostIP: n.HostIP, HostPort: n.DNSPort, ChildPort: 53})
		}
	}
	// Flannel's peers send VXLAN to the host IP (the node publishes it as
	// its public IP); the node's kernel takes it from there.
	if n.CNI == flannel.CNI.Name && !n.HostIP.IsLoopback() {
		out = append(out, port.Spec{Proto: "udp", HostIP: n.HostIP, HostPort: cl.VXLANPort, ChildPort: cl.VXLANPort})
	}
	return out
}

// Paths are the host-side paths of a node's files, for the commands that
// read them from outside: the state dir (kept across runs) and the runtime
// dir (this run's).
type Paths struct{ State, Runtime string }

// PathsOf gives the paths of the node that runs with sandbox config c.
func PathsOf(c sandbox.Config) Paths { return Paths{State: c.StateDir, Runtime: c.RuntimeDir} }

// Kubeconfig is the user's kubeconfig for the node, written at each `up`.
func (p Paths) Kubeconfig() string { return filepath.Join(p.State, "kubeconfig") }

// PKI is the node's certificate dir (PKIDir inside), kept across runs.
func (p Paths) PKI() string { return p.inside(PKIDir) }

// Logs is the components' and the supervisor's log dir (LogDir inside).
func (p Paths) Logs() string { return p.inside(LogDir) }

// Status is the status file the node's supervisor keeps (StatusFile
// inside), which `usernode status` reads.
func (p Paths) Status() string { return filepath.Join(p.Runtime, "status.json") }

// Ready is the marker `up` writes once the node is Ready, which a detached
// `up` waits for.
func (p Paths) Ready() string { return filepath.Join(p.Runtime, "node-ready") }

func (p Paths) spec() string { return filepath.Join(p.Runtime, "node.json") }

// exposure is where the host side says which ports it exposes.
func (p Paths) exposure() string { return filepath.Join(p.Runtime, "exposure.json") }

// Check does what `up` must do before it builds anything: the node is
// not running, its components' tools are there, the Kubernetes version is
// one usernode configures (and the one the model asks for), the host ports
// are free. Each failure names its fix. It fills in cl's version.
func Check(cl *cluster.Cluster, sb sandbox.Config) (*Spec, error) {
	if err := notRunning(sb); err != nil {
		return nil, err
	}
	if err := checkStartSpace(sb.StateDir); err != nil {
		return nil, err
	}
	comps, rt, err := Components(cl.Self())
	if err != nil {
		return nil, err
	}
	bins, err := FindBinaries(Tools(comps), SearchFor(cl.Options), os.Getenv)
	if err != nil {
		return nil, err
	}
	info, err := rt.Probe(context.Background(), bins[rt.Daemon.Name])
	if err != nil {
		return nil, err
	}
	// The sandbox decides the mode for itself, as this process's child:
	// the same answer, found here before anything starts.
	if cg := (cgroup.Host{UID: os.Getuid(), PID: "self"}).Detect(); cg.Mode == cgroup.Degraded && !info.Degraded {
		return nil, fmt.Errorf("%s (this host gives no delegated cgroup v2 tree: %s)", info.Why, cg.Reason)
	}
	v, err := BinaryVersion(bins["kubelet"])
	if err != nil {
		return nil, err
	}
	pv, err := k8sversion.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bins["kubelet"], err)
	}
	if want := cl.KubernetesVersion; want != "" {
		if wv, _ := k8sversion.Parse(want); wv != nil && !wv.EqualTo(pv) {
			return nil, fmt.Errorf("cluster.kubernetesVersion is %s but %s is %s: point --bin-dir at %s binaries, or change the config", want, bins["kubelet"], v, want)
		}
	}
	cl.KubernetesVersion = v
	for _, p := range hostPorts(cl) {
		if err := portFree(p, func() error { return notRunning(sb) }); err != nil {
			return nil, err
		}
	}
	return &Spec{Cluster: cl, Binaries: bins, Runtime: info}, nil
}

// portTakenFor is how long a taken host port is asked again before `up`
// says it is in use. Two ups started at once probe the same ports: each
// Check's listen holds a port only between its Listen and Close, but on a
// loaded 2-core host that is long enough for the other's probe to find it
// taken with no node running yet (the fault suite's two ups at once failed
// so in CI, once: one up Ready, the other "already in use").
const portTakenFor = time.Second

// portFree tells whether a host port can be bound, asking again for
// portTakenFor while it is taken. running says whether the node runs or
// is starting (then its own ports are taken): asked at every try, since
// that is the likelier reason.
func portFree(p port.Spec, running func() error) error {
	addr := netip.AddrPortFrom(p.HostIP, p.HostPort).String()
	deadline := time.Now().Add(portTakenFor)
	for {
		var err error
		if p.Proto == "udp" {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				l.Close()
			}
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EACCES):
			if p.Proto == "udp" {
				addr += "/udp"
			}
			return privilegedPort(addr, p.HostPort)
		}
		if err := running(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.Proto == "udp" {
		return fmt.Errorf("host port %s/udp (for the node's %d) is already in use: stop what holds it (`ss -lunp 'sport = :%d'` shows it), or, if it is another node's, give this one another --host-ip (VXLAN's port is the cluster's: a new cluster can take another --vxlan-port) or --dns-port", addr, p.ChildPort, p.HostPort)
	}
	return fmt.Errorf("host port %s (for the node's %d) is already in use: stop what holds it (`ss -ltnp 'sport = :%d'` shows it), run `usernode down` if it is another node, or choose another with --api-port/--kubelet-port", addr, p.ChildPort, p.HostPort)
}

// notRunning fails when the node runs, or is starting, already. Asked
// again when a port is taken: a second `up` started beside the first
// finds the node not yet running, then its ports taken by that first one,
// which only then has published its state (seen in the fault suite's two
// ups at once): the lock says it, and so does the error.
func notRunning(sb sandbox.Config) error {
	if pid, err := sandbox.Supervisor(sb.RuntimeDir); err == nil {
		return fmt.Errorf("node %q is already running (supervisor pid %d): `usernode status` shows it, `usernode down` stops it", sb.Name, pid)
	}
	if sandbox.Locked(sb.RuntimeDir) {
		return fmt.Errorf("node %q is already running (starting): `usernode status` shows it, `usernode down` stops it", sb.Name)
	}
	return nil
}

// privilegedPort is the error for a host port below
// ip_unprivileged_port_start: the kernel refuses it to a user (EACCES),
// which is not "in use".
func privilegedPort(addr string, p uint16) error {
	start := port.UnprivilegedPortStart()
	return fmt.Errorf("host port %s is privileged: it is below net.ipv4.ip_unprivileged_port_start=%d, and only root may bind such ports; choose a port >= %d (--api-port, --kubelet-port, --dns-port, --vxlan-port), or as root `sysctl net.ipv4.ip_unprivileged_port_start=%d`", addr, start, start, p)
}

// Up runs cl's node in the foreground until ctx ends or the node stops,
// in a sandbox with opt's drivers and logger. ready is called once the
// node is Ready.
func Up(ctx context.Context, cl *cluster.Cluster, opt sandbox.Opt, ready func()) error {
	l := opt.Log
	cfg, err := SandboxConfig(cl, os.Getenv)
	if err != nil {
		return err
	}
	spec, err := Check(cl, cfg)
	if err != nil {
		return err
	}
	n := cl.Self()
	paths := PathsOf(cfg)
	cfg.Command = nil
	cfg.StopTimeout = 2 * time.Minute
	cfg.Env = procenv.Root()
	cfg.Ports = append(cfg.Ports, hostPorts(cl)...)
	timeout := cl.Options.ReadyTimeout
	start := time.Now()
	var wasReady atomic.Bool
	hook := func(ctx context.Context, st *sandbox.State) error {
		// Each build of the sandbox runs the hook again: the Ready that
		// counts is one the kubelet posted after this build started, not
		// the last one before the sandbox died.
		built := time.Now()
		// A driver that takes its address from the host (lxc-user-nic, from
		// the bridge's network) decides the node's IP; the others were given
		// the model's subnet and report the same address.
		if st.Network != nil {
			if a := st.Network.Address; a.IsValid() && a.Addr() != n.IP {
				n.IP, n.Subnet = a.Addr(), a.Masked()
			}
		}
		// The node reads its spec from the runtime dir, which the sandbox
		// only creates (and cleans) when it starts; the node side waits
		// for the file.
		if err := writeJSON(paths.spec(), spec); err != nil {
			return err
		}
		if err := waitSupervisor(ctx, paths, timeout); err != nil {
			return err
		}
		cs, err := hostClient(paths, cl)
		if err != nil {
			return err
		}
		if err := waitNodeReady(ctx, cs, n.Name, built, timeout); err != nil {
			return err
		}
		if n.Role == cluster.Worker {
			l.Infof("node %q Ready %.1fs after `up`, a worker of %s (Kubernetes %s); use the control plane's kubeconfig", n.Name, time.Since(start).Seconds(), cl.API.URL(), cl.KubernetesVersion)
		} else {
			l.Infof("node %q Ready %.1fs after `up` (Kubernetes %s); kubeconfig: %s", n.Name, time.Since(start).Seconds(), cl.KubernetesVersion, paths.Kubeconfig())
		}
		if err := uncordonDrained(ctx, cs, n.Name, l); err != nil {
			l.Warnf("%v", err)
		}
		if cl.MultiNode() && n.Role == cluster.ControlPlane {
			go runNodeControllers(ctx, cs, l)
		}
		wasReady.Store(true)
		if err := os.WriteFile(paths.Ready(), nil, 0o600); err != nil {
			l.Warnf("%v: a detached `up` waiting for the node does not see it Ready", err)
		}
		if ready != nil {
			ready()
		}
		x := &exposer{c: cs, fwd: api.NewClient(st.PortSocket), l: l, status: paths.exposure(),
			o:  exposeOpts{Node: n.Name, Publish: n.PublishIP, UnprivStart: port.UnprivilegedPortStart()},
			lb: n.Role == cluster.ControlPlane, ingress: n.PublishIP}
		if x.ingress.IsUnspecified() {
			x.ingress = n.HostIP
		}
		// From here this process restarts the sandbox if it dies and
		// keeps the node's ports: what building it mapped and allocated
		// goes back (internal/memtrim), and again once the exposer's
		// first lists and port requests are done, so that what stays
		// mapped is what its watches run.
		memtrim.Trim()
		retrim := time.AfterFunc(trimAfterReady, memtrim.Trim)
		defer retrim.Stop()
		return x.run(ctx)
	}
	opt.Ready = hook
	if opt.Restart == nil {
		opt.Restart = &sandbox.DefaultRestart
	}
	code, err := sandbox.Run(ctx, cfg, opt)
	if ctx.Err() != nil && !wasReady.Load() {
		// `down` or a signal while the node was being built: what the
		// build had made is undone by now. Not a clean run: a detached
		// `up` waiting for Ready must fail, and say why.
		why := "`usernode down` or a signal"
		if err != nil {
			why += ": " + err.Error()
		}
		return fmt.Errorf("stopped while starting (%s); nothing of the node is left running", why)
	}
	if err != nil {
		return err
	}
	if code != 0 && ctx.Err() == nil {
		return fmt.Errorf("the node stopped (exit %d); see `usernode logs`", code)
	}
	return nil
}

// trimAfterReady is when `up`'s process trims its memory the second time.
const trimAfterReady = 30 * time.Second

// waitSupervisor waits for the node side's supervisor to report its
// components ready, and fails with its error if it failed.
func waitSupervisor(ctx context.Context, p Paths, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if st, err := supervise.ReadStatus(p.Status()); err == nil {
			switch st.Phase {
			case "ready":
				return nil
			case "failed":
				return errors.New(st.Error)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the node's components were not ready within %s: see `usernode status` and `usernode logs`", timeout)
}

// hostClient is clusterClient for `up`, which gives the user the admin
// kubeconfig on a control plane first.
func hostClient(p Paths, cl *cluster.Cluster) (*apiClient, error) {
	if cl.Self().Role != cluster.Worker {
		if err := writeHostKubeconfig(p, cl); err != nil {
			return nil, err
		}
	}
	return clusterClient(p, cl)
}

// inside is the host's path of what the node sees at path (under /var,
// which the state dir holds).
func (p Paths) inside(path string) string {
	return filepath.Join(p.State, strings.TrimPrefix(path, "/"))
}

func writeHostKubeconfig(p Paths, cl *cluster.Cluster) error {
	ps := pki.Paths(p.PKI())
	kc, err := kubeconfig.FromPKI(kubeconfig.ContextName(cl.Self().Name), cl.API.URL(), ps, ps.Admin)
	if err != nil {
		return fmt.Errorf("host kubeconfig: %w", err)
	}
	if err := kubeconfig.Write(p.Kubeconfig(), kc); err != nil {
		return err
	}
	if w := cl.Options.WriteKubeconfig; w != "" {
		if err := kubeconfig.Merge(w, kc, kubeconfig.MergeOptions{SetCurrentContext: true}); err != nil {
			return fmt.Errorf("merging into %s: %w", w, err)
		}
	}
	return nil
}

func waitNodeReady(ctx context.Context, c *apiClient, name string, since time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, why, err := c.nodeReady(ctx, name, since)
		if ok {
			return nil
		}
		last = why
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s not Ready within %s (last: %s)", name, timeout, last)
}

// writeJSON writes v whole or not at all: the node side reads the spec as
// soon as the file exists, and `status` the exposure file at any time (a
// plain write once let the node read an empty spec and stop, in the VM
// tier).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// Down stops a running node and waits until it is gone.
func Down(c sandbox.Config, timeout time.Duration) error {
	pid, err := sandbox.Supervisor(c.RuntimeDir)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping supervisor %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH if it has just gone, which is as good
	return fmt.Errorf("node %q did not stop within %s; killed it", c.Name, timeout)
}

// ForegroundEnv marks the background run of a detached `up`: the same
// command line, so that it resolves the same config, in the foreground.
const ForegroundEnv = "_USERNODE_UP_FOREGROUND"

// Detach starts `usernode ARGS` again in the background (ARGS as the user
// gave them, with ForegroundEnv set), in a session of its own with its
// output in the node's log dir, and returns when the node is Ready or the
// background run failed.
func Detach(c sandbox.Config, args []string, timeout time.Duration, l *log.Logger) error {
	p := PathsOf(c)
	if err := os.MkdirAll(p.Logs(), 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(p.Logs(), "supervisor.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	off, _ := f.Seek(0, io.SeekEnd)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), ForegroundEnv+"=1")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(timeout)
	printed := off
	show := func() {
		b, _ := os.ReadFile(logPath)
		if int64(len(b)) > printed {
			// The background run's log, shown as it grows; it is in the
			// log file whether or not this write gets through.
			_, _ = l.Writer().Write(b[printed:])
			printed = int64(len(b))
		}
	}
	for {
		select {
		case err := <-exited:
			show()
			if err == nil {
				return fmt.Errorf("the node stopped before it was Ready; full log: %s", logPath)
			}
			return fmt.Errorf("usernode up failed in the background (%v); full log: %s", err, logPath)
		case <-deadline:
			show()
			return fmt.Errorf("node not Ready within %s; it goes on in the background: `usernode status`, `usernode logs`, `usernode down`", timeout)
		case <-time.After(200 * time.Millisecond):
			show()
			if _, err := os.Stat(p.Ready()); err == nil {
				if _, err := sandbox.Running(c.RuntimeDir); err == nil {
					return nil
				}
			}
		}
	}
}
