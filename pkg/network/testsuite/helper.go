package testsuite

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/network"
)

// The test binary re-executes itself in these modes: "parent" as the
// non-root user in the host's namespaces (the supervisor's role), and
// "child" inside a new user+network namespace (the node's role).
const modeEnv = "USERNODE_NETTEST_MODE"
const argsEnv = "USERNODE_NETTEST_ARGS"

type args struct {
	Driver    string
	Allow     bool
	Subnet    netip.Prefix // the node's subnet; zero: the driver's default
	HostTCP   string       // ip:port of a server on the host's non-loopback address
	LoopPort  int          // port of a server on the host's 127.0.0.1
	StateDir  string
	TunBlock  string // bind-mounted over /dev/net/tun when set
	NoPath    bool   // run the driver with an empty PATH
	HostDNSOK bool
	// Restart kills the helper after the first round, waits for the
	// driver's Waiter to say so, and starts a fresh Parent against the
	// same namespace; the child configures and probes again.
	Restart bool
}

// Result is what the helper reports back to the test.
type Result struct {
	StartErr     string
	ConfigureErr string
	Config       *network.Config
	Interface    string // "name addr" of the first non-loopback interface with IPv4
	DefaultRoute string
	DNS          string // "rcode N" or the error
	HostTCP      string // what the host server sent, or the error
	HostLoopback string // "" when connecting failed (the error is in HostLoopbackErr)
	HostLoopErr  string
	OwnLoopback  string
	Leftover     []string // processes the parent started that outlived Close
	// Waited is what the driver's Waiter sent after the kill (Restart),
	// AfterRestart the second round's result.
	Waited       string
	AfterRestart *Result
}

// Main runs the helper modes; call it from TestMain.
func Main(run func() int) {
	switch os.Getenv(modeEnv) {
	case "":
		os.Exit(run())
	case "parent":
		os.Exit(parentMode())
	case "child":
		childMode()
		os.Exit(0)
	case "tunblock":
		os.Exit(tunblockMode())
	}
	fmt.Fprintln(os.Stderr, "unknown", modeEnv)
	os.Exit(2)
}

func getArgs() args {
	var a args
	if err := json.Unmarshal([]byte(os.Getenv(argsEnv)), &a); err != nil {
		panic(err)
	}
	return a
}

