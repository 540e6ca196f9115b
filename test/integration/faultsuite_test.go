//go:build faults

// The fault-injection suite (`make test-faults`): a node as a user runs
// it, hurt in every way issue 14 lists, each case asserting that the node
// recovers (or fails saying why) and that `down` leaves nothing. It
// reports the time each recovery took: bin/faults.md, docs/reliability.md.
// Built only with the faults tag, so `make test` does not run it twice.

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/pkg/sandbox"
)

// faultRow is one line of the suite's report.
type faultRow struct {
	Case     string
	Recovery time.Duration // 0: not a recovery (a refusal, say)
	Outcome  string
}

// faultNode is the suite's node, with what a user would check of it.
type faultNode struct {
	*cluster
	runtimeDir string // the node's runtime dir on the host
	nodePort   int
	rows       []faultRow
	failures   []string
	mu         sync.Mutex
}

// failf fails t as t.Fatalf does, and keeps the message for the end of the
// output: the failed node's logs follow a failure there, and CI keeps only
// the output's last lines (stop 21's failure was cut off so).
func (f *faultNode) failf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	f.mu.Lock()
	f.failures = append(f.failures, t.Name()+": "+msg)
	f.mu.Unlock()
	sayAgainAtEnd(t, msg)
	t.Fatal(msg)
}

// errorf is t.Errorf on the suite's test, the failure also said again at
// the end of the run.
func (f *faultNode) errorf(format string, args ...any) {
	f.t.Helper()
	msg := fmt.Sprintf(format, args...)
	sayAgainAtEnd(f.t, msg)
	f.t.Error(msg)
}

func (f *faultNode) report(name string, d time.Duration, outcome string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows = append(f.rows, faultRow{name, d, outcome})
	f.t.Logf("FAULT %-45s recovered in %6.1fs  %s", name, d.Seconds(), outcome)
}

// nodeStatus is what the suite reads of `usernode status --json`.
type nodeStatus struct {
	Sandbox sandbox.State
	Node    struct {
		Phase      string
		Components []struct {
			Name     string
			PID      int
			State    string
			Restarts int
		}
	}
	Network *sandbox.NetStatus
	Disk    *struct {
		FreeBytes uint64
		Warning   string
	}
}

func (f *faultNode) status() (*nodeStatus, string) {
	r := f.env.Run(f.t, 30*time.Second, testutil.Binary(f.t), "status", "--name", f.name, "--json")
	var st nodeStatus
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		return nil, r.String()
	}
	return &st, ""
}

// healthy is what a user checks: status says every component is ready
// and the network healthy, the API server says the node is Ready, and the
// NodePort serves.
func (f *faultNode) healthy() (bool, string) {
	st, why := f.status()
	if st == nil {
		return false, "status: " + why
	}
	if st.Node.Phase != "ready" {
		return false, "phase " + st.Node.Phase
	}
	for _, c := range st.Node.Components {
		if c.State != "ready" {
			return false, c.Name + " " + c.State
		}
	}
	if st.Network != nil && !st.Network.Healthy {
		return false, fmt.Sprintf("network: %v", st.Network.Problems)
	}
	out, err := f.kubectl("get", "node", f.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil || out != "True" {
		return false, "node Ready: " + out
	}
	b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", f.nodePort))
	if err != nil || !strings.HasPrefix(b, "served-by-web-") {
		return false, fmt.Sprintf("NodePort: %q %v", b, err)
	}
	return true, ""
}

// recover waits for the node to be healthy again and returns how long
// that took from since.
func (f *faultNode) recover(what string, since time.Time, limit time.Duration, extra ...func() (bool, string)) time.Duration {
	f.t.Helper()
	deadline := since.Add(limit)
	var last string
	for time.Now().Before(deadline) {
		ok, why := f.healthy()
		for _, e := range extra {
			if ok {
				ok, why = e()
			}
		}
		if ok {
			return time.Since(since)
		}
		last = why
		time.Sleep(250 * time.Millisecond)
	}
	f.failf(f.t, "%s: the node did not recover within %s; last: %s", what, limit, last)
	return 0
}

// podUIDs is the web pods' UIDs: the same pods, not new ones, after a
// fault the node should ride out.
func (f *faultNode) podUIDs() string {
	out, _ := f.kubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.uid} {end}")
	u := strings.Fields(out)
	sort.Strings(u)
	return strings.Join(u, " ")
}

