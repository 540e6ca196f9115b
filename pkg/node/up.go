package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/sandbox"
	"github.com/usernode/usernode/pkg/supervise"
)

// Options are `usernode up`'s.
type Options struct {
	Sandbox sandbox.Config
	BinDir  string
	// SandboxOpt is what the sandbox runs with (drivers, log); Up sets Ready.
	SandboxOpt sandbox.Opt
	// ReadyTimeout bounds the wait for the node to be Ready.
	ReadyTimeout time.Duration
	// WriteKubeconfig, if set, is a kubeconfig file to merge the node's
	// context into (~/.kube/config, say).
	WriteKubeconfig string
	// APIPort and KubeletPort are the host ports (on 127.0.0.1) that reach
	// kube-apiserver's 6443 and the kubelet's 10250 inside the node; two
	// nodes on one host need different ones. Default 6443 and 10250.
	APIPort, KubeletPort uint16
}

func (o *Options) hostPorts() []port.Spec {
	if o.APIPort == 0 {
		o.APIPort = 6443
	}
	if o.KubeletPort == 0 {
		o.KubeletPort = 10250
	}
	return []port.Spec{
		{Proto: "tcp", HostIP: loopback, HostPort: o.APIPort, ChildPort: 6443},
		{Proto: "tcp", HostIP: loopback, HostPort: o.KubeletPort, ChildPort: 10250},
	}
}

func (o *Options) server() string { return fmt.Sprintf("https://127.0.0.1:%d", o.APIPort) }

// Host-side paths of a node, derived from its sandbox config.
type Paths struct{ State, Runtime string }

func PathsOf(c sandbox.Config) Paths { return Paths{State: c.StateDir, Runtime: c.RuntimeDir} }

func (p Paths) Kubeconfig() string { return filepath.Join(p.State, "kubeconfig") }
func (p Paths) PKI() string        { return filepath.Join(p.State, strings.TrimPrefix(PKIDir, "/")) }
func (p Paths) Logs() string       { return filepath.Join(p.State, strings.TrimPrefix(LogDir, "/")) }
func (p Paths) Status() string     { return filepath.Join(p.Runtime, "status.json") }
func (p Paths) Ready() string      { return filepath.Join(p.Runtime, "node-ready") }
func (p Paths) spec() string       { return filepath.Join(p.Runtime, "node.json") }

// Check does what `up` must do before it builds anything: binaries,
// version, host ports. Each failure names its fix.
func Check(o *Options) (*Spec, error) {
	if st, err := sandbox.Running(o.Sandbox.RuntimeDir); err == nil {
		return nil, fmt.Errorf("node %q is already running (supervisor pid %d): `usernode status` shows it, `usernode down` stops it", o.Sandbox.Name, st.Supervisor)
	}
	bins, err := FindBinaries(o.BinDir, os.Getenv)
	if err != nil {
		return nil, err
	}
	v, err := binaryVersion(bins.Kubelet)
	if err != nil {
		return nil, err
	}
	if _, err := kubelet.ParseVersion(v); err != nil {
		return nil, fmt.Errorf("%s: %w", bins.Kubelet, err)
	}
	for _, p := range o.hostPorts() {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.HostPort))
		if err != nil {
			return nil, fmt.Errorf("host port 127.0.0.1:%d (for the node's %d) is already in use: stop what holds it (`ss -ltnp 'sport = :%d'` shows it), run `usernode down` if it is another node, or choose another with --api-port/--kubelet-port", p.HostPort, p.ChildPort, p.HostPort)
		}
		l.Close()
	}
	return &Spec{Name: o.Sandbox.Name, Version: v, Binaries: *bins}, nil
}

// Up runs the node in the foreground until ctx ends or the node stops.
// ready is called once the node is Ready.
func Up(ctx context.Context, o Options, log io.Writer, ready func()) error {
	spec, err := Check(&o)
	if err != nil {
		return err
	}
	paths := PathsOf(o.Sandbox)
	cfg := o.Sandbox
	cfg.Reexec = Entry
	cfg.Command = nil
	cfg.StopTimeout = 2 * time.Minute
	cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cfg.Ports = append(cfg.Ports, o.hostPorts()...)
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	start := time.Now()
	hook := func(ctx context.Context, st *sandbox.State) error {
		// The node reads its spec from the runtime dir, which the sandbox
		// only creates (and cleans) when it starts; the node side waits
		// for the file.
		if err := writeJSON(paths.spec(), spec); err != nil {
			return err
		}
		if err := waitSupervisor(ctx, paths, o.ReadyTimeout); err != nil {
			return err
		}
		cs, err := writeHostKubeconfig(paths, o)
		if err != nil {
			return err
		}
		if err := waitNodeReady(ctx, cs, spec.Name, start, o.ReadyTimeout); err != nil {
			return err
		}
		fmt.Fprintf(log, "usernode: node %q Ready %.1fs after `up` (Kubernetes %s); kubeconfig: %s\n", spec.Name, time.Since(start).Seconds(), spec.Version, paths.Kubeconfig())
		os.WriteFile(paths.Ready(), nil, 0o600)
		if ready != nil {
			ready()
		}
		return watchNodePorts(ctx, cs, st.PortSocket, log)
	}
	o.SandboxOpt.Ready = hook
	code, err := sandbox.Run(ctx, cfg, o.SandboxOpt)
	if err != nil {
		return err
	}
	if code != 0 && ctx.Err() == nil {
		return fmt.Errorf("the node stopped (exit %d); see `usernode logs`", code)
	}
	return nil
}

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

func writeHostKubeconfig(p Paths, o Options) (*apiClient, error) {
	ps := pki.Paths(p.PKI())
	kc, err := kubeconfig.FromPKI(kubeconfig.ContextName(o.Sandbox.Name), o.server(), ps, ps.Admin)
	if err != nil {
		return nil, fmt.Errorf("host kubeconfig: %w", err)
	}
	if err := kubeconfig.Write(p.Kubeconfig(), kc); err != nil {
		return nil, err
	}
	if o.WriteKubeconfig != "" {
		if err := kubeconfig.Merge(o.WriteKubeconfig, kc, kubeconfig.MergeOptions{SetCurrentContext: true}); err != nil {
			return nil, fmt.Errorf("merging into %s: %w", o.WriteKubeconfig, err)
		}
	}
	return newAPIClient(o.server(), ps)
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

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// Down stops a running node and waits until it is gone.
func Down(c sandbox.Config, timeout time.Duration) error {
	st, err := sandbox.Running(c.RuntimeDir)
	if err != nil {
		return err
	}
	if err := syscall.Kill(st.Supervisor, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping supervisor %d: %w", st.Supervisor, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(st.Supervisor, 0) != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(st.Supervisor, syscall.SIGKILL)
	return fmt.Errorf("node %q did not stop within %s; killed it", c.Name, timeout)
}

// Detach starts `usernode up` again in the background, in a session of its
// own with its output in the node's log dir, and returns when the node is
// Ready or the background run failed.
func Detach(c sandbox.Config, args []string, timeout time.Duration, log io.Writer) error {
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
			log.Write(b[printed:])
			printed = int64(len(b))
		}
	}
	for {
		select {
		case err := <-exited:
			show()
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