// emit hands r to the test on stdout. If the write fails the test reads
// no result and fails saying so; there is nowhere else to report it.
func emit(r Result) {
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// selfNS starts the test binary in mode with new namespaces, mapping only
// the caller's own uid/gid to 0: no newuidmap needed.
func selfNS(mode string, flags uintptr) *exec.Cmd {
	c := exec.Command("/proc/self/exe")
	c.Env = append(os.Environ(), modeEnv+"="+mode)
	c.Stderr = os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	return c
}

// tunblockMode makes /dev/net/tun unopenable for everything it starts,
// the way a 0600 root-owned device node is, then acts as the parent.
func tunblockMode() int {
	a := getArgs()
	if err := unix.Mount(a.TunBlock, "/dev/net/tun", "", unix.MS_BIND, ""); err != nil {
		emit(Result{StartErr: "test setup: bind mount over /dev/net/tun: " + err.Error()})
		return 0
	}
	return parentMode()
}

func parentMode() int {
	a := getArgs()
	if a.TunBlock != "" && os.Getenv(modeEnv) == "parent" {
		c := selfNS("tunblock", syscall.CLONE_NEWUSER|syscall.CLONE_NEWNS)
		c.Stdout = os.Stdout
		if err := c.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "tunblock:", err)
			return 1
		}
		return 0
	}
	child := selfNS("child", syscall.CLONE_NEWUSER|syscall.CLONE_NEWNET)
	in, _ := child.StdinPipe()
	out, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		emit(Result{StartErr: "test setup: start child: " + err.Error()})
		return 0
	}
	pid := child.Process.Pid
	p, _, err := network.New(a.Driver)
	if err != nil {
		emit(Result{StartErr: err.Error()})
		return 0
	}
	if a.NoPath {
		if err := os.Setenv("PATH", ""); err != nil {
			emit(Result{StartErr: "test setup: empty PATH: " + err.Error()})
			return 0
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := p.Start(ctx, network.NS{PID: pid, UserNS: fmt.Sprintf("/proc/%d/ns/user", pid),
		NetNS: fmt.Sprintf("/proc/%d/ns/net", pid), StateDir: a.StateDir}, network.Options{AllowHostLoopback: a.Allow, Subnet: a.Subnet})
	var r Result
	if err != nil {
		r.StartErr = err.Error()
		_ = in.Close() // EOF tells the child Start failed
	} else {
		dec := json.NewDecoder(out)
		// A failed write shows as the child's missing answer, below.
		_ = json.NewEncoder(in).Encode(cfg)
		if !a.Restart {
			_ = in.Close()
		}
		if err := dec.Decode(&r); err != nil {
			r.ConfigureErr = "test: child said nothing: " + err.Error()
		}
		r.Config = cfg
		if a.Restart {
			p = restart(ctx, &r, p, a, network.NS{PID: pid, UserNS: fmt.Sprintf("/proc/%d/ns/user", pid),
				NetNS: fmt.Sprintf("/proc/%d/ns/net", pid), StateDir: a.StateDir}, in, dec)
		}
	}
	// What the test checks of Close is Leftover, below: the helpers gone.
	_ = p.Close()
	// Teardown: the child is killed, so Wait's error is that signal.
	_ = child.Process.Kill()
	_ = child.Wait()
	r.Leftover = children(os.Getpid())
	emit(r)
	return 0
}

// restart kills p's helper, waits for p's Waiter, starts a fresh Parent
// against ns and has the child configure and probe again; it returns the
// Parent to close.
func restart(ctx context.Context, r *Result, p network.Parent, a args, ns network.NS, in io.WriteCloser, dec *json.Decoder) network.Parent {
	defer in.Close()
	w, ok := p.(network.Waiter)
	if !ok {
		r.Waited = "the driver's Parent is no network.Waiter"
		return p
	}
	exited := w.Wait()
	pid, err := strconv.Atoi(r.Config.Extra["pid"])
	if err != nil {
		r.Waited = "no helper pid in the config: " + err.Error()
		return p
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.Waited = "kill: " + err.Error()
		return p
	}
	select {
	case err := <-exited:
		r.Waited = fmt.Sprint(err)
	case <-time.After(5 * time.Second):
		r.Waited = "Wait sent nothing within 5s of the kill"
		return p
	}
	_ = p.Close() // reaps what is left of the dead helper
	p2, _, err := network.New(a.Driver)
	if err != nil {
		r.AfterRestart = &Result{StartErr: err.Error()}
		return p
	}
	cfg, err := p2.Start(ctx, ns, network.Options{AllowHostLoopback: a.Allow, Subnet: a.Subnet})
	if err != nil {
		r.AfterRestart = &Result{StartErr: err.Error()}
		return p2
	}
	var r2 Result
	_ = json.NewEncoder(in).Encode(cfg) // as in the first round
	if err := dec.Decode(&r2); err != nil {
		r2.ConfigureErr = "test: child said nothing after the restart: " + err.Error()
	}
	r2.Config = cfg
	r.AfterRestart = &r2
	return p2
}

// children lists the processes whose parent is pid.
func children(pid int) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			left = append(left, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	return left
}

// childMode configures the namespace's side and probes it; it reports
// every failure in its Result, so its exit status is always 0.
func childMode() {
	a := getArgs()
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	// One round per config the parent sends: two when it restarts the
	// helper.
	for {
		var cfg network.Config
		if err := dec.Decode(&cfg); err != nil {
			return // the parent's Start failed, or it is done
		}
		childRound(a, cfg)
	}
}

// childRound configures the namespace's side for cfg and probes it.
func childRound(a args, cfg network.Config) {
	var r Result
	_, c, err := network.New(a.Driver)
	if err == nil {
		err = c.Configure(&cfg)
	}
	if err != nil {
		r.ConfigureErr = err.Error()
		emit(r)
		return
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Attrs().Name == "lo" || l.Attrs().Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) > 0 {
			r.Interface = l.Attrs().Name + " " + addrs[0].IPNet.String()
			break
		}
	}
	routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.String() == "0.0.0.0/0" {
			r.DefaultRoute = "via " + rt.Gw.String()
		}
	}
	if len(cfg.DNS) > 0 && a.HostDNSOK {
		r.DNS = dnsQuery(netip.AddrPortFrom(cfg.DNS[0], 53).String())
	}
	r.HostTCP = readLine(a.HostTCP, 5*time.Second)
	if cfg.Gateway.IsValid() {
		r.HostLoopback = readLine(netip.AddrPortFrom(cfg.Gateway, uint16(a.LoopPort)).String(), 2*time.Second)
	}
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		go func() {
			if c, err := l.Accept(); err == nil {
				_, _ = c.Write([]byte("own\n")) // readLine reports what arrived
				c.Close()
			}
		}()
		r.OwnLoopback = readLine(l.Addr().String(), 2*time.Second)
	} else {
		r.OwnLoopback = err.Error()
	}
	emit(r)
}

func readLine(addr string, timeout time.Duration) string {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(s)
}

// dnsQuery asks server for an A record of a name under .invalid (RFC 6761:
// never exists) and returns "rcode N" for any well-formed answer. That
// proves the driver forwards DNS to the host's resolver without depending
// on any real name existing.
func dnsQuery(server string) string {
	const id = 0x5a17
	q := []byte{id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range []string{"usernode-test", "invalid"} {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	q = append(q, 0, 0, 1, 0, 1)
	c, err := net.Dial("udp", server)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		_, _ = c.Write(q) // a failed send is a lost query: the next try resends
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return "error: " + err.Error()
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id && buf[2]&0x80 != 0 {
			return fmt.Sprintf("rcode %d", buf[3]&0xf)
		}
	}
	return "error: no answer"
}
