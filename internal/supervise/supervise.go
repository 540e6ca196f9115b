// Package supervise starts the node's components inside the sandbox, waits
// for each to be ready, restarts any that crash (with backoff), and stops
// them in reverse order. It knows nothing of Kubernetes: the plan (pkg/node's
// components) says what to run, what each step waits for, and how to tell
// each is ready.
//
// The order is data: a step's After names the steps it waits for, a
// long-running one until its probe passes, a oneshot until it has exited 0.
// Every step whose dependencies are met starts at once, so steps that do
// not wait for each other run concurrently. The rule for a step that does
// not say:
//
//   - After == nil: the step waits for the step before it in the plan (the
//     first step for nothing). A plan that sets no After runs strictly one
//     step after another, as this package always did.
//   - After != nil, even empty: exactly those steps; an empty list waits
//     for nothing.
//
// After is also the stop order: components stop in reverse start order,
// and only a declared dependency makes a step start after another. One
// that needs another to stop cleanly must name it even if it could start
// beside it: with kube-apiserver started beside etcd (no After), `down`
// took 19 s in 8 stops of 8 against 2.4-5.6 s (measured), the reverse
// start order no longer putting kube-apiserver's stop before etcd's.
//
// A step that names a step the plan does not have, or a cycle, fails the
// plan before anything starts. When a step fails, nothing more starts: the
// steps already running are stopped, and the error names the steps that
// were never started and the chain of dependencies that led each to the
// failed one.
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
	"sort"
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
	// After names the steps this one waits for (see the package comment:
	// nil is the step before it, empty is none).
	After []string `json:"after,omitempty"`
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
	// OnReady, when set, runs once every step is ready (or done).
	OnReady func() `json:"-"`
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
	idx  int // in the plan: Snapshot lists components in plan order
	mu   sync.Mutex
	cmd  *exec.Cmd
	st   ComponentStatus
	done chan struct{} // closed when the supervising goroutine ends
	// started is closed once the first start was tried: a step without
	// a probe is ready then, not before (a step after it that restarts it
	// found no process on a loaded machine).
	started     chan struct{}
	startedOnce sync.Once
}

// Supervisor runs a plan.
type Supervisor struct {
	plan  Plan
	log   *log.Logger
	mu    sync.Mutex
	comps []*component // in start order, which stopAll reverses
	phase string
	err   string
	// wmu orders status writes: steps finish concurrently, and an older
	// snapshot renamed over a newer one would leave status stale.
	wmu sync.Mutex
}

// New makes a supervisor that reports progress to l.
func New(plan Plan, l *log.Logger) *Supervisor {
	return &Supervisor{plan: plan, log: l, phase: "starting"}
}

// Run starts every step once what it waits for is ready (see the package
// comment) and then keeps the components running until ctx ends, when it
// stops them in reverse start order. It returns an error if a step fails
// to become ready or done, or if the plan's dependencies are wrong.
func (s *Supervisor) Run(ctx context.Context) error {
	steps := s.plan.Steps
	deps, err := Dependencies(steps)
	if err != nil {
		s.setPhase("failed", err)
		return err
	}
	if err := os.MkdirAll(s.plan.LogDir, 0o755); err != nil {
		return err
	}
	// Cancelled before stopAll, so that nothing restarts what it stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	type result struct {
		i   int
		err error
	}
	// After a failure Run still takes the results of the steps in flight
	// (cancelled), so that none is starting a process while stopAll runs.
	results := make(chan result, len(steps))
	const (
		waiting = iota
		running
		done
	)
	state := make([]int, len(steps))
	began := make([]time.Time, len(steps))
	inFlight, finished := 0, 0
	launchReady := func() {
		for i, st := range state {
			if st != waiting || !all(deps[i], func(d int) bool { return state[d] == done }) {
				continue
			}
			state[i], began[i] = running, time.Now()
			inFlight++
			go func() {
				var err error
				if steps[i].Oneshot {
					err = s.oneshot(ctx, steps[i])
				} else {
					err = s.start(ctx, steps[i], i)
				}
				results <- result{i, err}
			}()
		}
	}
	launchReady()
	for finished < len(steps) {
		r := <-results
		inFlight--
		if r.err != nil {
			cancel()
			for ; inFlight > 0; inFlight-- {
				<-results
			}
			err := fmt.Errorf("%s: %w%s", steps[r.i].Name, r.err, notStarted(steps, deps, state, waiting, r.i))
			s.setPhase("failed", err)
			s.stopAll()
			return err
		}
		state[r.i] = done
		finished++
		s.log.Infof("%-24s %6.1fs (started at %.1fs)", steps[r.i].Name, time.Since(began[r.i]).Seconds(), began[r.i].Sub(start).Seconds())
		launchReady()
	}
	s.setPhase("ready", nil)
	s.log.Infof("node ready %6.1fs after its supervisor started", time.Since(start).Seconds())
	if s.plan.OnReady != nil {
		s.plan.OnReady()
	}
	<-ctx.Done()
	s.setPhase("stopping", nil)
	s.stopAll()
	return nil
}

