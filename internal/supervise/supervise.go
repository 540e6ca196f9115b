// Package supervise starts the node's components in order inside the
// sandbox, waits for each to be ready, restarts any that crash (with
// backoff), and stops them in reverse order. It knows nothing of
// Kubernetes: the plan (pkg/node's components) says what to run, in what
// order, and how to tell each is ready.
package supervise

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/atomicfile"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/procenv"
)

// Probe says when a component is ready.
type Probe struct {
	// Unix: a unix socket accepts connections.
	Unix string `json:"unix,omitempty"`
	// URL: an HTTP(S) GET answers 200. CA, Cert and Key give TLS client
	// authentication for components that refuse anonymous requests.
	URL  string `json:"url,omitempty"`
	CA   string `json:"ca,omitempty"`
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// Insecure skips verifying the server's certificate, for components
	// that serve their health checks with a self-signed one.
	Insecure bool `json:"insecure,omitempty"`
	// Exec: the command exits 0.
	Exec []string `json:"exec,omitempty"`
}

// Step is one component, or a one-shot command between them.
type Step struct {
	Name    string   `json:"name"`
	Argv    []string `json:"argv"`
	Env     []string `json:"env,omitempty"`
	Oneshot bool     `json:"oneshot,omitempty"`
	// Run, for a oneshot, is done in the supervisor's own process instead
	// of Argv: for steps that wait on the API (the CNI's pod CIDR) and
	// would otherwise need a helper binary.
	Run   func(ctx context.Context) error `json:"-"`
	Ready *Probe                          `json:"ready,omitempty"`
	// ReadyTimeout bounds the wait for Ready (default 2 minutes).
	ReadyTimeout time.Duration `json:"readyTimeout,omitempty"`
}

// Plan is the whole node.
type Plan struct {
	LogDir     string `json:"logDir"`
	StatusFile string `json:"statusFile"`
	Steps      []Step `json:"steps"`
}

// Status is what `usernode status` shows.
type Status struct {
	Phase      string            `json:"phase"` // starting, ready, stopping, failed
	Error      string            `json:"error,omitempty"`
	Components []ComponentStatus `json:"components"`
}

// ComponentStatus is one line of it.
type ComponentStatus struct {
	Name     string    `json:"name"`
	PID      int       `json:"pid,omitempty"`
	State    string    `json:"state"` // starting, ready, restarting, done, stopped
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	LastExit string    `json:"lastExit,omitempty"`
	Log      string    `json:"log"`
}

// Backoff bounds for restarts: a crash loop must not spin the CPU, and a
// component that ran for a while starts again quickly.
var (
	BackoffMin   = time.Second //nolint:revive // time-naming: Min is minimum (BackoffMax's pair), not minutes
	BackoffMax   = 30 * time.Second
	StableAfter  = time.Minute
	StopTimeout  = 10 * time.Second
	pollInterval = 100 * time.Millisecond
)

type component struct {
	step Step
	mu   sync.Mutex
	cmd  *exec.Cmd
	st   ComponentStatus
	done chan struct{} // closed when the supervising goroutine ends
}

// Supervisor runs a plan.
type Supervisor struct {
	plan  Plan
	log   *log.Logger
	mu    sync.Mutex
	comps []*component
	phase string
	err   string
}

// New makes a supervisor that reports progress to l.
func New(plan Plan, l *log.Logger) *Supervisor {
	return &Supervisor{plan: plan, log: l, phase: "starting"}
}

// Run starts every step in order and then keeps the components running
// until ctx ends, when it stops them in reverse order. It returns an error
// if a step fails to become ready.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.plan.LogDir, 0o755); err != nil {
		return err
	}
	// Cancelled before stopAll, so that nothing restarts what it stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for _, step := range s.plan.Steps {
		t := time.Now()
		var err error
		if step.Oneshot {
			err = s.oneshot(ctx, step)
		} else {
			err = s.start(ctx, step)
		}
		if err != nil {
			s.setPhase("failed", err)
			cancel()
			s.stopAll()
			return fmt.Errorf("%s: %w", step.Name, err)
		}
		s.log.Infof("%-24s %6.1fs", step.Name, time.Since(t).Seconds())
	}
	s.setPhase("ready", nil)
	s.log.Infof("node ready %6.1fs after its supervisor started", time.Since(start).Seconds())
	<-ctx.Done()
	s.setPhase("stopping", nil)
	s.stopAll()
	return nil
}

func (s *Supervisor) logPath(name string) string { return filepath.Join(s.plan.LogDir, name+".log") }

