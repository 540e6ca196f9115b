package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type bench struct {
	undo       *undoStack
	tag        string // in the namespaces' names: this run's
	work       string // the run's files, under /tmp
	tool       string // this binary, where the accounts and pods can read it
	cp, worker *node
	k          *kube
	vx         [2]netHost // the bound's two namespaces
	server     string     // from the join line
	token, pin string
	scenarios  []*scenario
	res        map[string][][]float64 // scenario name -> metric index -> one value per round
	udpLoss    [][]udpLoss            // metric index -> one per round, the across-hosts row's
	joins      []joinTimes
	info       runInfo
}

// runInfo is what the report says about the machine and the run.
type runInfo struct {
	usernode, kubelet, cc, load string
	podMTU                      string
}

type joinTimes struct {
	returned, ready, pod float64 // seconds from running `usernode join`
}

// scenario is one row: a client (always on host A's side) and the
// address of its server.
type scenario struct {
	name, note string
	server     string
	client     func(ctx context.Context, args ...string) (string, error)
	// udp, if set, reads UDP counters the path's datagrams pass through
	// (delivered, dropped for a full receive buffer).
	udp func(ctx context.Context) (delivered, dropped int64, err error)
}

// udpLoss is what one measurement lost of its datagrams.
type udpLoss struct{ delivered, dropped int64 }

func (l udpLoss) String() string {
	if l.delivered+l.dropped == 0 {
		return "none sent"
	}
	return fmt.Sprintf("%d of %d (%.1f %%)", l.dropped, l.delivered+l.dropped, 100*float64(l.dropped)/float64(l.delivered+l.dropped))
}

type metric struct {
	name, mode, unit string
}

var metrics = []metric{
	{"TCP client→server", "send", "Gbit/s"},
	{"TCP server→client", "recv", "Gbit/s"},
	{"1-byte RTT (median)", "rtt", "µs"},
}

const (
	podClient   = "mnb-a1" // on A's node: the client of every pod row
	podServerA  = "mnb-a2" // on A's node: the one-node row's server
	podServerB  = "mnb-b1" // on B's node, made again each round
	nameOneNode = "pods on one node (host A's)"
	nameAcross  = "pods across hosts (A's node → B's node)"
	nameBound   = "root VXLAN between two namespaces (bound)"
)

func (b *bench) run(ctx context.Context) error {
	if err := preflight(); err != nil {
		return err
	}
	if err := b.prepare(); err != nil {
		return err
	}
	if err := b.network(ctx); err != nil {
		return err
	}
	if err := b.controlPlane(ctx); err != nil {
		return err
	}
	b.res = map[string][][]float64{}
	b.udpLoss = make([][]udpLoss, len(metrics))
	for _, s := range b.scenarios {
		b.res[s.name] = make([][]float64, len(metrics))
	}
	var err error
	for r := 0; r < *rounds && err == nil; r++ {
		err = b.round(ctx, r)
	}
	if err != nil && len(b.joins) == 0 {
		return err
	}
	// A round that failed after others completed: what was measured is
	// still reported, and the run still fails.
	b.report(os.Stdout)
	if *hold {
		logf("holding: kubectl with nsenter --net=%s %s --kubeconfig %s; Ctrl-C tears down", b.k.host.path(), b.k.bin, b.k.kubeconfig)
		<-ctx.Done()
	}
	return err
}

