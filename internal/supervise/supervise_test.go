package supervise

import (
	"bytes"
	"context"
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