// tree is pid and every process below it, from /proc.
func tree(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The field after the command (which may hold spaces) is the state,
		// then the ppid.
		rest := b[bytes.LastIndexByte(b, ')')+1:]
		var state string
		var ppid int
		if _, err := fmt.Sscan(string(rest), &state, &ppid); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// killAll is a power cut for the node: every process from its supervisor
// down is stopped first, so that none reacts to another's death, then
// killed.
func killAll(t *testing.T, supervisor int) {
	t.Helper()
	seen := map[int]bool{}
	for range 5 { // a process forked while the others were stopped
		grew := false
		for _, p := range tree(supervisor) {
			if !seen[p] {
				seen[p], grew = true, true
				_ = syscall.Kill(p, syscall.SIGSTOP) // ESRCH: gone already
			}
		}
		if !grew {
			break
		}
	}
	for p := range seen {
		_ = syscall.Kill(p, syscall.SIGKILL) // as above
	}
	// Gone, as after a power cut: the kernel frees a killed process's
	// locks and ports only when it has exited.
	waitFor(t, "the killed processes gone", 30*time.Second, func() (bool, string) {
		for p := range seen {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err == nil && !bytes.Contains(b[bytes.LastIndexByte(b, ')'):], []byte(") Z")) {
				return false, fmt.Sprintf("pid %d", p)
			}
		}
		return true, ""
	})
}

// supervisorOf waits for the node's supervisor to publish itself.
func (f *faultNode) supervisorOf(limit time.Duration) int {
	f.t.Helper()
	var pid int
	waitFor(f.t, "the supervisor's pid in state.json", limit, func() (bool, string) {
		st, err := sandbox.ReadState(f.runtimeDir)
		if err != nil {
			return false, err.Error()
		}
		pid = st.Supervisor
		return pid > 0, ""
	})
	return pid
}

// upBackground starts `up -d` and returns a wait for its result.
func (f *faultNode) upBackground() func() testutil.Result {
	args := []string{"up", "-d", "--name", f.name, "--bin-dir", filepath.Dir(f.kubectlBin),
		"--api-port", fmt.Sprint(f.api), "--kubelet-port", fmt.Sprint(f.klt)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c := f.env.Command(ctx, testutil.Binary(f.t), append(args, f.extra...)...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan testutil.Result, 1)
	go func() {
		err := c.Wait()
		cancel()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		done <- testutil.Result{Code: code, Stdout: stdout.String(), Stderr: stderr.String()}
	}()
	return func() testutil.Result { return <-done }
}

// noLeaks is the check after each `down`: no process of the user beyond
// those from before, the host's mount table as it was, the ports closed.
func (f *faultNode) noLeaks(what string, procsBefore []int, mountsBefore map[int]*mountinfo.Info) {
	f.t.Helper()
	if left := testutil.WaitNoNewProcs(f.env.User.UID, procsBefore, 30*time.Second); len(left) > 0 {
		f.errorf("%s: processes left: %v", what, left)
	}
	if left := mountsLeft(f.t, mountsBefore); len(left) > 0 {
		f.errorf("%s: mounts left on the host: %s", what, strings.Join(left, "; "))
	}
	for _, p := range []int{f.api, f.klt, f.nodePort} {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			conn.Close()
			f.errorf("%s: port %d still open", what, p)
		}
	}
}

// faultUser is the account the suite runs as: the second test user when
// run as root, so that its leak checks never count another test's (or a
// developer's node's) processes of the first.
func faultUser(t *testing.T) *testutil.User {
	if os.Geteuid() == 0 {
		return testutil.Account(t, testutil.SecondUser)
	}
	return testutil.Integration(t)
}

func newFaultNode(t *testing.T, u *testutil.User, name string, extra ...string) *faultNode {
	bins := testutil.K8sBin(t)
	env := u.NewEnv(t)
	c := &cluster{t: t, env: env, name: name, kubectlBin: filepath.Join(bins, "kubectl"),
		api: int(testutil.FreePort(t, "tcp")), klt: int(testutil.FreePort(t, "tcp")), extra: extra}
	c.kubeconfig = filepath.Join(env.DataHome, "usernode", name, "kubeconfig")
	f := &faultNode{cluster: c, runtimeDir: filepath.Join(env.RuntimeDir, "usernode", name), nodePort: 30000 + int(testutil.FreePort(t, "tcp"))%2000}
	// Registered before the node's up registers its logs' cleanup, so it
	// runs after that one (cleanups run last first).
	t.Cleanup(func() {
		if len(f.failures) > 0 {
			t.Logf("what failed (again, after the node's logs):\n%s", strings.Join(f.failures, "\n"))
		}
	})
	return f
}

func (f *faultNode) writeReport() {
	var b strings.Builder
	fmt.Fprintln(&b, "| fault | recovered in | outcome |")
	fmt.Fprintln(&b, "|---|---|---|")
	for _, r := range f.rows {
		d := "—"
		if r.Recovery > 0 {
			d = fmt.Sprintf("%.1f s", r.Recovery.Seconds())
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.Case, d, r.Outcome)
	}
	f.t.Logf("fault suite report:\n%s", b.String())
	// Appended: each test of the suite adds its rows (make test-faults
	// starts the file afresh).
	if p := os.Getenv("USERNODE_FAULTS_REPORT"); p != "" {
		rf, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			_, err = fmt.Fprintf(rf, "%s\n%s\n", f.t.Name(), b.String())
			err = errors.Join(err, rf.Close())
		}
		if err != nil {
			f.t.Errorf("writing the report: %v", err)
		}
	}
}