func all(xs []int, f func(int) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

// Dependencies resolves each step's After to plan indices, with the
// package comment's rule for a nil After. It refuses duplicate names,
// names the plan does not have and cycles, any of which would leave a
// step waiting forever.
func Dependencies(steps []Step) ([][]int, error) {
	index := map[string]int{}
	for i, st := range steps {
		if _, dup := index[st.Name]; dup {
			return nil, fmt.Errorf("two steps are named %q", st.Name)
		}
		index[st.Name] = i
	}
	deps := make([][]int, len(steps))
	for i, st := range steps {
		if st.After == nil {
			if i > 0 {
				deps[i] = []int{i - 1}
			}
			continue
		}
		for _, name := range st.After {
			d, ok := index[name]
			if !ok {
				return nil, fmt.Errorf("step %s waits for %q, which the plan does not have", st.Name, name)
			}
			deps[i] = append(deps[i], d)
		}
	}
	// Depth-first search for a cycle: 1 on the current path, 2 cleared.
	mark := make([]int, len(steps))
	var visit func(i int, path []string) error
	visit = func(i int, path []string) error {
		path = append(path, steps[i].Name)
		switch mark[i] {
		case 1:
			return fmt.Errorf("steps wait for each other in a cycle: %s", strings.Join(path, " → "))
		case 2:
			return nil
		}
		mark[i] = 1
		for _, d := range deps[i] {
			if err := visit(d, path); err != nil {
				return err
			}
		}
		mark[i] = 2
		return nil
	}
	for i := range steps {
		if err := visit(i, nil); err != nil {
			return nil, err
		}
	}
	return deps, nil
}

// notStarted says which steps never started after failed failed and, for
// each that waited on it, through which steps: "kube-scheduler (after
// kube-apiserver)", "coredns (after coredns-objects after kube-apiserver)".
func notStarted(steps []Step, deps [][]int, state []int, waiting, failed int) string {
	var chain func(i int) []string
	chain = func(i int) []string {
		for _, d := range deps[i] {
			if d == failed {
				return []string{steps[d].Name}
			}
			if c := chain(d); c != nil {
				return append([]string{steps[d].Name}, c...)
			}
		}
		return nil
	}
	var out []string
	for i, st := range state {
		if st != waiting {
			continue
		}
		if c := chain(i); c != nil {
			out = append(out, fmt.Sprintf("%s (after %s)", steps[i].Name, strings.Join(c, " after ")))
		} else {
			out = append(out, steps[i].Name)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "\nnot started: " + strings.Join(out, ", ")
}

func (s *Supervisor) logPath(name string) string { return filepath.Join(s.plan.LogDir, name+".log") }

func (s *Supervisor) openLog(name string) (*os.File, error) {
	return os.OpenFile(s.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// supervisorKey carries the Supervisor in a oneshot's Run context, for
// Restart.
type supervisorKey struct{}

// Restart stops the running component name so that the supervisor that
// runs the calling step starts it again, as after a crash (counted, and
// with the usual backoff). ctx is the one a oneshot's Run was given, or
// one made from it. why goes to the log.
func Restart(ctx context.Context, name, why string) error {
	s, ok := ctx.Value(supervisorKey{}).(*Supervisor)
	if !ok {
		return fmt.Errorf("restarting %s: not called from a supervised step", name)
	}
	s.mu.Lock()
	var c *component
	for _, x := range s.comps {
		if x.step.Name == name {
			c = x
		}
	}
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("restarting %s: no such running component", name)
	}
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("restarting %s: not started", name)
	}
	s.log.Infof("restarting %s: %s", name, why)
	// Its process group (see keep), as a stop does.
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
}

func (s *Supervisor) oneshot(ctx context.Context, step Step) error {
	ctx = context.WithValue(ctx, supervisorKey{}, s)
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
func (s *Supervisor) start(ctx context.Context, step Step, idx int) error {
	c := &component{step: step, idx: idx, done: make(chan struct{}), started: make(chan struct{})}
	c.st = ComponentStatus{Name: step.Name, State: "starting", Since: time.Now(), Log: s.logPath(step.Name)}
	s.mu.Lock()
	s.comps = append(s.comps, c)
	s.mu.Unlock()
	go s.keep(ctx, c)
	if step.Ready == nil {
		select {
		case <-c.started:
		case <-c.done:
		}
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
		}
		c.startedOnce.Do(func() { close(c.started) })
		if err == nil {
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
// API server before etcd. A step starts only once what it waits for is
// ready, so the reverse of the start order stops every component before
// what it depends on.
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

// Snapshot returns the current status, components in plan order: start
// order varies between runs where steps start concurrently.
func (s *Supervisor) Snapshot() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Phase: s.phase, Error: s.err}
	comps := append([]*component(nil), s.comps...)
	sort.Slice(comps, func(a, b int) bool { return comps[a].idx < comps[b].idx })
	for _, c := range comps {
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
	s.wmu.Lock()
	defer s.wmu.Unlock()
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