func (s *Supervisor) openLog(name string) (*os.File, error) {
	return os.OpenFile(s.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

func (s *Supervisor) oneshot(ctx context.Context, step Step) error {
	if step.Run != nil {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout(step))
		defer cancel()
		return step.Run(ctx)
	}
	log, err := s.openLog(step.Name)
	if err != nil {
		return err
	}
	defer log.Close()
	c := exec.CommandContext(ctx, step.Argv[0], step.Argv[1:]...)
	c.Env, c.Stdout, c.Stderr = env(step.Env), log, log
	if err := c.Run(); err != nil {
		return fmt.Errorf("%v (see %s):\n%s", err, s.logPath(step.Name), tail(s.logPath(step.Name), 10))
	}
	return nil
}

func env(extra []string) []string {
	return append(procenv.Root(), extra...)
}

// start launches a long-running component and waits for its probe.
func (s *Supervisor) start(ctx context.Context, step Step) error {
	c := &component{step: step, done: make(chan struct{})}
	c.st = ComponentStatus{Name: step.Name, State: "starting", Since: time.Now(), Log: s.logPath(step.Name)}
	s.mu.Lock()
	s.comps = append(s.comps, c)
	s.mu.Unlock()
	go s.keep(ctx, c)
	if step.Ready == nil {
		s.update(c, func(st *ComponentStatus) { st.State = "ready" })
		return nil
	}
	timeout := readyTimeout(step)
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if last = probe(ctx, step.Ready); last == nil {
			s.update(c, func(st *ComponentStatus) { st.State = "ready" })
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("not ready after %s: %v; last lines of %s:\n%s", timeout, last, s.logPath(step.Name), tail(s.logPath(step.Name), 15))
}

func readyTimeout(step Step) time.Duration {
	if step.ReadyTimeout == 0 {
		return 2 * time.Minute
	}
	return step.ReadyTimeout
}

// keep runs c, restarting it whenever it exits, until ctx ends.
func (s *Supervisor) keep(ctx context.Context, c *component) {
	defer close(c.done)
	backoff := BackoffMin
	for {
		log, err := s.openLog(c.step.Name)
		if err != nil {
			s.update(c, func(st *ComponentStatus) { st.State, st.LastExit = "restarting", err.Error() })
			return
		}
		cmd := exec.Command(c.step.Argv[0], c.step.Argv[1:]...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env(c.step.Env), log, log
		// Its own process group, so stopping it reaches its children too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		began := time.Now()
		err = cmd.Start()
		_ = log.Close() // the child writes through its own copy
		if err == nil {
			c.mu.Lock()
			c.cmd = cmd
			c.mu.Unlock()
			s.update(c, func(st *ComponentStatus) { st.PID, st.Since = cmd.Process.Pid, began })
			err = cmd.Wait()
		}
		if ctx.Err() != nil {
			s.update(c, func(st *ComponentStatus) { st.State, st.PID = "stopped", 0 })
			return
		}
		if time.Since(began) > StableAfter {
			backoff = BackoffMin
		}
		msg := fmt.Sprintf("%v", err)
		if err == nil {
			msg = "exited 0"
		}
		s.log.Warnf("%s %s; restarting in %s (log: %s)", c.step.Name, msg, backoff, s.logPath(c.step.Name))
		s.update(c, func(st *ComponentStatus) {
			st.State, st.PID, st.LastExit = "restarting", 0, msg
			st.Restarts++
		})
		select {
		case <-ctx.Done():
			s.update(c, func(st *ComponentStatus) { st.State = "stopped" })
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, BackoffMax)
		s.update(c, func(st *ComponentStatus) {
			if st.State == "restarting" {
				st.State = "ready"
			}
		})
	}
}

// stopAll stops components in reverse start order: the kubelet before the
// API server before etcd, containerd last.
func (s *Supervisor) stopAll() {
	s.mu.Lock()
	comps := append([]*component(nil), s.comps...)
	s.mu.Unlock()
	for i := len(comps) - 1; i >= 0; i-- {
		c := comps[i]
		c.mu.Lock()
		cmd := c.cmd
		c.mu.Unlock()
		if cmd == nil || cmd.Process == nil {
			continue
		}
		// ESRCH when the group is gone already, which c.done then says.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(StopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
}

func (s *Supervisor) setPhase(p string, err error) {
	s.mu.Lock()
	s.phase = p
	if err != nil {
		s.err = err.Error()
	}
	s.mu.Unlock()
	s.writeStatus()
}

func (s *Supervisor) update(c *component, f func(*ComponentStatus)) {
	c.mu.Lock()
	f(&c.st)
	c.mu.Unlock()
	s.writeStatus()
}

// Snapshot returns the current status.
func (s *Supervisor) Snapshot() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Phase: s.phase, Error: s.err}
	for _, c := range s.comps {
		c.mu.Lock()
		st.Components = append(st.Components, c.st)
		c.mu.Unlock()
	}
	return st
}

func (s *Supervisor) writeStatus() {
	if s.plan.StatusFile == "" {
		return
	}
	b, _ := json.MarshalIndent(s.Snapshot(), "", "  ")
	// Best effort: a status that cannot be written only makes
	// `usernode status` stale.
	_ = atomicfile.Write(s.plan.StatusFile, b, 0o600)
}

// ReadStatus reads a status file written by a supervisor.
func ReadStatus(path string) (*Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st Status
	return &st, json.Unmarshal(b, &st)
}

func probe(ctx context.Context, p *Probe) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	switch {
	case p.Unix != "":
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", p.Unix)
		if err != nil {
			return err
		}
		return c.Close()
	case p.URL != "":
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: p.Insecure}}
		if p.CA != "" {
			pem, err := os.ReadFile(p.CA)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tr.TLSClientConfig.RootCAs = pool
		}
		if p.Cert != "" {
			kp, err := tls.LoadX509KeyPair(p.Cert, p.Key)
			if err != nil {
				return err
			}
			tr.TLSClientConfig.Certificates = []tls.Certificate{kp}
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", p.URL, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	case len(p.Exec) > 0:
		out, err := exec.CommandContext(ctx, p.Exec[0], p.Exec[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return errors.New("empty probe")
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
