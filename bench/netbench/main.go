// Command netbench compares usernode's networking with its peers on this
// machine: port forwarding from the host into a node's namespace (host
// loopback as the limit, RootlessKit 1.1's and 2.x's builtin port drivers,
// and usernode as a user starts it: `usernode sandbox run -p ...` with the
// user's defaults) and egress from the namespace to the host (slirp4netns,
// pasta, lxc-user-nic, and a veth pair made by root as the bound).
// Everything rootless runs as the non-root test user; run it as root
// (`make bench-net`) so that it can drop to that user, make lxcbr0 and the
// root veth pair.
//
// Each round runs every scenario once per metric, interleaved, so that
// drift on the machine hits all of them alike; the table shows medians.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/usernode/usernode/pkg/network"
	_ "github.com/usernode/usernode/pkg/network/drivers"
)

const (
	modeEnv    = "NETBENCH_MODE"
	iperfPort  = 5201
	echoPort   = 7777
	egressPort = 5299
)

var (
	rounds  = flag.Int("rounds", 3, "interleaved rounds")
	secs    = flag.Int("t", 2, "seconds per iperf3 and connection-rate run")
	user    = flag.String("user", "usernode-test", "non-root account for the rootless runs (when run as root)")
	only    = flag.String("only", "", "comma-separated port-forwarding scenarios to run (besides host loopback); no egress")
	verbose = flag.Bool("v", false, "print each measurement")
	rk2     = flag.String("rootlesskit2", "", "directory with RootlessKit v2's rootlesskit and rootlessctl (make bench-net builds them); empty: that row is skipped")
	unBin   = flag.String("usernode", "bin/usernode", "the usernode binary to measure (make build)")
	cc      = flag.String("cc", "cc", "C compiler for the second client (bench/netbench/pingpong)")
	alt     = flag.String("alt", "--port-busy-poll=50us", "flags of a second usernode row (empty: none)")
)

func main() {
	flag.Parse()
	switch os.Getenv(modeEnv) {
	case "holder":
		holder()
	case "runner":
		runner()
	case "echo":
		echoServer(os.Getenv("NETBENCH_ECHO"))
	case "":
		if os.Geteuid() != 0 {
			runner()
			return
		}
		rootMain()
	}
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "netbench: "+format+"\n", a...)
	os.Exit(1)
}

// ---- inside the namespace ----

// holder is an egress scenario's namespace: lo up, the driver's Child
// (NETBENCH_DRIVER names it; its Config comes on stdin), iperf3 and echo
// servers; it lives until stdin closes.
func holder() {
	in := bufio.NewReader(os.Stdin)
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			die("holder: lo up: %v", err)
		}
	}
	if d := os.Getenv("NETBENCH_DRIVER"); d != "" {
		var cfg network.Config
		line, _ := in.ReadBytes('\n')
		if err := json.Unmarshal(line, &cfg); err != nil {
			die("holder: config: %v", err)
		}
		_, c, _ := network.New(d)
		if err := c.Configure(&cfg); err != nil {
			die("holder: %v", err)
		}
	}
	var kids []*exec.Cmd
	start := func(name string, args ...string) {
		c := exec.Command(name, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			die("holder: %s: %v", name, err)
		}
		kids = append(kids, c)
	}
	start("iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	go echoServer(fmt.Sprintf("0.0.0.0:%d", echoPort))
	waitListen(fmt.Sprintf("127.0.0.1:%d", iperfPort))
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, in) // returns when the runner closes stdin
	for _, k := range kids {
		_ = k.Process.Kill() // teardown; one already gone is fine
	}
}

func waitListen(addr string) {
	for i := 0; i < 300; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoServer echoes each connection; with 1-byte messages it serves both
// the connection-rate and the round-trip tests.
func echoServer(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		die("echo: %v", err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.(*net.TCPConn).SetNoDelay(true) // Go's default already; kept explicit
			b := make([]byte, 512)
			for {
				n, err := c.Read(b)
				if err != nil {
					return
				}
				if _, err := c.Write(b[:n]); err != nil {
					return
				}
			}
		}()
	}
}

// selfNS starts this binary in mode in new namespaces mapping only the
// caller to uid 0 (no newuidmap needed).
func selfNS(mode string, flags uintptr, env ...string) *exec.Cmd {
	c := exec.Command("/proc/self/exe")
	c.Env = append(append(os.Environ(), modeEnv+"="+mode), env...)
	c.Stderr = os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	if flags&syscall.CLONE_NEWUSER != 0 {
		c.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		c.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	return c
}
