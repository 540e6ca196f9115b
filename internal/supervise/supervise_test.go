package supervise

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/log"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRunOrderReadyRestartStop(t *testing.T) {
	BackoffMin = 20 * time.Millisecond
	dir := t.TempDir()
	marker := filepath.Join(dir, "up")
	runs := filepath.Join(dir, "runs")
	plan := Plan{LogDir: filepath.Join(dir, "log"), StatusFile: filepath.Join(dir, "status.json"), Steps: []Step{
		{Name: "first", Argv: []string{"sh", "-c", "sleep 0.2; touch " + marker + "; exec sleep 60"}, Ready: &Probe{Exec: []string{"test", "-e", marker}}},
		{Name: "import", Oneshot: true, Argv: []string{"sh", "-c", "test -e " + marker + " && echo imported"}},
		{Name: "crashy", Argv: []string{"sh", "-c", "echo run >> " + runs + "; exit 3"}},
	}}
	var out syncBuf
	s := New(plan, log.New(&out, 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(runs)
		if strings.Count(string(b), "run") >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := s.Snapshot()
	if st.Phase != "ready" || len(st.Components) != 2 {
		t.Fatalf("status = %+v\n%s", st, out.String())
	}
	first, crashy := st.Components[0], st.Components[1]
	if first.State != "ready" || first.PID == 0 || first.Restarts != 0 {
		t.Errorf("first = %+v", first)
	}
	if crashy.Restarts < 2 || !strings.Contains(crashy.LastExit, "exit status 3") {
		t.Errorf("crashy = %+v", crashy)
	}
	if !strings.Contains(out.String(), "crashy exit status 3; restarting in") {
		t.Errorf("restart not reported:\n%s", out.String())
	}
	if b, _ := os.ReadFile(filepath.Join(plan.LogDir, "import.log")); strings.TrimSpace(string(b)) != "imported" {
		t.Errorf("oneshot ran before its predecessor was ready, or logged elsewhere: %q", b)
	}
	onDisk, err := ReadStatus(plan.StatusFile)
	if err != nil || onDisk.Phase != "ready" {
		t.Errorf("status file: %+v %v", onDisk, err)
	}

	pid := first.PID
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("component pid %d still alive after stop", pid)
	}
}

func TestNotReadyNamesTheLog(t *testing.T) {
	dir := t.TempDir()
	plan := Plan{LogDir: dir, Steps: []Step{
		{Name: "stuck", Argv: []string{"sh", "-c", "echo listening failed: address in use; exec sleep 60"},
			Ready: &Probe{Unix: filepath.Join(dir, "nope.sock")}, ReadyTimeout: 500 * time.Millisecond},
	}}
	err := New(plan, log.New(&syncBuf{}, 0)).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not ready after") || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("err = %v", err)
	}
}

func TestOneshotFailure(t *testing.T) {
	plan := Plan{LogDir: t.TempDir(), Steps: []Step{{Name: "bad", Oneshot: true, Argv: []string{"sh", "-c", "echo no such image >&2; exit 1"}}}}
	err := New(plan, log.New(&syncBuf{}, 0)).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no such image") {
		t.Fatalf("err = %v", err)
	}
}

