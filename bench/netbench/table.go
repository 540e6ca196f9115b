package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/procenv"

	"github.com/usernode/usernode/bench/internal/host"
)

type metric struct {
	name, unit string
	higher     bool // higher is better
}

// ingressMetrics: iperf3's four, then each client's connection rates and
// round trip. The first client is Go (this process), the second C
// (pingpong/pingpong.c): a Go client's threads spin a while before they
// sleep, which on this VM keeps a vCPU awake that a plain blocking client
// leaves to go idle, and the two see different forwarders at their best.
var ingressMetrics = []metric{
	{"iperf3 -P1 host->ns", "Gbit/s", true},
	{"iperf3 -P1 ns->host (-R)", "Gbit/s", true},
	{"iperf3 -P4 host->ns", "Gbit/s", true},
	{"iperf3 -P4 ns->host (-R)", "Gbit/s", true},
	{"connections/s c=1", "conn/s", true},
	{"connections/s c=8", "conn/s", true},
	{"1-byte RTT (median)", "µs", false},
	{"connections/s c=1", "conn/s", true},
	{"connections/s c=8", "conn/s", true},
	{"1-byte RTT (median)", "µs", false},
	// Measured with the RTTs above (6 and 9): on this 2-vCPU VM a round
	// trip either stays on one vCPU or wakes an idle one, and a run's
	// median lands on whichever it mostly did; the 10th percentile shows
	// the first.
	{"1-byte RTT (10th percentile)", "µs", false},
	{"1-byte RTT (10th percentile)", "µs", false},
}

// clients: the metrics of each client's table.
var clients = []struct {
	name, note string
	metrics    []int
}{
	{"Go client", "this process: net.Dial, one goroutine per connection loop (Go 1.26 runtime)", []int{4, 5, 6, 10}},
	{"C client", "pingpong/pingpong.c built with the system's cc: blocking sockets, one thread per connection loop", []int{7, 8, 9, 11}},
}

var egressMetrics = []metric{
	{"iperf3 -P1 ns->host", "Gbit/s", true},
	{"iperf3 -P1 host->ns (-R)", "Gbit/s", true},
}

