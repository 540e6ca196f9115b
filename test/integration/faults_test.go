package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/sandbox"
)

// netRecovery is the deadline: egress is back within 5 s of a
// kill -9 of the network helper. It is a wait limit, not a measurement.
const netRecovery = 5 * time.Second

// greeter serves token on addr (one line, then close) and returns where.
func greeter(t *testing.T, addr, token string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(token + "\n")) // the client checks what it got
			c.Close()
		}
	}()
	return l.Addr().String()
}

// startSandbox runs `usernode sandbox run --name NAME ARGS -- sleep 600`
// and returns once it is ready, with its state, its stderr so far, and a
// function that waits for its exit (it stops it first, if it must).
func startSandbox(t *testing.T, env *testutil.Env, name string, args ...string) (*sandbox.State, func() string, func(time.Duration) bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	argv := append(append([]string{"sandbox", "run", "--name", name}, args...), "--", "sleep", "600")
	c := env.Command(ctx, testutil.Binary(t), argv...)
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log strings.Builder
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "ready") {
				select {
				case ready <- true:
				default:
				}
			}
		}
		close(ready)
	}()
	logs := func() string { mu.Lock(); defer mu.Unlock(); return log.String() }
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }() // how it ended is not checked here
	exited := func(within time.Duration) bool {
		select {
		case <-done:
			return true
		case <-time.After(within):
			return false
		}
	}
	t.Cleanup(func() {
		_ = c.Process.Signal(syscall.SIGTERM) // the clean stop; a no-op once it has exited
		if !exited(30 * time.Second) {
			_ = c.Process.Signal(syscall.SIGKILL) // as above
			<-done
		}
		cancel()
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("sandbox never became ready:\n%s", logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("sandbox not ready after 30s:\n%s", logs())
	}
	st, err := sandbox.ReadState(filepath.Join(env.RuntimeDir, "usernode", name))
	if err != nil {
		t.Fatal(err)
	}
	return st, logs, exited
}

// netStatus is what the tests read of `usernode status --json`.
type netStatus struct {
	Network *sandbox.NetStatus `json:"network"`
}

func readNetStatus(t *testing.T, env *testutil.Env, name string) (*sandbox.NetStatus, string) {
	t.Helper()
	r := env.Run(t, time.Minute, testutil.Binary(t), "status", "--name", name, "--json")
	if r.Code != 0 {
		t.Fatalf("status --json: %s", r)
	}
	var s netStatus
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil || s.Network == nil {
		t.Fatalf("status --json: no network section (%v):\n%s", err, r.Stdout)
	}
	txt := env.Run(t, time.Minute, testutil.Binary(t), "status", "--name", name)
	if txt.Code != 0 {
		t.Fatalf("status: %s", txt)
	}
	return s.Network, txt.Stdout
}

func runState(t *testing.T, env *testutil.Env, name string) *sandbox.State {
	t.Helper()
	st, err := sandbox.ReadState(filepath.Join(env.RuntimeDir, "usernode", name))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestNetworkHelperRestart: a kill -9 of the node's network helper
// (slirp4netns, pasta) is repaired by the supervisor: the interface comes
// back with its address and default route, the node reaches the host's
// non-loopback address again, and status reports the restart and the
// network as measured. A helper that keeps dying is given up on, and
// status says so.
func TestNetworkHelperRestart(t *testing.T) {
	u := testutil.Integration(t)
	bin := testutil.Binary(t)
	hostAddr := greeter(t, net.JoinHostPort(testutil.HostIPv4(t).String(), "0"), "hello-from-host")
	hip, hport, _ := net.SplitHostPort(hostAddr)
	// slirp4netns with --keep-source-ip: the forwarder's policy routing
	// and nft table in the node's namespace are not on the helper's
	// device, and must still be there after the restart.
	for _, tc := range []struct {
		drv, ifname string
		args        []string
	}{{"slirp4netns", "tap0", []string{"--keep-source-ip"}}, {"pasta", "eth0", nil}} {
		t.Run(tc.drv, func(t *testing.T) {
			if _, err := exec.LookPath(tc.drv); err != nil {
				t.Skipf("%s not installed", tc.drv)
			}
			env := u.NewEnv(t)
			name := "fault-" + strings.TrimSuffix(tc.drv, "4netns")
			st, logs, exited := startSandbox(t, env, name, append([]string{"--net", tc.drv}, tc.args...)...)
			if st.NetHelper == nil || st.NetHelper.PID == 0 || st.NetHelper.Name != tc.drv {
				t.Fatalf("state.json has no helper: %+v", st.NetHelper)
			}
			// One line from the host's greeter, read without waiting for
			// its close: busybox nc stayed for good after the line over
			// pasta (Debian 12's 2023_03_29) when its stdin was /dev/null.
			check := fmt.Sprintf(`ip -4 -o addr show dev %s; ip route show default; timeout 2 bash -c 'read -r l </dev/tcp/%s/%s && echo "$l"'`, tc.ifname, hip, hport)
			inside := func() string {
				began := time.Now()
				r := env.Run(t, 30*time.Second, bin, "enter", "--name", name, "--", "sh", "-c", check)
				if d := time.Since(began); d > 2*time.Second {
					t.Logf("enter took %s: %s", d, r)
				}
				return r.Stdout + r.Stderr
			}
			addr, gw := st.Network.Address.String(), st.Network.Gateway.String()
			wants := []string{"inet " + addr, "default via " + gw + " dev " + tc.ifname, "hello-from-host"}
			healthy := func(out string) bool {
				for _, w := range wants {
					if !strings.Contains(out, w) {
						return false
					}
				}
				return true
			}
			if out := inside(); !healthy(out) {
				t.Fatalf("before the kill, inside the node:\n%s", out)
			}

			old := st.NetHelper.PID
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			var seen []string
			for {
				out := inside()
				if healthy(out) {
					break
				}
				if len(seen) == 0 || seen[len(seen)-1] != out {
					seen = append(seen, fmt.Sprintf("at %.2fs:\n%s", time.Since(killed).Seconds(), out))
				}
				if time.Since(killed) > netRecovery {
					t.Fatalf("%s after the kill -9 of %s, inside the node:\n%s\nsupervisor:\n%s", netRecovery, tc.drv, strings.Join(seen, "\n"), logs())
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("egress back %.1fs after the kill", time.Since(killed).Seconds())
			// The supervisor records the new PID once init has configured
			// and measured the inside again, which may come after the
			// helper's own configuration let traffic through.
			var h *sandbox.NetHelper
			for {
				if h = runState(t, env, name).NetHelper; h.PID != 0 || time.Since(killed) > netRecovery {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}

			if len(tc.args) > 0 {
				r := env.Run(t, 30*time.Second, bin, "enter", "--name", name, "--", "sh", "-c", "ip rule; ip route show table 2033; nft list table ip usernode_source_ip")
				for _, w := range []string{"from 127.0.0.0/8 lookup 2033", "local default dev lo", "table ip usernode_source_ip"} {
					if !strings.Contains(r.Stdout, w) {
						t.Errorf("after the restart, no %q of --keep-source-ip in the node: %s", w, r)
					}
				}
			}
			if h.Restarts != 1 || h.PID == 0 || h.PID == old || !strings.Contains(h.LastExit, "killed") {
				t.Errorf("state.json after one restart: %+v", h)
			}
			if l := logs(); !strings.Contains(l, "restart 1 in") || !strings.Contains(l, tc.drv+" restarted (restart 1") || !strings.Contains(l, "signal: killed") {
				t.Errorf("supervisor log does not tell the restart, its reason and count:\n%s", l)
			}
			ns, txt := readNetStatus(t, env, name)
			if !ns.Healthy || !ns.HelperAlive || ns.HelperPID != h.PID || ns.Restarts != 1 || ns.Inside == nil ||
				!ns.Inside.Up || !ns.Inside.Address || !ns.Inside.DefaultRoute || !ns.Inside.ProbeOK {
				t.Errorf("status --json network after the restart: %+v inside %+v", ns, ns.Inside)
			}
			if !strings.Contains(txt, fmt.Sprintf("network: %s %s %s: healthy (%s pid %d, %s up, default route, ARP %s answered in", tc.drv, tc.ifname, addr, tc.drv, h.PID, tc.ifname, gw)) ||
				!strings.Contains(txt, "restarts 1)") {
				t.Errorf("status text:\n%s", txt)
			}

			if tc.drv == "slirp4netns" {
				// A helper that dies again right after each start: the
				// supervisor gives up after 5 in a row, and says why.
				var gaveUp *sandbox.NetHelper
				deadline := time.Now().Add(time.Minute)
				for gaveUp == nil && time.Now().Before(deadline) {
					h := runState(t, env, name).NetHelper
					switch {
					case h.GaveUp != "":
						gaveUp = h
					case h.PID != 0:
						_ = syscall.Kill(h.PID, syscall.SIGKILL) // ESRCH: it died already, as wanted
					}
					time.Sleep(20 * time.Millisecond)
				}
				if gaveUp == nil || !strings.Contains(gaveUp.GaveUp, "5 restarts in a row did not last") {
					t.Fatalf("no give-up after repeated kills: %+v\n%s", gaveUp, logs())
				}
				if !strings.Contains(logs(), "giving up on slirp4netns") {
					t.Errorf("the supervisor log does not say it gave up:\n%s", logs())
				}
				ns, txt := readNetStatus(t, env, name)
				if ns.Healthy || ns.GaveUp == "" || ns.HelperAlive || (ns.Inside != nil && ns.Inside.Present) {
					t.Errorf("status --json after the give-up: %+v inside %+v", ns, ns.Inside)
				}
				t.Logf("status after the give-up:\n%s", txt)
				if !strings.Contains(txt, "UNHEALTHY") || !strings.Contains(txt, "gave up restarting slirp4netns") || !strings.Contains(txt, "interface tap0 is missing") {
					t.Errorf("status text after the give-up:\n%s", txt)
				}
			}

			// The stop takes the restarted helper with it. (Not every new
			// process of the user: other tests' nodes may run meanwhile.)
			if err := syscall.Kill(st.Supervisor, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if !exited(15 * time.Second) {
				t.Fatalf("the sandbox did not stop within 15s of SIGTERM:\n%s", logs())
			}
			if syscall.Kill(h.PID, 0) == nil {
				t.Errorf("the restarted %s (pid %d) outlived the sandbox", tc.drv, h.PID)
			}
		})
	}
}

// lineSink counts the lines a pod streams to the host, over any number of
// connections, and when the last one arrived.
type lineSink struct {
	mu    sync.Mutex
	lines int
	conns int
	last  time.Time
}

func (s *lineSink) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				s.mu.Lock()
				s.lines++
				s.last = time.Now()
				s.mu.Unlock()
			}
		}()
	}
}

func (s *lineSink) lastLine() (time.Time, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.lines, s.conns
}

// TestNetworkHelperKilledUnderLoad is the test: a pod streams
// lines to a listener on the host's address; kill -9 of the node's
// slirp4netns; lines arrive again (on the same connection or a new one)
// within 5 s, with no node restart, and status shows the restart.
func TestNetworkHelperKilledUnderLoad(t *testing.T) {
	u := testutil.Integration(t)
	bins := testutil.K8sBin(t)
	c := &cluster{t: t, env: u.NewEnv(t), name: "faults", kubectlBin: filepath.Join(bins, "kubectl"), api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp"))}
	c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", c.name, "kubeconfig")
	// Registered first: a node that failed halfway through up is stopped too.
	t.Cleanup(func() {
		if r := c.down("--purge"); r.Code != 0 {
			t.Errorf("down: %s", r)
		}
	})
	l, err := net.Listen("tcp", net.JoinHostPort(testutil.HostIPv4(t).String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sink := &lineSink{}
	go sink.serve(l)
	hip, hport, _ := net.SplitHostPort(l.Addr().String())

	if r := c.up(); r.Code != 0 {
		t.Fatalf("up: %s", r)
	}
	// One line every 100 ms; when the connection breaks, a new one.
	stream := fmt.Sprintf(`while :; do i=0; while :; do i=$((i+1)); echo "$(hostname) $i"; sleep 0.1; done | nc %s %s; sleep 0.2; done`, hip, hport)
	pod := `apiVersion: v1
kind: Pod
metadata: {name: streamer}
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: docker.io/library/busybox:usernode
    imagePullPolicy: Never
    command: ["sh", "-c", ` + fmt.Sprintf("%q", stream) + `]
`
	waitFor(t, "service account default/default", time.Minute, func() (bool, string) {
		out, err := c.kubectl("get", "serviceaccount", "default")
		return err == nil, out
	})
	applyManifest(t, c, pod)
	waitFor(t, "the pod's stream reaching the host", 3*time.Minute, func() (bool, string) {
		_, n, _ := sink.lastLine()
		return n >= 10, fmt.Sprintf("%d lines", n)
	})

	st := runState(t, c.env, c.name)
	if st.NetHelper == nil || st.NetHelper.PID == 0 {
		t.Fatalf("state.json has no network helper: %+v", st.NetHelper)
	}
	if err := syscall.Kill(st.NetHelper.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Lines the host had buffered may still arrive just after the kill:
	// what counts is a line after the new helper is in place.
	var restarted time.Time
	for {
		if restarted.IsZero() {
			if h := runState(t, c.env, c.name).NetHelper; h.Restarts >= 1 && h.PID != 0 {
				restarted = time.Now()
			}
		}
		if last, _, _ := sink.lastLine(); !restarted.IsZero() && last.After(restarted) {
			break
		}
		if time.Since(killed) > netRecovery {
			last, n, conns := sink.lastLine()
			h := runState(t, c.env, c.name).NetHelper
			t.Fatalf("no line from the pod within %s of the kill -9 (restart seen: %v; %d lines on %d connections, the last at %s; helper %+v)",
				netRecovery, !restarted.IsZero(), n, conns, last.Sub(killed), h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, n, conns := sink.lastLine()
	t.Logf("the pod's lines arrive again %.1fs after the kill (%d lines on %d connections)", time.Since(killed).Seconds(), n, conns)

	ns, txt := readNetStatus(t, c.env, c.name)
	if !ns.Healthy || ns.Restarts != 1 || !ns.HelperAlive || ns.Inside == nil || !ns.Inside.ProbeOK {
		t.Errorf("status --json network: %+v inside %+v", ns, ns.Inside)
	}
	if !strings.Contains(txt, "healthy") || !strings.Contains(txt, "restarts 1)") || !strings.Contains(txt, "last exit of slirp4netns") {
		t.Errorf("status text:\n%s", txt)
	}
	if !strings.Contains(txt, "node faults: ready") {
		t.Errorf("the node is no longer ready:\n%s", txt)
	}
}

// TestNetworkVethGone: lxc-user-nic has no helper process to restart;
// when the node's veth vanishes, status says so, and what to do.
func TestNetworkVethGone(t *testing.T) {
	u := testutil.Integration(t)
	usernet, _ := os.ReadFile("/etc/lxc/lxc-usernet")
	if _, err := net.InterfaceByName("lxcbr0"); err != nil || !strings.Contains(string(usernet), u.Name+" veth lxcbr0") {
		t.Skipf("lxc-user-nic needs bridge lxcbr0 and the line %q in /etc/lxc/lxc-usernet (the driver suite, go test ./pkg/network/drivers as root, sets both up)", u.Name+" veth lxcbr0 10")
	}
	env := u.NewEnv(t)
	const name = "fault-veth"
	st, _, _ := startSandbox(t, env, name, "--net", "lxc-user-nic")
	if st.NetHelper != nil {
		t.Errorf("lxc-user-nic recorded a helper: %+v", st.NetHelper)
	}
	ns, txt := readNetStatus(t, env, name)
	if !ns.Healthy || ns.Inside == nil || !ns.Inside.Up || !ns.Inside.DefaultRoute || !ns.Inside.ProbeOK {
		t.Errorf("status --json with the veth in place: %+v inside %+v\n%s", ns, ns.Inside, txt)
	}
	if r := env.Run(t, 30*time.Second, testutil.Binary(t), "enter", "--name", name, "--", "ip", "link", "del", "eth0"); r.Code != 0 {
		t.Fatalf("deleting the veth: %s", r)
	}
	ns, txt = readNetStatus(t, env, name)
	if ns.Healthy || ns.Inside == nil || ns.Inside.Present {
		t.Errorf("status --json with the veth gone: %+v inside %+v", ns, ns.Inside)
	}
	t.Logf("status with the veth gone:\n%s", txt)
	if !strings.Contains(txt, "UNHEALTHY") || !strings.Contains(txt, "interface eth0 is missing") || !strings.Contains(txt, "no helper process that would make eth0 again") {
		t.Errorf("status text with the veth gone:\n%s", txt)
	}
}

// TestSandboxRebuiltAfterDeath: with --restart (what `up` always asks
// for), a kill -9 of the agent, of init or of the node's first process is
// repaired by building the sandbox again over the same state dir; status
// says how often and why. A first process that exits is the node's own
// end and is not restarted, and a stop during the wait is a clean stop.
func TestSandboxRebuiltAfterDeath(t *testing.T) {
	u := testutil.Integration(t)
	bin := testutil.Binary(t)
	env := u.NewEnv(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	const name = "fault-rebuild"
	st, logs, exited := startSandbox(t, env, name, "--restart")
	// Something of the node's own, in its state dir: a rebuilt sandbox
	// must find it.
	if r := env.Run(t, 30*time.Second, bin, "enter", "--name", name, "--", "sh", "-c", "echo kept > /var/lib/marker"); r.Code != 0 {
		t.Fatalf("enter: %s", r)
	}
	firstProcess := func(init int) int {
		out, _ := exec.Command("pgrep", "-P", fmt.Sprint(init)).Output()
		var pid int
		fmt.Sscan(string(out), &pid) //nolint:errcheck // 0 when there is none, checked below
		return pid
	}
	prev := st
	for i, victim := range []struct {
		what string
		pid  func(*sandbox.State) int
	}{
		{"the agent", func(s *sandbox.State) int { return s.Agent }},
		{"init", func(s *sandbox.State) int { return s.Init }},
		{"the node's first process", func(s *sandbox.State) int { return firstProcess(s.Init) }},
	} {
		pid := victim.pid(prev)
		if pid == 0 {
			t.Fatalf("no pid for %s in %+v", victim.what, prev)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		var now *sandbox.State
		waitFor(t, "the sandbox built again after a kill -9 of "+victim.what, time.Minute, func() (bool, string) {
			s, err := sandbox.Running(filepath.Join(env.RuntimeDir, "usernode", name))
			if err != nil {
				return false, err.Error()
			}
			now = s
			return s.Init != prev.Init && s.Restarts != nil && s.Restarts.Count == i+1, fmt.Sprintf("%+v", s.Restarts)
		})
		t.Logf("kill -9 of %s: sandbox up again %.1fs later (init %d -> %d)", victim.what, time.Since(killed).Seconds(), prev.Init, now.Init)
		if !strings.Contains(now.Restarts.LastDeath, "SIGKILL") || now.Supervisor != st.Supervisor {
			t.Errorf("after a kill -9 of %s: %+v, supervisor %d (was %d)", victim.what, now.Restarts, now.Supervisor, st.Supervisor)
		}
		if r := env.Run(t, 30*time.Second, bin, "enter", "--name", name, "--", "cat", "/var/lib/marker"); strings.TrimSpace(r.Stdout) != "kept" {
			t.Errorf("the state dir's file after the rebuild: %s", r)
		}
		prev = now
	}
	if r := env.Run(t, 30*time.Second, bin, "status", "--name", name); !strings.Contains(r.Stdout, "built again 3 time(s)") {
		t.Errorf("status after three rebuilds:\n%s", r)
	}
	if err := syscall.Kill(st.Supervisor, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !exited(30 * time.Second) {
		t.Fatalf("the supervisor did not stop on SIGTERM:\n%s", logs())
	}
	if left := testutil.WaitNoNewProcs(u.UID, procsBefore, 10*time.Second); len(left) > 0 {
		t.Errorf("processes left after the stop: %v", left)
	}

	// A first process that exits ends the node, --restart or not.
	r := env.Run(t, time.Minute, bin, "sandbox", "run", "--name", name, "--restart", "--", "sh", "-c", "exit 3")
	if r.Code != 3 || strings.Contains(r.Stderr, "building it again") {
		t.Errorf("a command that exits 3 under --restart: %s", r)
	}
}