// Steps that do not wait for each other overlap, and a step starts only
// once what it waits for is ready. Ordering is asserted through files,
// never through timings: "slow" cannot become ready until "beside" has
// run, so a supervisor that waited for slow before starting beside would
// time slow out; "dependent" fails unless slow's probe had passed before
// it started.
func TestAfterOverlapAndOrder(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	plan := Plan{LogDir: f("log"), Steps: []Step{
		{Name: "slow", After: []string{},
			Argv: []string{"sh", "-c", "touch " + f("slow-started") + "; while [ ! -e " + f("release") + " ]; do sleep 0.05; done; touch " + f("slow-up") + "; exec sleep 60"},
			// The probe leaves a mark when it passes: dependent looks for it.
			Ready:        &Probe{Exec: []string{"sh", "-c", "test -e " + f("slow-up") + " && touch " + f("slow-probed")}},
			ReadyTimeout: 20 * time.Second},
		{Name: "beside", Oneshot: true, After: []string{},
			// Runs while slow runs and is not ready, then lets it be.
			Argv: []string{"sh", "-c", "while [ ! -e " + f("slow-started") + " ]; do sleep 0.05; done; " +
				"test -e " + f("slow-probed") + " && exit 9; touch " + f("release")}},
		{Name: "dependent", Oneshot: true, After: []string{"slow"},
			Argv: []string{"sh", "-c", "test -e " + f("slow-probed") + " || { echo started before slow was ready; exit 7; }; touch " + f("dependent-ran")}},
		// A long-running step after a oneshot waits for it to be done.
		{Name: "last", After: []string{"dependent", "beside"},
			Argv: []string{"sh", "-c", "test -e " + f("dependent-ran") + " || exit 8; exec sleep 60"}},
	}}
	var out syncBuf
	s := New(plan, log.New(&out, 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for s.Snapshot().Phase == "starting" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := s.Snapshot()
	if st.Phase != "ready" {
		cancel()
		t.Fatalf("status = %+v\n%s", st, out.String())
	}
	// Plan order in status, whatever order they started in.
	if len(st.Components) != 2 || st.Components[0].Name != "slow" || st.Components[1].Name != "last" {
		t.Errorf("components = %+v", st.Components)
	}
	if st.Components[1].Restarts != 0 {
		t.Errorf("last restarted: it started before dependent was done: %+v", st.Components[1])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A step whose dependency failed never starts, and the error says which
// did not and through which chain; what was running is stopped.
func TestFailedDependencyNamesTheChain(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	plan := Plan{LogDir: dir, Steps: []Step{
		{Name: "runner", After: []string{}, Argv: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 60"}},
		{Name: "base", Oneshot: true, After: []string{"runner"},
			Argv: []string{"sh", "-c", "while [ ! -s " + pidFile + " ]; do sleep 0.05; done; echo broken >&2; exit 1"}},
		{Name: "mid", Oneshot: true, After: []string{"base"}, Argv: []string{"true"}},
		{Name: "top", After: []string{"mid", "runner"}, Argv: []string{"sleep", "60"}},
	}}
	err := New(plan, log.New(&syncBuf{}, 0)).Run(context.Background())
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"base: exit status 1", "broken", "not started: mid (after base), top (after mid after base)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, name := range []string{"mid", "top"} {
		if _, err := os.Stat(filepath.Join(dir, name+".log")); err == nil {
			t.Errorf("%s started", name)
		}
	}
	b, _ := os.ReadFile(pidFile)
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatalf("runner's pid %q: %v", b, err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("runner (pid %d) still alive after the failure", pid)
	}
}

func TestDependenciesRefused(t *testing.T) {
	for _, tc := range []struct {
		steps []Step
		want  string
	}{
		{[]Step{{Name: "a", After: []string{"nope"}}}, `step a waits for "nope", which the plan does not have`},
		{[]Step{{Name: "a", After: []string{"b"}}, {Name: "b", After: []string{"c"}}, {Name: "c", After: []string{"a"}}}, "cycle: a → b → c → a"},
		{[]Step{{Name: "a"}, {Name: "a"}}, `two steps are named "a"`},
	} {
		if _, err := Dependencies(tc.steps); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.steps, err, tc.want)
		}
	}
	// nil is the step before; empty is nothing.
	deps, err := Dependencies([]Step{{Name: "a"}, {Name: "b"}, {Name: "c", After: []string{}}, {Name: "d", After: []string{"a", "c"}}})
	if err != nil || fmt.Sprint(deps) != "[[] [0] [] [0 2]]" {
		t.Errorf("deps = %v, %v", deps, err)
	}
}

// A step's in-process work can have the supervisor restart a running
// component (flannel does when its device is made again): the component
// comes back with a new PID and one restart counted; outside a
// supervised step, or for a name not running, Restart says so.
func TestRestartFromAStep(t *testing.T) {
	BackoffMin = 20 * time.Millisecond
	dir := t.TempDir()
	asked := make(chan error, 1)
	plan := Plan{LogDir: filepath.Join(dir, "log"), StatusFile: filepath.Join(dir, "status.json"), Steps: []Step{
		{Name: "daemon", Argv: []string{"sleep", "60"}},
		{Name: "watch", Oneshot: true, Run: func(ctx context.Context) error {
			if err := Restart(ctx, "nosuch", "test"); err == nil {
				t.Error("Restart of a component that is not there: no error")
			}
			asked <- Restart(context.WithoutCancel(ctx), "daemon", "the test asked")
			return nil
		}},
	}}
	var out syncBuf
	s := New(plan, log.New(&out, 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if err := <-asked; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var st Status
	for time.Now().Before(deadline) {
		st = s.Snapshot()
		if d := st.Components[0]; d.Restarts == 1 && d.State == "ready" && d.PID != 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := st.Components[0]; d.Restarts != 1 || d.PID == 0 || d.State != "ready" {
		t.Errorf("daemon after Restart: %+v\n%s", d, out.String())
	}
	if !strings.Contains(out.String(), "restarting daemon: the test asked") {
		t.Errorf("the restart's reason is not in the log:\n%s", out.String())
	}
	if err := Restart(context.Background(), "daemon", "x"); err == nil {
		t.Error("Restart outside a supervised step: no error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