func runner() {
	if os.Getenv("NETBENCH_ROOTFD") != "" {
		w := os.NewFile(3, "req")
		r := bufio.NewReader(os.NewFile(4, "resp"))
		rootReq = func(args []string) ([]byte, error) {
			b, _ := json.Marshal(args)
			if _, err := w.Write(append(b, '\n')); err != nil {
				return nil, err
			}
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, err
			}
			var resp struct {
				Out []byte
				Err string
			}
			if err := json.Unmarshal(line, &resp); err != nil {
				return nil, err
			}
			if resp.Err != "" {
				return resp.Out, fmt.Errorf("%s", resp.Err)
			}
			return resp.Out, nil
		}
	}
	tmp, err := os.MkdirTemp("", "netbench-")
	if err != nil {
		die("%v", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort; it is under /tmp
	start := time.Now()

	if err := buildCClient(tmp); err != nil {
		die("the C client: %v", err)
	}
	var igs []*ingress
	names := []string{"host loopback", "rootlesskit builtin", "rootlesskit v2 builtin", "usernode"}
	if *alt != "" {
		names = append(names, "usernode "+*alt)
	}
	for _, n := range names {
		if *only != "" && n != "host loopback" && !slices.Contains(strings.Split(*only, ","), n) {
			continue
		}
		ig, err := setupIngress(n, tmp)
		if err != nil {
			fmt.Fprintf(os.Stderr, "netbench: skipping %s: %v\n", n, err)
			continue
		}
		defer ig.stop()
		igs = append(igs, ig)
	}
	hip := hostIP()
	srv := exec.Command("iperf3", "-s", "-B", hip, "-p", fmt.Sprint(egressPort))
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		die("iperf3 server: %v", err)
	}
	defer func() { _ = srv.Process.Kill() }() // teardown
	waitListen(fmt.Sprintf("%s:%d", hip, egressPort))
	var egs []*egress
	for _, n := range []string{"host (no namespace)", "root veth (bound)", "slirp4netns", "pasta", "lxc-user-nic"} {
		if *only != "" {
			continue
		}
		e, err := setupEgress(n, tmp)
		if err != nil {
			fmt.Fprintf(os.Stderr, "netbench: skipping egress %s: %v\n", n, err)
			continue
		}
		defer e.stop()
		egs = append(egs, e)
	}
	vet := func(v float64, err error) float64 {
		if err != nil {
			fmt.Fprintln(os.Stderr, "netbench:", err)
			return 0
		}
		return v
	}
	vet2 := func(v, w float64, err error) (float64, float64) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "netbench:", err)
			return 0, 0
		}
		return v, w
	}
	in := map[string][][]float64{}
	eg := map[string][][]float64{}
	for _, ig := range igs {
		in[ig.name] = make([][]float64, len(ingressMetrics))
	}
	for _, e := range egs {
		eg[e.name] = make([][]float64, len(egressMetrics))
	}
	for r := 0; r < *rounds; r++ {
		for mi := range ingressMetrics {
			for _, ig := range igs {
				var v float64
				switch mi {
				case 0, 1, 2, 3:
					v = vet(iperf(nil, "127.0.0.1", ig.iperfPort, []int{1, 1, 4, 4}[mi], mi%2 == 1))
				case 4, 5:
					v = vet(connRate(ig.echoAddr, []int{1, 8}[mi-4]))
				case 6, 9:
					f := rtt
					if mi == 9 {
						f = cRTT
					}
					var p10 float64
					v, p10 = vet2(f(ig.echoAddr))
					pi := 10 + (mi-6)/3
					in[ig.name][pi] = append(in[ig.name][pi], p10)
				case 7, 8:
					v = vet(cConnRate(ig.echoAddr, []int{1, 8}[mi-7]))
				case 10, 11:
					continue // measured with 6 and 9
				}
				if *verbose {
					fmt.Fprintf(os.Stderr, "round %d %-24s %-26s %.2f\n", r+1, ig.name, ingressMetrics[mi].name, v)
				}
				in[ig.name][mi] = append(in[ig.name][mi], v)
			}
		}
		for mi := range egressMetrics {
			for _, e := range egs {
				v := vet(iperf(e.prefix, hip, egressPort, 1, mi == 1))
				if *verbose {
					fmt.Fprintf(os.Stderr, "round %d %-24s %-26s %.2f\n", r+1, e.name, egressMetrics[mi].name, v)
				}
				eg[e.name][mi] = append(eg[e.name][mi], v)
			}
		}
	}
	// The table is built in memory and written in one go at the end.
	var out strings.Builder
	fmt.Fprintf(&out, "Rootless networking on this machine: %d interleaved rounds, medians; iperf3 and connection-rate runs %d s each.\n", *rounds, *secs)
	fmt.Fprintf(&out, "Kernel %s, %d CPUs. Ratios are against the first row.\n\n", host.Kernel(), host.NumCPU())
	writeIngress(&out, igs, in)
	var base []float64
	fmt.Fprintf(&out, "### Egress: the namespace -> an iperf3 server on the host's %s\n\n", hip)
	fmt.Fprintln(&out, "| | "+egressMetrics[0].name+" (Gbit/s) | "+egressMetrics[1].name+" (Gbit/s) | peak RSS of the helper (MB) |")
	fmt.Fprintln(&out, "|---|---|---|---|")
	for i, e := range egs {
		row := "| " + e.name + " | "
		for mi, m := range egressMetrics {
			v := host.Median(eg[e.name][mi])
			if i == 0 {
				base = append(base, v)
			}
			row += cell(v, base[mi], m)
		}
		if e.helper > 0 {
			row += fmt.Sprintf("%.1f |", peakRSS([]int{e.helper}))
		} else {
			row += "– |"
		}
		fmt.Fprintln(&out, row)
	}
	fmt.Fprintln(&out)
	for _, e := range egs {
		fmt.Fprintf(&out, "- %s: %s\n", e.name, e.note)
	}
	fmt.Fprintf(&out, "\nTotal time %s.\n", time.Since(start).Round(time.Second))
	if _, err := os.Stdout.WriteString(out.String()); err != nil {
		die("%v", err)
	}
}

func cell(v, base float64, m metric) string {
	f := "%.2f"
	switch m.unit {
	case "conn/s":
		f = "%.0f"
	case "µs":
		f = "%.1f"
	}
	s := fmt.Sprintf(f, v)
	if base > 0 && v > 0 {
		s += fmt.Sprintf(" (%.2f×)", v/base)
	}
	return s + " | "
}

