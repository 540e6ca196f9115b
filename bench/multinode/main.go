// Command multinode measures usernode's multi-node pod network and join
// on this machine, in one run: TCP throughput and the 1-byte round trip
// between a pod on host A's node and a pod on host B's node (Flannel's
// VXLAN, carried between the hosts through usernode's forwarders), the
// same between two pods on A's node, and, as the bound, the same between
// two network namespaces that root has joined with a VXLAN of its own;
// and the time from `usernode join` to the worker Ready.
//
// The hosts are network namespaces on a bridge, as in the integration
// tests (internal/testutil's TwoHosts); each host's node runs as its own
// non-root account (accounts.sh). Run it as root (`make bench-multinode`):
// root makes the namespaces and the bound's VXLAN and runs kubectl in
// host A's namespace; usernode itself always runs as the accounts.
//
// Each round joins B's node afresh (after `down --purge` and the Node
// deleted), then runs every metric against every scenario in turn
// (interleaved, so drift on the machine hits all alike); the tables show
// medians and ratios against the bound.
//
// The same binary is the measuring tool (tool.go): copied into the pods
// and run in the bound's namespaces, `multinode serve|send|recv|rtt|probe`.
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var (
	rounds      = flag.Int("rounds", 3, "interleaved rounds; each joins host B's node afresh")
	secs        = flag.Float64("t", 3, "seconds per throughput run (and at most per RTT run)")
	binDir      = flag.String("bin-dir", "/opt/usernode-k8s", "Kubernetes binaries, flanneld and kubectl (passed to up and join)")
	usernodeBin = flag.String("usernode", "bin/usernode", "the usernode binary (make build)")
	userA       = flag.String("user-a", "unbench-a", "non-root account that runs host A's node (the control plane)")
	userB       = flag.String("user-b", "unbench-b", "non-root account that runs host B's node (the worker)")
	verbose     = flag.Bool("v", false, "also print usernode's output")
	hold        = flag.Bool("hold", false, "after the report, keep the cluster up until Ctrl-C (to look around), then tear down")
)

// Node names, and the hosts' addresses (internal/testutil's).
const (
	cpName     = "mnb-cp"
	workerName = "mnb-w"
	hostAIP    = "198.51.100.1"
	hostBIP    = "198.51.100.2"
)

func main() {
	if len(os.Args) > 1 {
		if mode, ok := toolModes[os.Args[1]]; ok {
			if err := mode(os.Args[1:]); err != nil {
				fmt.Fprintf(os.Stderr, "multinode %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	flag.Parse()
	start := time.Now()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// The undo stack runs on every way out, Ctrl-C included: the signal
	// only cancels ctx, and stays caught until the teardown is over, so
	// a second Ctrl-C does not cut it short either.
	b := &bench{undo: &undoStack{}}
	err := b.run(ctx)
	if ctx.Err() != nil {
		logf("interrupted: stopping the nodes and removing the namespaces (up to a minute)")
	}
	uerr := b.undo.run()
	cancel()
	if uerr != nil {
		logf("teardown: %v", uerr)
		err = errors.Join(err, errors.New("teardown incomplete (above)"))
	}
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	logf("done in %s", time.Since(start).Round(time.Second))
}

var t0 = time.Now()

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "multinode %6.1fs: %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
}

// undoStack holds what removes each thing the run made, run last first.
type undoStack struct {
	steps []undoStep
}

type undoStep struct {
	what string
	f    func() error
}

func (u *undoStack) push(what string, f func() error) { u.steps = append(u.steps, undoStep{what, f}) }

// run undoes everything, going on past failures, and says what failed.
func (u *undoStack) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.steps[i].what, err))
		}
	}
	u.steps = nil
	return errors.Join(errs...)
}

// preflight refuses to start where the run could not finish or would
// touch what is not its own.
func preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (make bench-multinode): root makes the namespaces and the bound's VXLAN; usernode runs as the -user-a/-user-b accounts")
	}
	if err := static("/proc/self/exe"); err != nil {
		return err
	}
	for _, f := range []string{"kubelet", "kube-apiserver", "kubectl", "flanneld"} {
		if _, err := os.Stat(*binDir + "/" + f); err != nil {
			return fmt.Errorf("no %s in -bin-dir %s: build them with `make k8s K8S_OUTDIR=%s`, or pass -bin-dir", f, *binDir, *binDir)
		}
	}
	if _, err := os.Stat(*usernodeBin); err != nil {
		return fmt.Errorf("%v: run `make build`, or pass -usernode", err)
	}
	if *rounds < 1 || *secs <= 0 {
		return errors.New("-rounds must be at least 1 and -t positive")
	}
	return nil
}

// static checks that the tool can run in a busybox pod, which has no
// dynamic loader.
func static(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("this binary is dynamically linked and cannot run in the pods: build it with CGO_ENABLED=0 (make bench-multinode does)")
		}
	}
	return nil
}

// checkIdle refuses to start while the accounts run anything: an earlier
// run's node still up would hold the ports and the names.
func checkIdle(accts ...*account) error {
	for _, a := range accts {
		if p := a.procs(); len(p) > 0 {
			return fmt.Errorf("account %s already runs processes %v (an earlier run's nodes?): stop them first, e.g. kill %s", a.name, p, strings.Trim(fmt.Sprint(p), "[]"))
		}
	}
	return nil
}

// sweep kills, by PID, whatever of the accounts' outlived `down`.
func sweep(accts ...*account) error {
	var left []string
	for _, a := range accts {
		for _, p := range a.procs() {
			_ = syscall.Kill(p, syscall.SIGKILL) // gone meanwhile is fine
			left = append(left, fmt.Sprintf("%s:%d", a.name, p))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("processes outlived usernode down and were killed: %s", strings.Join(left, " "))
	}
	return nil
}