// prepare checks the accounts and makes the run's directory: copies of
// usernode and of this binary the accounts can run, and their XDG dirs.
func (b *bench) prepare() error {
	a, err := lookupAccount(*userA)
	if err != nil {
		return err
	}
	bAcct, err := lookupAccount(*userB)
	if err != nil {
		return err
	}
	if a.uid == bAcct.uid {
		return errors.New("-user-a and -user-b are the same account: each host's node needs its own")
	}
	if err := checkIdle(a, bAcct); err != nil {
		return err
	}
	for _, ns := range staleNamespaces() {
		logf("removing namespace %s, left by an earlier run", ns)
		if err := ip("netns", "del", ns); err != nil {
			return err
		}
	}
	// An earlier run killed before its teardown leaves its state (images,
	// etcd) here; with its accounts idle nothing uses it any more.
	stale, _ := filepath.Glob("/tmp/" + nsPrefix + "*") // the pattern is valid
	for _, d := range stale {
		logf("removing %s, left by an earlier run", d)
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	if b.work, err = os.MkdirTemp("/tmp", nsPrefix); err != nil {
		return err
	}
	work := b.work
	b.undo.push("removing "+work, func() error { return os.RemoveAll(work) })
	// Traversable, so each account reaches its own dirs inside.
	if err := os.Chmod(work, 0o711); err != nil {
		return err
	}
	b.tool = filepath.Join(work, "multinode")
	if err := copyFile("/proc/self/exe", b.tool); err != nil {
		return err
	}
	un := filepath.Join(work, "usernode")
	if err := copyFile(*usernodeBin, un); err != nil {
		return err
	}
	for _, acct := range []*account{a, bAcct} {
		if err := acct.makeDirs(work); err != nil {
			return err
		}
	}
	b.undo.push("processes of "+a.name+" and "+bAcct.name, func() error { return sweep(a, bAcct) })
	b.tag = fmt.Sprintf("%x", os.Getpid()&0xffff)
	b.cp = &node{host: netHost{nsPrefix + "hostA-" + b.tag, hostAIP}, acct: a, name: cpName, bin: un}
	b.worker = &node{host: netHost{nsPrefix + "hostB-" + b.tag, hostBIP}, acct: bAcct, name: workerName, bin: un}
	b.vx = [2]netHost{{nsPrefix + "vxA-" + b.tag, hostAIP}, {nsPrefix + "vxB-" + b.tag, hostBIP}}
	b.info.load = loadavg()
	// Only for the report: a binary that cannot say its version fails
	// loudly enough later.
	if out, err := exec.Command(un, "version").Output(); err == nil {
		b.info.usernode = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(filepath.Join(*binDir, "kubelet"), "--version").Output(); err == nil {
		b.info.kubelet = strings.TrimSpace(string(out))
	}
	return nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// network makes the two hosts for the nodes and the bound's two
// namespaces with root's VXLAN, and starts the bound's server.
func (b *bench) network(ctx context.Context) error {
	if err := lan(nsPrefix+"lan-"+b.tag, []netHost{b.cp.host, b.worker.host}, b.undo); err != nil {
		return err
	}
	if err := lan(nsPrefix+"vlan-"+b.tag, b.vx[:], b.undo); err != nil {
		return err
	}
	if err := rootVXLAN(b.vx); err != nil {
		return err
	}
	srv := b.vx[1].in(context.Background(), b.tool, "serve")
	srv.Stderr = os.Stderr
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		return err
	}
	b.undo.push("the bound's server", func() error {
		_ = srv.Process.Kill() // it serves until killed; how it ends does not matter
		_ = srv.Wait()
		return nil
	})
	bound := &scenario{name: nameBound, server: vxlanIP[1],
		note: "vxlan devices made by root (VNI 1, UDP 8472, MTU 1450, remote the peer) in two namespaces on a bridge with MTU 1500; the tool runs as root",
		client: func(ctx context.Context, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(ctx, time.Duration(*secs)*time.Second+time.Minute)
			defer cancel()
			var errb strings.Builder
			c := b.vx[0].in(ctx, b.tool, args...)
			c.Stderr = &errb
			out, err := c.Output()
			if err != nil {
				return string(out), fmt.Errorf("%s in %s: %v: %s", strings.Join(args, " "), b.vx[0].ns, err, strings.TrimSpace(errb.String()))
			}
			return string(out), nil
		}}
	if _, err := bound.client(ctx, "probe", "-addr", bound.server, "-timeout", "30s"); err != nil {
		return fmt.Errorf("the bound's VXLAN does not carry TCP: %w", err)
	}
	if out, err := b.vx[0].in(ctx, "cat", "/proc/sys/net/ipv4/tcp_congestion_control").Output(); err == nil {
		b.info.cc = strings.TrimSpace(string(out))
	}
	b.scenarios = append(b.scenarios, bound)
	return nil
}

// controlPlane starts host A's node, makes the join token, and starts
// the two pods on A's node.
func (b *bench) controlPlane(ctx context.Context) error {
	cp, worker := b.cp, b.worker
	b.undo.push("usernode down on host A", func() error { return cp.down(context.Background()) })
	// Stops whatever worker the last round left (none, unless it failed
	// or -hold kept it), before A's node goes.
	b.undo.push("usernode down on host B", func() error { return worker.down(context.Background()) })
	logf("usernode up on host A (%s, as %s)", cp.host.ip, cp.acct.name)
	if _, err := cp.usernode(ctx, 6*time.Minute, "up", "-d", "--name", cp.name, "--bin-dir", *binDir, "--host-ip", hostAIP); err != nil {
		return err
	}
	out, err := cp.usernode(ctx, time.Minute, "token", "create", "--name", cp.name)
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) != 7 || f[0] != "usernode" || f[1] != "join" || f[3] != "--token" || f[5] != "--ca-cert-hash" {
		return fmt.Errorf("token create printed %q, not `usernode join SERVER --token T --ca-cert-hash H`", strings.TrimSpace(out))
	}
	b.server, b.token, b.pin = f[2], f[4], f[6]
	b.k = &kube{host: cp.host, bin: filepath.Join(*binDir, "kubectl"), kubeconfig: cp.kubeconfig()}
	var ips [2]string
	for i, p := range []string{podClient, podServerA} {
		if ips[i], err = b.startPod(ctx, p, cp.name); err != nil {
			return err
		}
	}
	if _, err := b.inPod(ctx, podClient, "probe", "-addr", ips[1], "-timeout", "60s"); err != nil {
		return fmt.Errorf("pod to pod on host A's node: %w", err)
	}
	if out, err := b.k.run(ctx, nil, "exec", podClient, "--", "cat", "/sys/class/net/eth0/mtu"); err == nil {
		b.info.podMTU = strings.TrimSpace(out)
	}
	b.scenarios = append(b.scenarios,
		&scenario{name: nameOneNode, server: ips[1], client: b.podClient,
			note: "two busybox pods pinned to A's node: veth, the node's bridge, veth, all inside the node"},
		&scenario{name: nameAcross, client: b.podClient, udp: b.hostsUDP, // its server is set each round
			note: "A's pod → A's node: flannel.1 (VXLAN) → slirp4netns (A's egress) → host B's 198.51.100.2:8472/udp, usernode's forwarder → B's node: flannel.1 → B's pod; replies the same way back through B's slirp4netns and A's forwarder"})
	return nil
}

// startPod starts a pod on node, copies the tool in, and returns its IP.
func (b *bench) startPod(ctx context.Context, name, node string) (string, error) {
	if err := b.k.startPod(ctx, name, node); err != nil {
		return "", err
	}
	ip, err := b.k.podIP(ctx, name)
	if err != nil {
		return "", err
	}
	if err := b.k.install(ctx, name, b.tool); err != nil {
		return "", err
	}
	return ip, nil
}

// inPod runs the tool in a pod.
func (b *bench) inPod(ctx context.Context, pod string, args ...string) (string, error) {
	return b.k.run(ctx, nil, append([]string{"exec", pod, "--", toolPath}, args...)...)
}

func (b *bench) podClient(ctx context.Context, args ...string) (string, error) {
	return b.inPod(ctx, podClient, args...)
}

// round joins B's node, measures everything, and has B's node leave.
func (b *bench) round(ctx context.Context, r int) error {
	jt, ip, err := b.join(ctx)
	if err != nil {
		return fmt.Errorf("round %d: %w", r+1, err)
	}
	logf("round %d: join returned %.1fs, Ready seen on A %.1fs, pod on B Running %.1fs", r+1, jt.returned, jt.ready, jt.pod)
	b.scenario(nameAcross).server = ip
	if _, err := b.inPod(ctx, podClient, "probe", "-addr", ip, "-timeout", "90s"); err != nil {
		return fmt.Errorf("round %d: pod to pod across the hosts: %w", r+1, err)
	}
	b.joins = append(b.joins, jt)
	b.measure(ctx, r)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if *hold && r == *rounds-1 {
		return nil // -hold keeps the worker up too; the teardown stops it
	}
	if err := b.leave(ctx); err != nil {
		return fmt.Errorf("round %d: %w", r+1, err)
	}
	return nil
}

func (b *bench) scenario(name string) *scenario {
	for _, s := range b.scenarios {
		if s.name == name {
			return s
		}
	}
	panic("no scenario " + name)
}

// join runs the join line on host B and times it three ways: to the
// command's return (`join -d` waits for Ready itself), to the control
// plane's watch seeing the Node Ready, and to a pod on B Running. It
// returns that pod's IP, the tool installed in it.
func (b *bench) join(ctx context.Context) (joinTimes, string, error) {
	var jt joinTimes
	w, err := b.k.watchReady(ctx, workerName)
	if err != nil {
		return jt, "", err
	}
	defer w.stop()
	worker := b.worker
	start := time.Now()
	_, err = worker.usernode(ctx, 6*time.Minute, "join", b.server, "--token", b.token, "--ca-cert-hash", b.pin,
		"-d", "--name", worker.name, "--bin-dir", *binDir)
	jt.returned = time.Since(start).Seconds()
	if err != nil {
		return jt, "", err
	}
	select {
	case t := <-w.ready:
		jt.ready = t.Sub(start).Seconds()
	case err := <-w.done:
		return jt, "", err
	case <-time.After(2 * time.Minute):
		return jt, "", errors.New("`usernode join -d` returned, but kubectl on host A did not see the worker Ready within 2 min")
	case <-ctx.Done():
		return jt, "", ctx.Err()
	}
	if err := b.k.startPod(ctx, podServerB, worker.name); err != nil {
		return jt, "", err
	}
	ip, err := b.k.podIP(ctx, podServerB)
	if err != nil {
		return jt, "", err
	}
	jt.pod = time.Since(start).Seconds()
	return jt, ip, b.k.install(ctx, podServerB, b.tool)
}

// leave undoes the join: the pod, the node and its state, and the Node
// object, which would make the next join refuse the name and address.
func (b *bench) leave(ctx context.Context) error {
	if err := b.k.deletePod(ctx, podServerB); err != nil {
		return err
	}
	if err := b.worker.down(ctx); err != nil {
		return err
	}
	_, err := b.k.run(ctx, nil, "delete", "node", workerName, "--ignore-not-found", "--wait=true", "--timeout=90s")
	return err
}

// measure runs every metric against every scenario, one at a time, the
// scenarios' order rotated each round.
func (b *bench) measure(ctx context.Context, r int) {
	for mi, m := range metrics {
		for i := range b.scenarios {
			s := b.scenarios[(i+r)%len(b.scenarios)]
			if ctx.Err() != nil {
				return
			}
			var before udpLoss
			if s.udp != nil {
				before = b.readUDP(ctx, s)
			}
			v, err := b.once(ctx, s, m)
			if err != nil {
				logf("round %d %s %s: %v", r+1, s.name, m.name, err)
			}
			line := fmt.Sprintf("round %d %-42s %-20s %8.2f %s", r+1, s.name, m.name, v, m.unit)
			if s.udp != nil {
				after := b.readUDP(ctx, s)
				l := udpLoss{after.delivered - before.delivered, after.dropped - before.dropped}
				b.udpLoss[mi] = append(b.udpLoss[mi], l)
				line += "; UDP datagrams dropped at the hosts: " + l.String()
			}
			logf("%s", line)
			b.res[s.name][mi] = append(b.res[s.name][mi], v)
		}
	}
}

// readUDP reads the scenario's UDP counters; a failure is logged and
// reads as zero: the counters are a diagnosis, not a result.
func (b *bench) readUDP(ctx context.Context, s *scenario) udpLoss {
	d, x, err := s.udp(ctx)
	if err != nil {
		logf("%s: %v", s.name, err)
	}
	return udpLoss{d, x}
}

// hostsUDP sums both hosts' UDP counters: VXLAN to a host is read there
// by usernode's forwarder from 8472, and replies come back the same way
// to the other host.
func (b *bench) hostsUDP(ctx context.Context) (delivered, dropped int64, err error) {
	for _, h := range []netHost{b.cp.host, b.worker.host} {
		d, x, err := h.udpCounters(ctx)
		if err != nil {
			return 0, 0, err
		}
		delivered, dropped = delivered+d, dropped+x
	}
	return delivered, dropped, nil
}

// once is one measurement; a failed one counts as 0, as in
// bench/netbench, and is logged.
func (b *bench) once(ctx context.Context, s *scenario, m metric) (float64, error) {
	out, err := s.client(ctx, m.mode, "-addr", s.server, "-t", fmt.Sprint(*secs))
	if err != nil {
		return 0, err
	}
	var res result
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return 0, fmt.Errorf("the tool printed %q: %v", out, err)
	}
	return res.Value, nil
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg") // unreadable: reported as empty
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