// rootMain prepares what only root can (the test user, lxcbr0 and its
// lxc-usernet line, the root veth pair), then runs everything else as the
// user, serving the veth pair's iperf3 runs on request.
func rootMain() {
	sh := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			die("%v: %v: %s", args, err, out)
		}
	}
	// quiet runs clean-up commands whose failure means there was nothing
	// to clean up (the namespace or link left by an earlier run is absent).
	quiet := func(args ...string) { _ = exec.Command(args[0], args[1:]...).Run() }
	if _, err := net.InterfaceByName("lxcbr0"); err != nil {
		sh("ip", "link", "add", "lxcbr0", "type", "bridge")
		sh("ip", "addr", "add", "10.0.3.1/24", "dev", "lxcbr0")
		sh("ip", "link", "set", "lxcbr0", "up")
	}
	line := *user + " veth lxcbr0 10"
	if b, _ := os.ReadFile("/etc/lxc/lxc-usernet"); !strings.Contains(string(b), line) {
		f, err := os.OpenFile("/etc/lxc/lxc-usernet", os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			die("%v", err)
		}
		_, err = fmt.Fprintln(f, line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			die("/etc/lxc/lxc-usernet: %v", err)
		}
	}
	const ns = "netbench-veth"
	quiet("ip", "netns", "del", ns)
	quiet("ip", "link", "del", "nbveth0")
	sh("ip", "netns", "add", ns)
	defer quiet("ip", "netns", "del", ns)
	sh("ip", "link", "add", "nbveth0", "mtu", "65520", "type", "veth", "peer", "name", "nbveth1", "mtu", "65520")
	defer quiet("ip", "link", "del", "nbveth0")
	sh("ip", "link", "set", "nbveth1", "netns", ns)
	sh("ip", "addr", "add", "10.199.0.1/24", "dev", "nbveth0")
	sh("ip", "link", "set", "nbveth0", "up")
	sh("ip", "-n", ns, "addr", "add", "10.199.0.2/24", "dev", "nbveth1")
	sh("ip", "-n", ns, "link", "set", "nbveth1", "up")
	sh("ip", "-n", ns, "link", "set", "lo", "up")
	sh("ip", "-n", ns, "route", "add", "default", "via", "10.199.0.1")

	// A copy of this binary the test user can run (the original may sit
	// in root's home).
	dir, err := os.MkdirTemp("", "netbench-bin-")
	if err != nil {
		die("%v", err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort; it is under /tmp
	if err := os.Chmod(dir, 0o755); err != nil {
		die("%v", err)
	}
	bin := dir + "/netbench"
	b, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		die("%v", err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		die("%v", err)
	}

	// The usernode binary too: the one given may sit where the user
	// cannot read it.
	un := dir + "/usernode"
	if err := copyFile(*unBin, un); err != nil {
		die("-usernode: %v", err)
	}
	args := append([]string{"--reuid=" + *user, "--regid=" + *user, "--init-groups", bin}, os.Args[1:]...)
	args = append(args, "-usernode", un)
	c := exec.Command("setpriv", args...)
	c.Env = []string{"PATH=" + procenv.Path, modeEnv + "=runner", "NETBENCH_ROOTFD=1", "HOME=/tmp", "LANG=C.UTF-8"}
	c.Dir = "/"
	reqR, reqW, _ := os.Pipe()
	respR, respW, _ := os.Pipe()
	c.ExtraFiles = []*os.File{reqW, respR}
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Start(); err != nil {
		die("%v", err)
	}
	// The runner holds its own copies of these pipe ends now.
	_ = reqW.Close()
	_ = respR.Close()
	go func() {
		r := bufio.NewReader(reqR)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var a []string
			if err := json.Unmarshal(line, &a); err != nil {
				die("runner request %q: %v", line, err)
			}
			full := append([]string{"netns", "exec", ns}, a...)
			out, err := exec.Command("ip", full...).Output()
			resp := struct {
				Out []byte
				Err string
			}{Out: out}
			if err != nil {
				resp.Err = err.Error()
			}
			b, _ := json.Marshal(resp)
			if _, err := respW.Write(append(b, '\n')); err != nil {
				return // the runner has gone; c.Wait below reports how
			}
		}
	}()
	err = c.Wait()
	_ = respW.Close() // the runner has exited: nobody reads it
	if err != nil {
		die("runner: %v", err)
	}
}
