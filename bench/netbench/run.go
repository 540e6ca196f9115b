package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/usernode/usernode/bench/internal/host"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port/builtin"
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

// rtt: median of 1-byte ping-pongs on one connection, in microseconds.
func rtt(addr string) (float64, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetNoDelay(true) // Go's default already; kept explicit
	b := []byte{1}
	var d []float64
	for i := 0; i < 20000; i++ {
		t0 := time.Now()
		if _, err := conn.Write(b); err != nil {
			return 0, err
		}
		if _, err := conn.Read(b); err != nil {
			return 0, err
		}
		if i >= 1000 {
			d = append(d, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	return host.Median(d), nil
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
	helpers    func() []int // processes whose memory is the forwarder's cost
	stop       func()
}

func startLine(c *exec.Cmd) (func(), error) {
	in, _ := c.StdinPipe()
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = c.Process.Kill()
		_ = c.Wait() // the kill's signal
		return nil, fmt.Errorf("%s: not ready (%q, %v)", c.Path, line, err)
	}
	// Teardown, from here on best effort: EOF on stdin asks the
	// process to exit, a kill makes sure of it, and how it exited no
	// longer matters.
	return func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			for _, p := range descendants(c.Process.Pid) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			<-done
		}
	}, nil
}

func setupIngress(name string, tmp string) (*ingress, error) {
	hp1, hp2 := freePort(), freePort()
	ig := &ingress{name: name, iperfPort: hp1, echoAddr: fmt.Sprintf("127.0.0.1:%d", hp2), helpers: func() []int { return nil }}
	switch name {
	case "host loopback":
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
	case "usernode builtin", "usernode builtin (no busy poll)", "socat":
		env := []string{fmt.Sprintf("NETBENCH_PORTS=%d,%d", hp1, hp2)}
		if name == "usernode builtin (no busy poll)" {
			env = append(env, "NETBENCH_NO_BUSY_POLL=1")
		}
		if name == "socat" {
			dir := filepath.Join(tmp, "socat")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			env = append(env, "NETBENCH_SOCAT_DIR="+dir)
			ig.note = "socat TCP-LISTEN -> unix socket -> socat in the namespace"
		} else {
			ig.note = "agent in userns+host netns, dial sockets made in the node netns, epoll relay loops"
			if name == "usernode builtin" {
				ig.note += fmt.Sprintf(", busy poll %v after small messages (the default)", builtin.DefaultBusyPoll)
			}
		}
		c := selfNS("agent", syscall.CLONE_NEWUSER, env...)
		stop, err := startLine(c)
		if err != nil {
			return nil, err
		}
		ig.stop = stop
		ig.helpers = func() []int {
			if name == "socat" {
				var s []int
				for _, p := range descendants(c.Process.Pid) {
					if comm(p) == "socat" {
						s = append(s, p)
					}
				}
				return s
			}
			return []int{c.Process.Pid}
		}
	case "rootlesskit builtin", "rootlesskit slirp4netns", "rootlesskit v2 builtin":
		drv := name[strings.LastIndexByte(name, ' ')+1:]
		rk, ctl, what := "rootlesskit", "rootlessctl", "Debian rootlesskit"
		if strings.Contains(name, "v2") {
			if *rk2 == "" {
				return nil, fmt.Errorf("no -rootlesskit2 directory given")
			}
			rk, ctl, what = filepath.Join(*rk2, "rootlesskit"), filepath.Join(*rk2, "rootlessctl"), "RootlessKit built from the Go module proxy,"
		}
		state := filepath.Join(tmp, "rk-"+strings.ReplaceAll(name, " ", "-"))
		c := exec.Command(rk, "--state-dir="+state, "--net=slirp4netns", "--mtu=65520", "--disable-host-loopback",
			"--port-driver="+drv, selfPath())
		c.Env = append(os.Environ(), modeEnv+"=holder")
		c.Stderr = os.Stderr
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stop, err := startLine(c)
		if err != nil {
			return nil, err
		}
		ig.stop = stop
		out, err := exec.Command(ctl, "--socket", filepath.Join(state, "api.sock"), "add-ports",
			fmt.Sprintf("127.0.0.1:%d:%d/tcp", hp1, iperfPort), fmt.Sprintf("127.0.0.1:%d:%d/tcp", hp2, echoPort)).CombinedOutput()
		if err != nil {
			stop()
			return nil, fmt.Errorf("rootlessctl: %v: %s", err, out)
		}
		waitListen(ig.echoAddr)
		ig.note = what + " " + rkVersion(rk) + ", --net=slirp4netns --mtu=65520 --port-driver=" + drv
		ig.helpers = func() []int {
			var s []int
			for _, p := range descendants(c.Process.Pid) {
				if n := comm(p); n == "rootlesskit" || n == "exe" || n == "slirp4netns" {
					s = append(s, p)
				}
			}
			return s
		}
	}
	return ig, nil
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
