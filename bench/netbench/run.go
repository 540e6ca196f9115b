package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/bench/internal/host"
	"github.com/usernode/usernode/pkg/network"
)

// ---- measurements ----

func iperf(prefix []string, addr string, port, streams int, reverse bool) (float64, error) {
	args := append(append([]string{}, prefix...), "iperf3", "-c", addr, "-p", fmt.Sprint(port), "-t", fmt.Sprint(*secs), "-P", fmt.Sprint(streams), "-J")
	if reverse {
		args = append(args, "-R")
	}
	out, err := runCmd(args)
	if err != nil {
		return 0, err
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Error != "" {
		return 0, fmt.Errorf("iperf3 %v: %v %s", args, err, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rootReq func(args []string) ([]byte, error)

func runCmd(args []string) ([]byte, error) {
	if args[0] == "@root" {
		return rootReq(args[1:])
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*secs+20)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
	if err != nil {
		return out, fmt.Errorf("%v: %v: %s", args, err, out)
	}
	return out, nil
}

// connRate: c clients, each looping connect, 1 byte, echo, close.
func connRate(addr string, c int) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(time.Duration(*secs) * time.Second)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{1}
			for time.Now().Before(stop) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					time.Sleep(time.Millisecond)
					continue
				}
				_, err = conn.Write(b)
				if err == nil {
					_, err = conn.Read(b)
				}
				conn.Close()
				if err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n.Load() == 0 {
		return 0, fmt.Errorf("no connection completed: %v", firstErr.Load())
	}
	return float64(n.Load()) / float64(*secs), nil
}

// Round trips per RTT run, after warm-up ones: as the independent
// harness of issue 16 did.
const (
	rttN    = 5000
	rttWarm = 200
)

// rtt: median and 10th percentile of 1-byte ping-pongs on one
// connection, in microseconds.
func rtt(addr string) (float64, float64, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetNoDelay(true) // Go's default already; kept explicit
	b := []byte{1}
	var d []float64
	for i := 0; i < rttN+rttWarm; i++ {
		t0 := time.Now()
		if _, err := conn.Write(b); err != nil {
			return 0, 0, err
		}
		if _, err := conn.Read(b); err != nil {
			return 0, 0, err
		}
		if i >= rttWarm {
			d = append(d, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	sort.Float64s(d)
	return host.Median(d), d[len(d)/10], nil
}

// pingpongC is the second client (pingpong/pingpong.c), built at the
// start of a run; cClient is the binary.
//
//go:embed pingpong/pingpong.c
var pingpongC []byte

var cClient string

func buildCClient(dir string) error {
	src := filepath.Join(dir, "pingpong.c")
	if err := os.WriteFile(src, pingpongC, 0o644); err != nil {
		return err
	}
	cClient = filepath.Join(dir, "pingpong")
	if out, err := exec.Command(*cc, "-O2", "-pthread", "-o", cClient, src).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", *cc, err, out)
	}
	return nil
}

// cRun runs the C client and reads the numbers it prints.
func cRun(args ...string) ([]float64, error) {
	out, err := runCmd(append([]string{cClient}, args...))
	if err != nil {
		return nil, err
	}
	var v []float64
	for _, f := range strings.Fields(string(out)) {
		x, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("the C client printed %q", out)
		}
		v = append(v, x)
	}
	return v, nil
}

func cRTT(addr string) (float64, float64, error) {
	h, p, _ := net.SplitHostPort(addr)
	v, err := cRun("rtt", h, p, fmt.Sprint(rttN), fmt.Sprint(rttWarm))
	if err != nil || len(v) != 2 {
		return 0, 0, fmt.Errorf("the C client (rtt): %v %v", v, err)
	}
	return v[0], v[1], nil
}

func cConnRate(addr string, c int) (float64, error) {
	h, p, _ := net.SplitHostPort(addr)
	v, err := cRun("conn", h, p, fmt.Sprint(c), fmt.Sprint(*secs))
	if err != nil || len(v) != 1 {
		return 0, fmt.Errorf("the C client (conn): %v %v", v, err)
	}
	return v[0], nil
}

// ---- processes ----

func descendants(pid int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		pp, _ := strconv.Atoi(f[1])
		kids[pp] = append(kids[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// peakRSS sums VmHWM (peak resident set) in MB over pids.
func peakRSS(pids []int) float64 {
	var kb float64
	for _, p := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
				v, _ := strconv.ParseFloat(f[1], 64)
				kb += v
			}
		}
	}
	return kb / 1024
}

// smaps sums Rss and Pss (smaps_rollup) of one process, in kB.
func smaps(pid int) (rss, pss float64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func hostIP() string {
	c, err := net.Dial("udp", "192.0.2.255:9")
	if err != nil {
		die("no host address: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// ---- scenarios ----

type ingress struct {
	name, note string
	iperfPort  int
	echoAddr   string
	// procs are the mechanism's own processes, whose memory is its cost:
	// not the servers inside, not the node's command.
	procs func() []proc
	stop  func()
}

// proc is one process of a mechanism and the role it plays.
type proc struct {
	pid  int
	role string
}

// stopTree asks c to stop with SIGTERM and kills what is left of its tree
// after grace. Best effort: it is teardown.
func stopTree(c *exec.Cmd, grace time.Duration) {
	pids := descendants(c.Process.Pid)
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL) // gone already: ESRCH
	}
	<-done
}

// startServers starts iperf3 and the echo server inside the network
// namespace of pid, as a user would (nsenter into the node's user and
// network namespaces), and waits until both listen there. The same
// servers, in processes of their own, serve every row.
func startServers(pid int) (func(), error) {
	enter := []string{"-t", fmt.Sprint(pid), "-U", "-n", "--"}
	var kids []*exec.Cmd
	stop := func() {
		for _, k := range kids {
			_ = k.Process.Kill() // teardown
			_ = k.Wait()
		}
	}
	for _, args := range [][]string{
		{"iperf3", "-s", "-p", fmt.Sprint(iperfPort)},
		{selfPath()},
	} {
		c := exec.Command("nsenter", append(enter, args...)...)
		c.Env = append(os.Environ(), modeEnv+"=echo", fmt.Sprintf("NETBENCH_ECHO=0.0.0.0:%d", echoPort))
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		kids = append(kids, c)
	}
	for _, k := range kids {
		if err := waitNSListen(k.Process.Pid); err != nil {
			stop()
			return nil, err
		}
	}
	return stop, nil
}

// waitNSListen waits until process pid (a server in some namespace) has a
// listening TCP socket, as its own /proc/PID/net/tcp shows.
func waitNSListen(pid int) error {
	for i := 0; i < 500; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
		if err != nil {
			return fmt.Errorf("server %d: %v", pid, err)
		}
		// iperf3 listens on [::], the echo server on 0.0.0.0.
		b6, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp6", pid))
		for _, l := range strings.Split(string(b)+string(b6), "\n") {
			if f := strings.Fields(l); len(f) > 3 && f[3] == "0A" {
				if socketOf(pid, f[9]) {
					return nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("server %d (%s) does not listen", pid, comm(pid))
}

// socketOf: whether pid holds the socket with this inode.
func socketOf(pid int, inode string) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

// waitFor polls f until it is true, up to d.
func waitFor(d time.Duration, f func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
	}
	return false
}

// commandPID is the pid of the node's command (a `sleep`) under top.
func commandPID(top int) int {
	for _, p := range descendants(top) {
		if comm(p) == "sleep" {
			return p
		}
	}
	return 0
}

func setupIngress(name, tmp string) (*ingress, error) {
	hp1, hp2 := freePort(), freePort()
	ig := &ingress{name: name, iperfPort: hp1, echoAddr: fmt.Sprintf("127.0.0.1:%d", hp2), procs: func() []proc { return nil }}
	publish := []string{fmt.Sprintf("127.0.0.1:%d:%d/tcp", hp1, iperfPort), fmt.Sprintf("127.0.0.1:%d:%d/tcp", hp2, echoPort)}
	var top *exec.Cmd
	roles := map[string]string{}
	switch {
	case name == "host loopback":
		c := exec.Command("iperf3", "-s", "-B", "127.0.0.1", "-p", fmt.Sprint(hp1))
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			return nil, err
		}
		// The echo server is a process of its own, as it is behind every
		// forwarder: a same-process server would skip the cross-process
		// wake-up that dominates a round trip on this VM.
		e := selfNS("echo", 0, "NETBENCH_ECHO="+ig.echoAddr)
		if err := e.Start(); err != nil {
			return nil, err
		}
		waitListen(fmt.Sprintf("127.0.0.1:%d", hp1))
		waitListen(ig.echoAddr)
		ig.note = "no forwarding, iperf3 and echo servers on the host: the limit"
		ig.stop = func() { _ = c.Process.Kill(); _ = c.Wait(); _ = e.Process.Kill(); _ = e.Wait() }
		return ig, nil
	case strings.HasPrefix(name, "usernode"):
		// Each usernode row runs its own copy of the binary: rows of one
		// file would share its page cache, and each one's PSS would be
		// halved.
		// Short: the sandbox's port socket goes under dir/run/usernode/
		// NAME/, and a unix socket's path has at most 107 bytes.
		unRows++
		dir := filepath.Join(tmp, fmt.Sprintf("un%d", unRows))
		for _, d := range []string{dir, dir + "/run", dir + "/data"} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
		bin := filepath.Join(dir, "usernode")
		if err := copyFile(*unBin, bin); err != nil {
			return nil, err
		}
		coldCache(bin)
		args := []string{"sandbox", "run", "--name", filepath.Base(dir), "--net=slirp4netns"}
		args = append(args, strings.Fields(strings.TrimPrefix(name, "usernode"))...)
		for _, p := range publish {
			args = append(args, "-p", p)
		}
		top = exec.Command(bin, append(args, "--", "sleep", "infinity")...)
		top.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir+"/run", "XDG_DATA_HOME="+dir+"/data")
		var errb lockedBuffer
		top.Stderr = &errb
		top.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := top.Start(); err != nil {
			return nil, err
		}
		// Generous, for a loaded machine; a sandbox that fails to start
		// exits and is reported at once.
		if !waitFor(60*time.Second, func() bool {
			return strings.Contains(errb.String(), "usernode: ready") || exited(top.Process.Pid)
		}) || !strings.Contains(errb.String(), "usernode: ready") {
			stopTree(top, 5*time.Second)
			return nil, fmt.Errorf("%s: not ready: %s", name, errb.String())
		}
		roles = map[string]string{"usernode-sandbox-agent": "agent", "usernode-sandbox-init": "init"}
		ig.note = "`usernode sandbox run --net=slirp4netns -p ...` (" + strings.TrimSpace(strings.TrimPrefix(name, "usernode")) + ")"
		if name == "usernode" {
			ig.note = "`usernode sandbox run --net=slirp4netns -p ...`, the user's defaults (busy poll " + busyPollDefault(bin) + ")"
		}
	case strings.HasPrefix(name, "rootlesskit"):
		rk, ctl, what := "rootlesskit", "rootlessctl", "Debian rootlesskit"
		if strings.Contains(name, "v2") {
			if *rk2 == "" {
				return nil, fmt.Errorf("no -rootlesskit2 directory given")
			}
			rk, ctl, what = filepath.Join(*rk2, "rootlesskit"), filepath.Join(*rk2, "rootlessctl"), "RootlessKit built from the Go module proxy,"
		}
		if p, err := exec.LookPath(rk); err == nil {
			coldCache(p)
		}
		state := filepath.Join(tmp, "rk-"+strings.ReplaceAll(name, " ", "-"))
		top = exec.Command(rk, "--state-dir="+state, "--net=slirp4netns", "--mtu=65520", "--disable-host-loopback",
			"--port-driver=builtin", "sleep", "infinity")
		top.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := top.Start(); err != nil {
			return nil, err
		}
		var out []byte
		if !waitFor(20*time.Second, func() bool {
			var err error
			out, err = exec.Command(ctl, append([]string{"--socket", filepath.Join(state, "api.sock"), "add-ports"}, publish...)...).CombinedOutput()
			return err == nil
		}) {
			stopTree(top, 5*time.Second)
			return nil, fmt.Errorf("rootlessctl: %s", out)
		}
		roles = map[string]string{"exe": "child"}
		ig.note = what + " " + rkVersion(rk) + ", --net=slirp4netns --mtu=65520 --port-driver=builtin"
	default:
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	var nsPID int
	waitFor(10*time.Second, func() bool { nsPID = commandPID(top.Process.Pid); return nsPID > 0 })
	if nsPID == 0 {
		stopTree(top, 5*time.Second)
		return nil, fmt.Errorf("%s: no node command", name)
	}
	stopServers, err := startServers(nsPID)
	if err != nil {
		stopTree(top, 5*time.Second)
		return nil, err
	}
	ig.stop = func() { stopServers(); stopTree(top, 10*time.Second) }
	ig.procs = func() []proc {
		var ps []proc
		for i, p := range descendants(top.Process.Pid) {
			role := roles[comm(p)]
			if a := argv0(p); roles[a] != "" {
				role = roles[a]
			}
			switch {
			case i == 0 && strings.HasPrefix(name, "usernode"):
				role = "supervisor"
			case i == 0:
				role = "parent"
			case comm(p) == "slirp4netns":
				role = "slirp4netns"
			}
			if role != "" {
				ps = append(ps, proc{p, role})
			}
		}
		return ps
	}
	return ig, nil
}

// lockedBuffer collects a command's output while another goroutine reads
// it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// exited: pid has ended (a zombie until its parent waits) or is gone.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || f[0] == "Z"
}

// unRows numbers the usernode rows, for their directories' names.
var unRows int

func argv0(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	a, _, _ := strings.Cut(string(b), "\x00")
	return a
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// coldCache writes a binary's cached pages back and drops them from the
// page cache, so that it starts as after a boot: read from disk, in the
// folios readahead makes. How a binary got into the page cache decides
// what mapping it costs on this kernel (6.18, ext4 with large folios):
// measured, a copy written in one go sits in 2 MiB folios, a process
// touching a page of one maps all of it, and usernode's three processes
// showed 13.7-17.4 MB RSS each against 4.6-6.2 MB when run from the same
// binary read from disk. Best effort: a file that cannot be dropped is
// measured as it is.
func coldCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = f.Sync() // write-back is what lets the pages go
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// busyPollDefault is the busy poll that `sandbox run` uses unless told,
// as its own help says.
func busyPollDefault(bin string) string {
	out, _ := exec.Command(bin, "sandbox", "run", "--help").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "--port-busy-poll") {
			if _, d, ok := strings.Cut(l, "(default "); ok {
				return strings.TrimSuffix(strings.TrimSpace(d), ")")
			}
			return "0"
		}
	}
	return "?"
}

func selfPath() string {
	p, _ := os.Executable()
	return p
}

func rkVersion(rk string) string {
	out, _ := exec.Command(rk, "--version").Output()
	f := strings.Fields(string(out))
	if len(f) > 0 {
		return f[len(f)-1]
	}
	return "?"
}

type egress struct {
	name, note string
	prefix     []string
	helper     int
	stop       func()
}

func setupEgress(name, tmp string) (*egress, error) {
	switch name {
	case "host (no namespace)":
		return &egress{name: name, note: "client on the host: the limit", stop: func() {}}, nil
	case "root veth (bound)":
		if rootReq == nil {
			return nil, fmt.Errorf("needs root")
		}
		return &egress{name: name, note: "veth pair made by root, MTU 65520", prefix: []string{"@root"}, stop: func() {}}, nil
	}
	drv := name
	h := selfNS("holder", syscall.CLONE_NEWUSER|syscall.CLONE_NEWNET, "NETBENCH_DRIVER="+drv)
	in, _ := h.StdinPipe()
	out, _ := h.StdoutPipe()
	if err := h.Start(); err != nil {
		return nil, err
	}
	pid := h.Process.Pid
	p, _, err := network.New(drv)
	if err != nil {
		return nil, err
	}
	state := filepath.Join(tmp, "eg-"+drv)
	if err := os.MkdirAll(state, 0o700); err != nil {
		_ = h.Process.Kill()
		_ = h.Wait()
		return nil, err
	}
	mtu := 0
	if drv == "lxc-user-nic" {
		mtu = 1500
	}
	cfg, err := p.Start(context.Background(), network.NS{PID: pid, UserNS: fmt.Sprintf("/proc/%d/ns/user", pid),
		NetNS: fmt.Sprintf("/proc/%d/ns/net", pid), StateDir: state}, network.Options{MTU: mtu})
	if err != nil {
		_ = h.Process.Kill()
		_ = h.Wait()
		return nil, err
	}
	b, _ := json.Marshal(cfg)
	// A failed write shows as the holder never saying "ready", below.
	_, _ = in.Write(append(b, '\n'))
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = p.Close()
		_ = h.Process.Kill()
		_ = h.Wait()
		return nil, fmt.Errorf("%s: namespace not ready: %q %v", drv, line, err)
	}
	e := &egress{name: drv, prefix: []string{"nsenter", "--preserve-credentials", "-U", "-n", "-t", fmt.Sprint(pid)},
		note: fmt.Sprintf("MTU %d", cfg.MTU)}
	if s := cfg.Extra["pid"]; s != "" {
		e.helper, _ = strconv.Atoi(s)
	}
	if drv == "lxc-user-nic" {
		e.note += " (lxcbr0's), setuid helper exits after setup"
	}
	e.stop = func() { _ = in.Close(); _ = p.Close(); _ = h.Process.Kill(); _ = h.Wait() }
	return e, nil
}