// start brings the node up with the workload, waits until it is healthy,
// and returns the check that the cluster is still the one it made (the
// Node's UID, the workload's ConfigMap).
func (f *faultNode) start() func() (bool, string) {
	f.t.Helper()
	if r := f.up(); r.Code != 0 {
		f.failf(f.t, "up: %s", r)
	}
	f.t.Cleanup(func() { f.down("--purge") })
	applyWorkload(f.t, f.cluster, f.nodePort)
	waitRunning(f.t, f.cluster)
	f.recover("the first up", time.Now(), 3*time.Minute)
	nodeUID := f.mustKubectl("get", "node", f.name, "-o", "jsonpath={.metadata.uid}")
	return func() (bool, string) {
		uid, _ := f.kubectl("get", "node", f.name, "-o", "jsonpath={.metadata.uid}")
		cm, _ := f.kubectl("get", "configmap", "cfg", "-o", "jsonpath={.data.greeting}")
		return uid == nodeUID && cm == "hello-from-configmap", fmt.Sprintf("node uid %q (was %q), configmap %q", uid, nodeUID, cm)
	}
}

// TestFaults runs every fault on one node, in an order where each case
// starts from a healthy node and the node's cluster is kept throughout.
func TestFaults(t *testing.T) {
	u := faultUser(t)
	bin := testutil.Binary(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	mountsBefore := hostMounts(t)
	f := newFaultNode(t, u, "faults")
	defer f.writeReport()
	sameCluster := f.start()

	// The kubelet serves the workload's pods again: a restarted kubelet
	// answers "pod does not exist" to an exec until it has read its pods
	// back (the next case's first exec failed so, 0.4 s after the kubelet
	// had been counted back on its process alone, with kube-proxy's kill
	// between).
	podsServed := func() (bool, string) {
		out, err := f.kubectl("exec", "deploy/web", "--", "true")
		return err == nil, "exec in deploy/web: " + out
	}
	t.Run("kill -9 of each component", func(t *testing.T) {
		st, why := f.status()
		if st == nil || len(st.Node.Components) < 7 {
			f.failf(t, "status: %+v %s", st, why)
		}
		for _, c := range st.Node.Components {
			began := time.Now()
			if r := f.env.Run(t, 30*time.Second, bin, "enter", "--name", f.name, "--", "kill", "-9", fmt.Sprint(c.PID)); r.Code != 0 {
				f.failf(t, "kill %s: %s", c.Name, r)
			}
			restarted := func() (bool, string) {
				now, why := f.status()
				if now == nil {
					return false, why
				}
				for _, n := range now.Node.Components {
					if n.Name == c.Name {
						return n.PID != c.PID && n.Restarts > c.Restarts, fmt.Sprintf("%s pid %d restarts %d", n.Name, n.PID, n.Restarts)
					}
				}
				return false, c.Name + " not listed"
			}
			d := f.recover("kill -9 "+c.Name, began, 3*time.Minute, restarted, sameCluster, podsServed)
			f.report("kill -9 "+c.Name, d, "restarted by the node's supervisor; its pods served")
		}
	})

	t.Run("kill -9 of the network helper", func(t *testing.T) {
		host := greeter(t, net.JoinHostPort(testutil.HostIPv4(t).String(), "0"), "hello-from-host")
		h, p, _ := net.SplitHostPort(host)
		egress := func() (bool, string) {
			out, err := f.kubectl("exec", "deploy/web", "--", "nc", "-w", "3", h, p)
			return err == nil && strings.Contains(out, "hello-from-host"), out
		}
		if ok, out := egress(); !ok {
			f.failf(t, "a pod's egress before the kill: %s", out)
		}
		st, _ := f.status()
		if st == nil || st.Sandbox.NetHelper == nil {
			f.failf(t, "no network helper in status: %+v", st)
		}
		began := time.Now()
		if err := syscall.Kill(st.Sandbox.NetHelper.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d := f.recover("kill -9 of the network helper", began, time.Minute, egress)
		f.report("kill -9 "+st.Sandbox.NetHelper.Name, d, "helper restarted; a pod's egress back")
	})

	t.Run("SIGSTOP of etcd for 20 s", func(t *testing.T) {
		st, _ := f.status()
		pid := 0
		for _, c := range st.Node.Components {
			if c.Name == "etcd" {
				pid = c.PID
			}
		}
		if r := f.env.Run(t, 30*time.Second, bin, "enter", "--name", f.name, "--", "kill", "-STOP", fmt.Sprint(pid)); r.Code != 0 {
			f.failf(t, "kill -STOP: %s", r)
		}
		time.Sleep(20 * time.Second)
		_, apiErr := f.kubectl("get", "configmap", "cfg", "--request-timeout", "5s")
		began := time.Now()
		if r := f.env.Run(t, 30*time.Second, bin, "enter", "--name", f.name, "--", "kill", "-CONT", fmt.Sprint(pid)); r.Code != 0 {
			f.failf(t, "kill -CONT: %s", r)
		}
		if apiErr == nil {
			t.Errorf("the API server served a read from a stopped etcd")
		}
		d := f.recover("SIGCONT of etcd", began, 3*time.Minute, sameCluster)
		f.report("SIGSTOP etcd 20 s (from SIGCONT)", d, "API down while stopped, back after")
	})

	for _, who := range []string{"agent", "init"} {
		t.Run("kill -9 of the "+who, func(t *testing.T) {
			pods := f.podUIDs()
			st, err := sandbox.Running(f.runtimeDir)
			if err != nil {
				t.Fatal(err)
			}
			pid := map[string]int{"agent": st.Agent, "init": st.Init}[who]
			began := time.Now()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			rebuilt := func() (bool, string) {
				now, err := sandbox.Running(f.runtimeDir)
				if err != nil {
					return false, err.Error()
				}
				return now.Init != st.Init && now.Supervisor == st.Supervisor, "init unchanged"
			}
			samePods := func() (bool, string) { p := f.podUIDs(); return p == pods, p }
			d := f.recover("kill -9 of the "+who, began, 3*time.Minute, rebuilt, sameCluster, samePods)
			f.report("kill -9 "+who, d, "sandbox built again by the supervisor, same pods")
		})
	}

	t.Run("kill -9 of everything, then up", func(t *testing.T) {
		killAll(t, f.supervisorOf(time.Second))
		began := time.Now()
		if r := f.up(); r.Code != 0 {
			f.failf(t, "up after the power cut: %s", r)
		}
		d := f.recover("up after kill -9 of everything", began, 3*time.Minute, sameCluster)
		f.report("kill -9 of every process, then up", d, "same cluster (node UID, ConfigMap, pods)")
	})

	// At several moments of a start: etcd's first writes, the API
	// server's bootstrap, the kubelet's registration.
	for _, at := range []time.Duration{1500 * time.Millisecond, 4 * time.Second, 8 * time.Second} {
		t.Run(fmt.Sprintf("kill -9 of everything %s into up", at), func(t *testing.T) {
			if r := f.down(); r.Code != 0 {
				f.failf(t, "down: %s", r)
			}
			wait := f.upBackground()
			sup := f.supervisorOf(30 * time.Second)
			time.Sleep(at)
			killAll(t, sup)
			wait()
			began := time.Now()
			if r := f.up(); r.Code != 0 {
				f.failf(t, "up after the power cut: %s", r)
			}
			d := f.recover("up after a power cut during up", began, 3*time.Minute, sameCluster)
			f.report(fmt.Sprintf("kill -9 of every process %s into up, then up", at), d, "same cluster")
		})
	}

	t.Run("down during up", func(t *testing.T) {
		if r := f.down(); r.Code != 0 {
			f.failf(t, "down: %s", r)
		}
		f.noLeaks("down", procsBefore, mountsBefore)
		wait := f.upBackground()
		f.supervisorOf(30 * time.Second)
		time.Sleep(2 * time.Second)
		if r := f.down(); r.Code != 0 {
			t.Errorf("down during up: %s", r)
		}
		r := wait()
		if r.Code == 0 || !strings.Contains(r.Stderr, "stopped while starting") {
			t.Errorf("the up that was stopped: %s", r)
		}
		f.noLeaks("down during up", procsBefore, mountsBefore)
		f.report("down during up", 0, "up fails with \"stopped while starting\"; nothing left")
	})

	t.Run("two ups at once", func(t *testing.T) {
		// From a stopped node, whatever ran before (-run may pick this case
		// alone, with the node the suite started still up).
		if _, err := sandbox.Supervisor(f.runtimeDir); err == nil {
			if r := f.down(); r.Code != 0 {
				f.failf(t, "down: %s", r)
			}
		}
		waits := []func() testutil.Result{f.upBackground(), f.upBackground()}
		began := time.Now()
		var ok, refused int
		var results, short []string
		for i, w := range waits {
			r := w()
			results = append(results, r.String())
			short = append(short, fmt.Sprintf("up %d: exit %d, %s", i+1, r.Code, lastLines(r.Stderr, 3)))
			switch {
			case r.Code == 0:
				ok++
			case strings.Contains(r.Stderr, "already running"):
				refused++
			}
		}
		if ok != 1 || refused != 1 {
			// Whole outputs first, the failure short: it is said again at
			// the end of the run, where CI shows only the last lines.
			t.Logf("the two ups:\n%s", strings.Join(results, "\n---\n"))
			f.failf(t, "two ups at once: %d succeeded, %d refused as already running:\n%s", ok, refused, strings.Join(short, "\n"))
		}
		d := f.recover("two ups at once", began, 3*time.Minute, sameCluster)
		f.report("two ups at once", d, "one runs the node, the other is refused (already running)")
	})

	// The race behind two ups at once, made certain: another program
	// (another up's check) holds the API's host port for a moment just as
	// the node's supervisor binds it. The start waits it out.
	t.Run("a host port held as up binds it", func(t *testing.T) {
		if _, err := sandbox.Supervisor(f.runtimeDir); err == nil {
			if r := f.down(); r.Code != 0 {
				f.failf(t, "down: %s", r)
			}
		}
		held := make(chan error, 1)
		state := filepath.Join(f.runtimeDir, "state.json")
		go func() {
			// The supervisor publishes its state once it holds the lock,
			// a few steps before it binds the host ports.
			deadline := time.Now().Add(time.Minute)
			for {
				if _, err := os.Stat(state); err == nil {
					break
				}
				if time.Now().After(deadline) {
					held <- errors.New("no state.json within a minute")
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.api))
			if err != nil {
				held <- fmt.Errorf("the supervisor bound the port first: %w", err)
				return
			}
			time.Sleep(700 * time.Millisecond)
			held <- l.Close()
		}()
		began := time.Now()
		r := f.up()
		if err := <-held; err != nil {
			t.Logf("the port was not held as planned (%v): the case proves nothing this run", err)
		}
		if r.Code != 0 {
			f.failf(t, "up with its API port held for 0.7 s as it bound it: %s", lastLines(r.Stderr, 4))
		}
		d := f.recover("a host port held for a moment", began, 3*time.Minute, sameCluster)
		f.report("the API's host port held 0.7 s as up binds it", d, "up waits it out and runs the node")
	})

	// A run of some cases only (-run) may have left it down already.
	if _, err := sandbox.Supervisor(f.runtimeDir); err == nil {
		if r := f.down(); r.Code != 0 {
			f.failf(t, "down: %s", r)
		}
	}
	f.noLeaks("the last down", procsBefore, mountsBefore)
}

// TestFaultsDiskFull: the node's state dir on a filesystem of its own (a
// 1 GiB ext4 image the test mounts as root), nearly full at `up`, then
// nearly filled by a pod, then filled to the last block under a running
// node, then freed. `up` refuses with the fix and leaves nothing; the pod
// is evicted and the rest runs on; the full node says FULL in status and
// loses nothing; freed, it recovers by itself.
func TestFaultsDiskFull(t *testing.T) {
	testutil.RequireRoot(t, "mounting a small filesystem for the node's state dir")
	u := faultUser(t)
	procsBefore, _ := testutil.ProcsOf(u.UID)
	dir, err := os.MkdirTemp("/var/tmp", "usernode-diskfull-")
	if err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("truncate", "-s", "1G", img)
	// -m 0: no blocks reserved for root, so the filler below fills it for
	// the user too.
	run("mkfs.ext4", "-q", "-m", "0", img)
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run("mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
		_ = os.RemoveAll(dir) // under /var/tmp; a leftover is only disk
	})
	// The loop mount is the test's: counted as there before.
	mountsBefore := hostMounts(t)
	if err := os.Chown(mnt, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, mnt} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filler := filepath.Join(mnt, "filler")
	fill := func(leave uint64) {
		t.Helper()
		_ = os.Remove(filler)
		var fs syscall.Statfs_t
		if err := syscall.Statfs(mnt, &fs); err != nil {
			t.Fatal(err)
		}
		// 8 MiB short of the mark: the extents' own metadata takes blocks
		// too (an exact fallocate fails with ENOSPC).
		free := fs.Bavail * uint64(fs.Bsize)
		if free > leave+8<<20 {
			run("fallocate", "-l", fmt.Sprint(free-leave-8<<20), filler)
		}
		// fallocate leaves a few blocks of metadata room: fill the rest by
		// writing until ENOSPC.
		if leave == 0 {
			f, err := os.OpenFile(filepath.Join(mnt, "filler2"), os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			for {
				if _, err := f.Write(buf); err != nil {
					break
				}
			}
			_ = f.Close() // ENOSPC on close is expected here
		}
	}
	state := filepath.Join(mnt, "node")
	f := newFaultNode(t, u, "diskfull", "--state-dir", state)
	f.kubeconfig = filepath.Join(state, "kubeconfig")
	defer f.writeReport()

	// up on a filesystem with 300 MiB free: refused before anything starts.
	fill(300 << 20)
	r := f.up()
	if r.Code == 0 || !strings.Contains(r.Stderr, "MiB free") || !strings.Contains(r.Stderr, "--state-dir") {
		t.Fatalf("up with 300 MiB free: %s", r)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("a refused up made the state dir: %v", err)
	}
	t.Logf("the refusal: %s", strings.TrimSpace(r.Stderr))
	f.noLeaks("the refused up", procsBefore, mountsBefore)
	f.report("up with 300 MiB free", 0, "refused, naming the space and --state-dir")

	_ = os.Remove(filler)
	sameCluster := f.start()
	if out, err := exec.Command("du", "-sm", state).CombinedOutput(); err == nil {
		t.Logf("a fresh node with the workload running uses %s MiB of its state dir", strings.Fields(string(out))[0])
	}

	// A pod that fills the filesystem (its emptyDir is in the state dir)
	// to 4 MiB short of full: below the kubelet's 1% nodefs threshold, with
	// room left for etcd's and the runtime's writes. What a user counts
	// on: the kubelet evicts that pod, its emptyDir goes with it, the other
	// pods run on, and the pressure clears by itself.
	webPods := f.mustKubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.name}:{.status.phase} {end}")
	hogBegan := time.Now()
	applyManifest(t, f.cluster, diskHog)
	var sawPressure bool
	waitFor(t, "the pod filling the disk evicted", 4*time.Minute, func() (bool, string) {
		if p, _ := f.kubectl("get", "node", f.name, "-o", `jsonpath={.status.conditions[?(@.type=="DiskPressure")].status}`); p == "True" {
			sawPressure = true
		}
		out, _ := f.kubectl("get", "pod", "hog", "-o", "jsonpath={.status.phase}/{.status.reason}: {.status.message}")
		return strings.HasPrefix(out, "Failed/Evicted"), out
	})
	evictedIn := time.Since(hogBegan)
	msg, _ := f.kubectl("get", "pod", "hog", "-o", "jsonpath={.status.message}")
	t.Logf("the hog evicted %.1fs after it was created: %s", evictedIn.Seconds(), msg)
	if !strings.Contains(msg, "ephemeral-storage") && !strings.Contains(msg, "DiskPressure") {
		t.Errorf("the hog's eviction does not name the disk: %q", msg)
	}
	if !sawPressure {
		// Set when the eviction manager acts; the eviction is seen first
		// only if both fell between two polls, which are 0.5 s apart.
		t.Logf("DiskPressure was not seen True (it may have come and gone between two polls)")
	}
	// The same pods, not replacements: the kubelet evicted only the hog.
	if out, _ := f.kubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.name}:{.status.phase} {end}"); out != webPods {
		all, _ := f.kubectl("get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.message}{\"\\n\"}{end}")
		t.Errorf("the workload's pods after the hog's eviction: %q, before it: %q; every pod:\n%s", out, webPods, all)
	}
	waitFor(t, "DiskPressure to clear after the eviction", 3*time.Minute, func() (bool, string) {
		p, _ := f.kubectl("get", "node", f.name, "-o", `jsonpath={.status.conditions[?(@.type=="DiskPressure")].status}`)
		return p == "False", "DiskPressure " + p
	})
	cleared := time.Since(hogBegan)
	if _, err := f.kubectl("delete", "pod", "hog", "--wait=false"); err != nil {
		t.Errorf("deleting the evicted pod: %v", err)
	}
	f.report("a pod filling the state dir's filesystem", cleared,
		fmt.Sprintf("evicted after %.0f s (DiskPressure), the other pods ran on; pressure cleared by itself", evictedIn.Seconds()))

	fill(0)
	filled := time.Now()
	waitFor(t, "status to say the disk is FULL", time.Minute, func() (bool, string) {
		st, why := f.status()
		if st == nil || st.Disk == nil {
			return false, why
		}
		return strings.Contains(st.Disk.Warning, "FULL"), st.Disk.Warning
	})
	txt := f.env.Run(t, 30*time.Second, testutil.Binary(t), "status", "--name", f.name)
	if !strings.Contains(txt.Stdout, "WARNING: the filesystem holding") {
		t.Errorf("status text on a full disk:\n%s", txt)
	}
	// What a full disk breaks, for the report: a write to the cluster.
	_, werr := f.kubectl("create", "configmap", "while-full", "--request-timeout", "10s")
	time.Sleep(30*time.Second - time.Since(filled))
	_, ready := f.healthy()
	pressure, _ := f.kubectl("get", "node", f.name, "-o", `jsonpath={.status.conditions[?(@.type=="DiskPressure")].status}`)
	evicted, _ := f.kubectl("get", "pods", "-A", "--field-selector", "status.phase=Failed", "-o", "jsonpath={range .items[*]}{.metadata.name}:{.status.reason} {end}")
	t.Logf("30 s on a full disk: a write to the API %v; health: %s; DiskPressure %q; failed pods: %s", werr, ready, pressure, evicted)

	_ = os.Remove(filler)
	_ = os.Remove(filepath.Join(mnt, "filler2"))
	freed := time.Now()
	d := f.recover("after the disk was freed", freed, 5*time.Minute, sameCluster)
	outcome := "status said FULL; recovered by itself, cluster intact"
	if werr != nil {
		outcome = "API writes failed while full; status said FULL; recovered by itself, cluster intact"
	}
	f.report("state dir's filesystem full for 30 s (from freeing it)", d, outcome)

	if r := f.down(); r.Code != 0 {
		t.Fatalf("down: %s", r)
	}
	f.noLeaks("down", procsBefore, mountsBefore)
}

// diskHog fills its emptyDir, which is on the node's state-dir filesystem,
// to 4 MiB short of full, 24 MiB a second as a log or a cache grows, then
// waits to be evicted. Over ~30 s the kubelet measures its volume at least
// once (every 10-20 s, pkg/node/kubelet VolumeStatsAggPeriod); one that
// fills the disk within a second of starting may still count as empty
// when the eviction manager ranks the pods. The image links few applets;
// busybox runs the rest.
const diskHog = `apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: c
    image: docker.io/library/busybox:usernode
    imagePullPolicy: Never
    command: ["sh", "-c", "kb=$(busybox df -k /data | busybox tail -n 1 | busybox awk '{print $4}'); n=$((kb / 1024 - 4)); i=0; while [ $i -lt $n ]; do c=$((n - i)); [ $c -gt 24 ] && c=24; busybox dd if=/dev/zero of=/data/f$i bs=1M count=$c 2>/dev/null; i=$((i + c)); busybox sleep 1; done; exec busybox sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
`
